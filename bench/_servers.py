"""Echo servers for the benchmarks, each run in its own process.

``python bench/_servers.py KIND PORT [CPU]`` serves WebSocket echo on 127.0.0.1:PORT (any path),
pinned to CPU when given. Every asyncio server runs on uvloop; uvicorn also uses httptools.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

UVICORN_WS = {
    "haske": "haske.server:WebSocketProtocol",
    "haske-app": "haske.server:WebSocketProtocol",
    "uvicorn-websockets": "websockets",
    "uvicorn-websockets-sansio": "websockets-sansio",
    "uvicorn-wsproto": "wsproto",
}
KINDS = [*UVICORN_WS, "websockets", "aiohttp", "picows"]


def starlette_echo() -> Any:
    """The same Starlette echo endpoint for every uvicorn WebSocket implementation."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])

    return Starlette(routes=[WebSocketRoute("/{path:path}", echo)])


def haske_echo() -> Any:
    """The same endpoint written with Haske's own route and socket wrapper (``haske-app``)."""
    from haske import Haske
    from haske.ws import WebSocket

    app = Haske()

    @app.websocket("/{path:path}")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    return app


def run_uvicorn(kind: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        haske_echo() if kind == "haske-app" else starlette_echo(),
        host="127.0.0.1",
        port=port,
        ws=UVICORN_WS[kind],
        loop="uvloop",
        http="httptools",
        log_level="warning",
        ws_max_size=64 * 1024 * 1024,
    )


async def serve_websockets(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, max_size=None, compression=None):
        await asyncio.Future()


async def serve_aiohttp(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/{path:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Future()


async def serve_picows(port: int) -> None:
    import picows

    class Echo(picows.WSListener):
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type in (picows.WSMsgType.TEXT, picows.WSMsgType.BINARY):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await picows.ws_create_server(
        lambda request: Echo(), "127.0.0.1", port, max_frame_size=64 * 1024 * 1024
    )
    async with server:
        await server.serve_forever()


def serve(kind: str, port: int) -> None:
    if kind in UVICORN_WS:
        run_uvicorn(kind, port)
        return
    import uvloop

    runner = {"websockets": serve_websockets, "aiohttp": serve_aiohttp, "picows": serve_picows}
    uvloop.run(runner[kind](port))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(kind: str, cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server process and wait until it accepts connections."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    args = [sys.executable, __file__, kind, str(port)] + ([] if cpu is None else [str(cpu)])
    process = subprocess.Popen(args, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    if len(sys.argv) > 3:
        os.sched_setaffinity(0, {int(sys.argv[3])})
    serve(sys.argv[1], int(sys.argv[2]))
