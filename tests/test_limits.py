"""Every limit has a default in haske.limits and is enforced on a real server: frame size,
handshake timeout, idle timeout and connections per server (message size, queued messages,
outbound bytes and channels per connection are in test_server.py and test_broadcast.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.exceptions import InvalidStatus

import haske
from haske import limits
from haske._backends import frames
from haske.app import Haske
from haske.broadcast import WebSocketBroadcaster
from haske.connection import Connection
from haske.server import H11Protocol, HttpProtocol, WebSocketProtocol
from haske.ws import WebSocket as HaskeWebSocket

TIMEOUT = 5.0


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[WebSocketRoute("/ws", echo), Route("/", hello)])


def test_the_defaults_are_the_documented_ones(handshake_impl: ModuleType) -> None:
    config = uvicorn.Config(APP)
    assert limits.MAX_MESSAGE_SIZE == config.ws_max_size == 16 * 1024 * 1024
    assert limits.MAX_QUEUE == config.ws_max_queue == 32
    assert limits.PING_INTERVAL == config.ws_ping_interval == 20.0
    assert limits.PING_TIMEOUT == config.ws_ping_timeout == 20.0
    assert Connection().max_message_size == limits.MAX_MESSAGE_SIZE
    broadcaster = WebSocketBroadcaster()
    assert broadcaster.max_channels_per_connection == limits.MAX_CHANNELS_PER_CONNECTION == 100
    assert handshake_impl.MAX_REQUEST_HEAD == limits.MAX_REQUEST_HEAD == 16384
    assert handshake_impl.MAX_HEADERS == limits.MAX_HEADERS == 100
    assert WebSocketProtocol.default_outbound_limit == limits.OUTBOUND_LIMIT == 1024 * 1024
    assert WebSocketProtocol.close_timeout == limits.CLOSE_TIMEOUT == 5.0
    # The HASKE_* variables are not set where the suite runs.
    assert WebSocketProtocol.max_frame_size is None
    assert WebSocketProtocol.idle_timeout is None
    assert WebSocketProtocol.max_connections == 10_000
    assert HttpProtocol.handshake_timeout == H11Protocol.handshake_timeout == 5.0


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    read = limits.from_environment
    monkeypatch.delenv("HASKE_TEST", raising=False)
    assert read("HASKE_TEST", 7, int) == 7
    for off in ("0", "none", "OFF"):
        monkeypatch.setenv("HASKE_TEST", off)
        assert read("HASKE_TEST", 7, int) is None
    monkeypatch.setenv("HASKE_TEST", " 2.5 ")
    assert read("HASKE_TEST", None, float) == 2.5
    for wrong in ("-1", "2.5", "many", "inf"):
        monkeypatch.setenv("HASKE_TEST", wrong)
        with pytest.raises(ValueError, match="HASKE_TEST must be a positive number"):
            read("HASKE_TEST", None, int if wrong == "2.5" else float)


def test_run_sets_the_protocols_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    for name in ("max_frame_size", "idle_timeout", "max_connections"):
        monkeypatch.setattr(WebSocketProtocol, name, getattr(WebSocketProtocol, name))
    monkeypatch.setattr(HttpProtocol, "handshake_timeout", HttpProtocol.handshake_timeout)
    for variable in limits.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)

    haske.run(APP, max_frame_size=65536, idle_timeout=30, max_connections=None, port=9)
    assert (seen["ws"], seen["http"], seen["port"]) == (WebSocketProtocol, HttpProtocol, 9)
    assert WebSocketProtocol.max_frame_size == 65536 and WebSocketProtocol.idle_timeout == 30
    assert WebSocketProtocol.max_connections is None
    assert HttpProtocol.handshake_timeout == 5.0  # not given: unchanged
    # Worker processes import haske afresh: they read the same values from the environment.
    assert os.environ["HASKE_WS_MAX_FRAME_SIZE"] == "65536"
    assert os.environ["HASKE_WS_IDLE_TIMEOUT"] == "30"
    assert os.environ["HASKE_MAX_CONNECTIONS"] == "none"
    assert "HASKE_HANDSHAKE_TIMEOUT" not in os.environ
    with pytest.raises(ValueError, match="max_connections must be a positive int"):
        haske.run(APP, max_connections=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout must be a positive number"):
        haske.run(APP, idle_timeout=0)


# Frame size


class SmallFrames(WebSocketProtocol):
    max_frame_size = 1024


async def raw_websocket(port: int, path: str = "/ws") -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def next_frame(reader: asyncio.StreamReader, decoder: Any) -> Any:
    while (frame := decoder.next_frame()) is None:
        data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert data, "the server closed TCP"
        decoder.feed(data)
    return frame


async def test_a_frame_over_max_frame_size_closes_1009_from_its_header(serve: Any) -> None:
    server = serve(APP, ws=SmallFrames, ws_max_size=4096)
    reader, writer = await raw_websocket(server.port)
    decoder = frames.FrameDecoder(require_mask=False)
    # A 3000-byte message in frames of 1000 fits both limits.
    for index in range(3):
        opcode = frames.OP_TEXT if index == 0 else frames.OP_CONTINUATION
        writer.write(frames.encode_frame(opcode, b"a" * 1000, fin=index == 2, mask=True))
    reply = await next_frame(reader, decoder)
    assert reply.payload == b"a" * 3000
    # The header alone announces too much (FIN text, masked, 16-bit length 1025): no payload.
    writer.write(bytes([0x81, 0x80 | 126]) + (1025).to_bytes(2, "big") + b"mask")
    close = await next_frame(reader, decoder)
    assert close.opcode == frames.OP_CLOSE
    assert int.from_bytes(close.payload[:2], "big") == 1009
    writer.close()


# Handshake timeout


class QuickHead(HttpProtocol):  # type: ignore[valid-type,misc]
    handshake_timeout = 0.3


class QuickHeadH11(H11Protocol):
    handshake_timeout = 0.3


async def lifetime(port: int, trickle: bool) -> float:
    """Seconds from connecting until the server hangs up, sending nothing or a head that never
    ends (a header line every 50 ms)."""
    start = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    if trickle:
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        while not reader.at_eof() and time.monotonic() - start < TIMEOUT:
            if trickle:
                writer.write(b"X-Slow: 1\r\n")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(65536), 0.05)
    except ConnectionError:
        pass  # the server closed while we were still writing
    finally:
        writer.close()
    return time.monotonic() - start


@pytest.mark.parametrize("http", [QuickHead, QuickHeadH11], ids=["httptools", "h11"])
async def test_a_request_head_that_never_completes_is_dropped(serve: Any, http: type) -> None:
    server = serve(APP, ws=WebSocketProtocol, http=http)
    silent, trickling = await asyncio.gather(
        lifetime(server.port, False), lifetime(server.port, True)
    )
    assert 0.25 < silent < 1.5 and 0.25 < trickling < 1.5

    # A complete head stops the timer: the request is served and a WebSocket stays open.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"hello"), TIMEOUT)).startswith(b"HTTP/1.1 200")
    writer.close()
    async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=TIMEOUT) as ws:
        await asyncio.sleep(0.5)
        await ws.send("still open")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still open"


# Idle timeout


class Idle(WebSocketProtocol):
    idle_timeout = 0.4


async def test_idle_connections_close_with_1001_and_pings_do_not_count(serve: Any) -> None:
    # Keepalive pings every 50 ms, each answered: traffic, but no message.
    server = serve(APP, ws=Idle, ws_ping_interval=0.05, ws_ping_timeout=1)
    async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=TIMEOUT) as ws:
        start = time.monotonic()
        for _ in range(8):  # 0.8 s of chatting, twice the idle timeout
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hi"
            await asyncio.sleep(0.1)
        chatted = time.monotonic()
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        quiet = time.monotonic() - chatted
    assert chatted - start > 0.8
    assert 0.35 < quiet < 0.4 * 1.25 + 0.3
    assert ws.close_code == 1001 and ws.close_reason == "idle"


async def test_a_connection_that_only_receives_broadcasts_is_not_idle(serve: Any) -> None:
    broadcaster = WebSocketBroadcaster()
    app = Haske()

    @app.websocket("/listen", broadcaster=broadcaster)
    async def listen(ws: HaskeWebSocket) -> None:
        await ws.accept()
        async for message in ws:
            for seq in range(8):  # 0.8 s of broadcasts, twice the idle timeout
                await broadcaster.broadcast(f"{message} {seq}")
                await asyncio.sleep(0.1)

    server = serve(app, ws=Idle)
    async with connect(f"ws://127.0.0.1:{server.port}/listen", open_timeout=TIMEOUT) as ws:
        await ws.send("news")
        for seq in range(8):
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"news {seq}"
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code == 1001 and ws.close_reason == "idle"


# Connections per server


class TwoConnections(WebSocketProtocol):
    max_connections = 2


async def test_connections_past_the_limit_get_503_before_the_app_runs(serve: Any) -> None:
    calls: list[str] = []

    async def counted(websocket: WebSocket) -> None:
        calls.append(websocket.url.path)
        await echo(websocket)

    server = serve(Starlette(routes=[WebSocketRoute("/ws", counted)]), ws=TwoConnections)
    url = f"ws://127.0.0.1:{server.port}/ws"
    first = await connect(url, open_timeout=TIMEOUT)
    second = await connect(url, open_timeout=TIMEOUT)
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 503
    assert refused.value.response.body == b"too many connections"
    assert len(calls) == 2
    await first.close()
    # The slot is free once the server saw the connection go.
    for _ in range(100):
        try:
            third = await connect(url, open_timeout=TIMEOUT)
            break
        except InvalidStatus:
            await asyncio.sleep(0.02)
    await third.send("in")
    assert await asyncio.wait_for(third.recv(), TIMEOUT) == "in"
    await second.close()
    await third.close()
    assert len(calls) == 3


def test_the_configuration_reference_names_every_setting() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for name, variable in limits.ENVIRONMENT.items():
        assert f"haske.run({name}=)" in text and variable in text
    for flag in ("--ws-max-size", "--ws-max-queue", "--ws-ping-interval", "--ws-ping-timeout"):
        assert flag in text
    for setting in ("outbound_limit", "max_channels_per_connection", "close_timeout"):
        assert setting in text
