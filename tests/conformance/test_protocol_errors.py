"""How Haske's server fails a connection on a protocol error, on a real uvicorn server.

RFC 6455 §7.1.7 fails the connection; Autobahn's cases 3.2, 4.x.3-5 and 5.15 also expect the
messages that arrived before the error to be answered first. Both hold, and the wait is bounded:
nothing more is read after the error, and an app that never reads again is failed anyway.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from haske._backends import frames
from haske.connection import OP_CLOSE, OP_PING, OP_TEXT
from haske.server import WebSocketProtocol

TIMEOUT = 5
RSV2_TEXT = bytes((0xA1, 0x80)) + b"\x00" * 4  # a text frame with RSV2 set and no payload


class QuickFail(WebSocketProtocol):
    close_timeout = 0.2


class SlowClose(WebSocketProtocol):
    # Longer than the test's TIMEOUT: only closing TCP at once lets the test see EOF in time.
    close_timeout = 30


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


def text(payload: bytes) -> bytes:
    return frames.encode_frame(OP_TEXT, payload, mask=True)


async def everything(reader: asyncio.StreamReader) -> list[Any]:
    """Every frame the server sends until it closes TCP."""
    decoder = frames.FrameDecoder(require_mask=False)
    while data := await asyncio.wait_for(reader.read(65536), TIMEOUT):
        decoder.feed(data)
    return list(decoder)


def close_code(frame: Any) -> int:
    assert frame.opcode == OP_CLOSE
    return int.from_bytes(frame.payload[:2], "big")


def slow_echo_app() -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive_text()
                await asyncio.sleep(0.05)  # still answering when the bad frame arrives
                await websocket.send_text(message)
        except WebSocketDisconnect:
            return

    return Starlette(routes=[WebSocketRoute("/", echo)])


async def test_answers_to_messages_before_the_error_leave_before_the_close(serve: Any) -> None:
    server = serve(slow_echo_app())
    reader, writer = await connect(server.port)
    ping = frames.encode_frame(OP_PING, b"after", mask=True)
    writer.write(text(b"one") + text(b"two") + RSV2_TEXT + ping)
    received = await everything(reader)
    writer.close()
    assert [f.payload for f in received[:2]] == [b"one", b"two"]
    # Nothing after the bad frame is read: the ping gets no pong.
    assert len(received) == 3
    assert close_code(received[2]) == 1002


async def test_message_taken_before_the_error_is_still_answered(serve: Any) -> None:
    """The error arrives while the app works on a message it already took."""
    server = serve(slow_echo_app())
    reader, writer = await connect(server.port)
    writer.write(text(b"first"))
    await asyncio.sleep(0.01)
    writer.write(RSV2_TEXT)
    received = await everything(reader)
    writer.close()
    assert [f.opcode for f in received] == [OP_TEXT, OP_CLOSE]
    assert received[0].payload == b"first"
    assert close_code(received[1]) == 1002


async def test_an_app_that_never_reads_again_is_failed_anyway(serve: Any) -> None:
    release = threading.Event()

    async def stuck(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        while not release.is_set():  # never reads again, until the test is over
            await asyncio.sleep(0.01)

    server = serve(Starlette(routes=[WebSocketRoute("/", stuck)]), ws=QuickFail)
    reader, writer = await connect(server.port)
    writer.write(text(b"taken") + text(b"never taken") + RSV2_TEXT)
    received = await everything(reader)
    writer.close()
    release.set()
    assert len(received) == 1
    assert close_code(received[0]) == 1002


async def test_invalid_utf8_fails_before_the_frame_is_complete(serve: Any) -> None:
    """§8.1 fail fast: the invalid bytes fail the connection, not the end of the frame."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    server = serve(Starlette(routes=[WebSocketRoute("/", echo)]))
    reader, writer = await connect(server.port)
    key = os.urandom(4)
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"x" * 1000
    header = bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big") + key
    masked = frames.apply_mask(payload, key)
    writer.write(header + masked[:15])  # the rest of the frame is never sent
    received = await everything(reader)
    writer.close()
    assert len(received) == 1
    assert close_code(received[0]) == 1007


async def test_a_peer_still_sending_after_the_error_gets_the_close_frame(serve: Any) -> None:
    """The server sends FIN and drops what still arrives, so no reset destroys its close."""

    async def idle(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return

    server = serve(Starlette(routes=[WebSocketRoute("/", idle)]))
    reader, writer = await connect(server.port)
    writer.write(RSV2_TEXT)
    for _ in range(20):
        writer.write(b"\x00" * 4096)
        await asyncio.sleep(0.005)
    received = await everything(reader)
    writer.close()
    assert len(received) == 1
    assert close_code(received[0]) == 1002


async def test_an_app_closing_after_the_error_ends_the_connection(serve: Any) -> None:
    """Its close frame goes out, and TCP closes without waiting for the peer's reply."""

    async def close_after_one(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await asyncio.sleep(0.05)
        await websocket.close(4000)

    server = serve(Starlette(routes=[WebSocketRoute("/", close_after_one)]), ws=SlowClose)
    reader, writer = await connect(server.port)
    writer.write(text(b"one") + RSV2_TEXT)
    received = await everything(reader)
    writer.close()
    assert len(received) == 1
    assert close_code(received[0]) == 4000
