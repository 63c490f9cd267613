"""Smoke test of an installed Haske: expected backends, then one echo over Haske's protocol.

Usage: python tests/smoke.py FRAMES CONNECTION PROTOCOL HANDSHAKE BROADCAST
       (e.g. cython cython cython rust rust)
"""

from __future__ import annotations

import asyncio
import sys

import websockets

import haske
from haske.ws import websocket_route


@websocket_route("/echo")
async def echo(ws):  # type: ignore[no-untyped-def]
    await ws.accept()
    async for message in ws:
        await ws.send_text(message if isinstance(message, str) else message.decode())


async def round_trip() -> str:
    import uvicorn

    config = uvicorn.Config(
        haske.Haske(), host="127.0.0.1", port=0, ws="haske.server:WebSocketProtocol", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with websockets.connect(f"ws://127.0.0.1:{port}/echo") as client:
        await client.send("ping")
        reply = await asyncio.wait_for(client.recv(), 5)
    server.should_exit = True
    await serving
    return str(reply)


COMPONENTS = ("frames", "connection", "protocol", "handshake", "broadcast")


def main(expected: list[str]) -> None:
    chosen = haske.backends()
    got = [chosen[c]["backend"] for c in COMPONENTS]
    assert got == expected, f"backends {got}, expected {expected}"
    assert asyncio.run(round_trip()) == "ping"
    print(f"smoke test passed: haske {haske.__version__} from {haske.__file__}")


if __name__ == "__main__":
    main(sys.argv[1:])
