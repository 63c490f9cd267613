"""Keepalive on Haske's protocol: a peer that stops reading and answering pings is closed, and
leaves the broadcaster and every session, within ping interval + ping timeout."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

import websockets

from haske import Haske
from haske._backends import frames
from haske.ws import LiveSessionManager, WebSocket, WebSocketBroadcaster

TIMEOUT = 5.0
INTERVAL = 0.2
PING_TIMEOUT = 0.2


def keepalive_app(
    broadcaster: WebSocketBroadcaster, managers: list[LiveSessionManager], codes: list[int]
) -> Haske:
    app = Haske()

    @app.websocket("/live/{user}", broadcaster=broadcaster)
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        await broadcaster.subscribe(ws, "room")
        for sessions in managers:
            await sessions.add(ws.path_params["user"], ws)
        await ws.send_text("ready")
        try:
            async for message in ws:  # whatever a member says goes to the whole room
                await broadcaster.broadcast(message, channel="room")
        finally:
            codes.append(ws.close_code or 0)

    return app


def members(broadcaster: WebSocketBroadcaster) -> int:
    return broadcaster.count("room") if "room" in broadcaster.channels() else 0


async def test_a_dead_peer_is_closed_and_leaves_everything_in_time(serve: Any) -> None:
    broadcaster = WebSocketBroadcaster()
    managers = [
        LiveSessionManager(broadcaster, presence_channel="presence"),
        LiveSessionManager(broadcaster),
    ]
    codes: list[int] = []
    server = serve(
        keepalive_app(broadcaster, managers, codes),
        ws_ping_interval=INTERVAL,
        ws_ping_timeout=PING_TIMEOUT,
    )

    # max_queue=None: the live client reads its messages only at the end, yet its connection
    # must go on answering pings meanwhile.
    async with websockets.connect(
        f"{server.url}/live/alive", open_timeout=TIMEOUT, max_queue=None
    ) as alive:
        while await asyncio.wait_for(alive.recv(), TIMEOUT) != "ready":
            pass  # presence events

        # The dead peer: a plain socket that completes the handshake, reads up to "ready", then
        # never reads again nor answers a ping.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /live/dead HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 ")
        await asyncio.wait_for(reader.readuntil(b"\x81\x05ready"), TIMEOUT)
        start = time.monotonic()
        assert len(broadcaster) == 2 and members(broadcaster) == 2
        assert all(len(sessions) == 2 for sessions in managers)

        # Meanwhile the live client chats in the room, so messages keep going to the dead peer.
        sent = 0
        while len(broadcaster) > 1 or any("dead" in sessions for sessions in managers):
            assert time.monotonic() - start < TIMEOUT, "the dead peer was never dropped"
            await alive.send(f"message {sent}")
            sent += 1
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start

        assert PING_TIMEOUT < elapsed < INTERVAL + PING_TIMEOUT + 0.3
        assert members(broadcaster) == 1 and broadcaster.count("presence") == 1
        assert [len(sessions) for sessions in managers] == [1, 1]
        assert all("alive" in sessions for sessions in managers)
        assert broadcaster.stats()["closed"] == 0  # keepalive, not the slow-consumer policy
        # The live client got every message, its own included.
        received: list[str] = []
        while len(received) < sent:
            message = str(await asyncio.wait_for(alive.recv(), TIMEOUT))
            if message.startswith("message"):
                received.append(message)
        assert received == [f"message {i}" for i in range(sent)]

    # What the dead peer would have read: pings, then a 1011 close, then the end of the stream.
    decoder = frames.FrameDecoder(require_mask=False)
    decoder.feed(await asyncio.wait_for(reader.read(), TIMEOUT))
    writer.close()
    received_frames = list(decoder)
    assert frames.OP_PING in {frame.opcode for frame in received_frames}
    close = received_frames[-1]
    assert close.opcode == frames.OP_CLOSE
    assert (int.from_bytes(close.payload[:2], "big"), close.payload[2:]) == (
        1011,
        b"keepalive ping timeout",
    )
    assert 1011 in codes
