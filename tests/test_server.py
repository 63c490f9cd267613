"""Haske's WebSocket protocol in a real uvicorn server, driven by real clients and raw sockets."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from clients import upgrade
from conformance.app import echo
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as ClientClosed
from websockets.exceptions import InvalidStatus

from haske import _backends
from haske._backends import frames
from haske.connection import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT
from haske.exceptions import ConnectionClosed
from haske.server import WebSocketProtocol

TIMEOUT = 5


def app_of(endpoint: Callable[[WebSocket], Any], path: str = "/ws", **kwargs: Any) -> Starlette:
    return Starlette(routes=[WebSocketRoute(path, endpoint)], **kwargs)


def result_slot() -> concurrent.futures.Future[Any]:
    """Where the app, on the server's thread, reports what it saw."""
    return concurrent.futures.Future()


async def outcome(slot: concurrent.futures.Future[Any]) -> Any:
    return await asyncio.wait_for(asyncio.wrap_future(slot), TIMEOUT)


@contextlib.asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    async with connect(url, **kwargs) as ws:
        yield ws


async def recv(ws: ClientConnection) -> Any:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


class RawClient:
    """A hand-written client: exact bytes out, every frame in, nothing answered automatically."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = frames.FrameDecoder(require_mask=False)

    @classmethod
    async def handshake(
        cls, port: int, path: str = "/ws", headers: dict[str, str] | None = None
    ) -> tuple[RawClient, bytes]:
        """Send an upgrade request; return the client and the response head (and any body)."""
        reader, writer, response = await upgrade(port, path, headers)
        return cls(reader, writer), response

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.writer.write(frames.encode_frame(opcode, payload, fin=fin, mask=True))

    async def frame(self) -> Any:
        """The next frame from the server; ``EOFError`` if the server closed TCP."""
        while (frame := self.decoder.next_frame()) is None:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            if not data:
                raise EOFError
            self.decoder.feed(data)
        return frame

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(65536), TIMEOUT) == b""

    def close(self) -> None:
        self.writer.close()


def received_close(exc: ClientClosed) -> tuple[int, str]:
    """The code and reason of the close frame the client received."""
    assert exc.rcvd is not None
    return exc.rcvd.code, exc.rcvd.reason


def close_code(frame: Any) -> int:
    assert frame.opcode == OP_CLOSE
    return int.from_bytes(frame.payload[:2], "big")


# The scope


async def test_scope_is_complete(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        slot.set_result((dict(websocket.scope), websocket.state.greeting))
        await websocket.accept()
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        yield {"greeting": "hi"}

    server = serve(app_of(endpoint, "/room/{name}", lifespan=lifespan), root_path="/api")
    with pytest.raises(ClientClosed):
        async with client(f"{server.url}/room/a%20b?x=1&y=%C3%A9", subprotocols=["p1", "p2"]) as ws:
            await recv(ws)
    scope, greeting = await outcome(slot)
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/room/a b"
    assert scope["raw_path"] == b"/api/room/a%20b"
    assert scope["query_string"] == b"x=1&y=%C3%A9"
    assert scope["subprotocols"] == ["p1", "p2"]
    headers = dict(scope["headers"])
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"sec-websocket-version"] == b"13"
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert greeting == "hi"
    assert set(scope["extensions"]) == {"websocket.http.response", "haske.websocket"}
    assert isinstance(scope["extensions"]["haske.websocket"], WebSocketProtocol)


# Opening handshake


async def test_accept_with_subprotocol_and_headers(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="p2", headers=[(b"x-room", b"lobby")])
        await websocket.send_text("welcome")
        await websocket.close()

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws", subprotocols=["p1", "p2"]) as ws:
        assert ws.subprotocol == "p2"
        assert ws.response is not None and ws.response.headers["X-Room"] == "lobby"
        assert await recv(ws) == "welcome"


async def test_per_message_deflate_is_declined(serve: Callable[..., Any]) -> None:
    server = serve(app_of(echo))
    async with client(f"{server.url}/ws", compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("not compressed " * 100)
        assert await recv(ws) == "not compressed " * 100


async def test_denial_response(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        response = PlainTextResponse("no entry", status_code=401, headers={"x-why": "token"})
        await websocket.send_denial_response(response)

    server = serve(app_of(endpoint))
    raw, head = await RawClient.handshake(server.port)
    body = await asyncio.wait_for(raw.reader.read(), TIMEOUT)
    raw.close()
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 401 Unauthorized"
    names = [line.split(":")[0].lower() for line in lines[1:] if line]
    assert names.count("content-length") == 1
    assert "x-why: token" in head.decode().lower()
    assert body == b"no entry"


async def test_close_before_accept_is_403(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})
            slot.set_result(await receive())

    server = serve(app)
    with pytest.raises(InvalidStatus) as info:
        async with client(server.url):
            pass
    assert info.value.response.status_code == 403
    assert (await outcome(slot))["code"] == 1006


async def test_app_returning_before_accept_is_500(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        return

    server = serve(app_of(endpoint))
    with pytest.raises(InvalidStatus) as info:
        async with client(f"{server.url}/ws"):
            pass
    assert info.value.response.status_code == 500


async def test_bad_version_is_426_with_supported_version(serve: Callable[..., Any]) -> None:
    server = serve(app_of(echo))
    raw, head = await RawClient.handshake(server.port, headers={"Sec-WebSocket-Version": "8"})
    raw.close()
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nsec-websocket-version: 13\r\n" in head.lower()


async def test_bad_key_is_400(serve: Callable[..., Any]) -> None:
    server = serve(app_of(echo))
    raw, head = await RawClient.handshake(server.port, headers={"Sec-WebSocket-Key": "short"})
    body = await asyncio.wait_for(raw.reader.read(), TIMEOUT)  # then the server hangs up
    raw.close()
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in body


# Messages and close codes


async def test_close_codes_from_the_app(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.close", "code": 1006})
        except ValueError as exc:
            slot.set_result(str(exc))
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})

    server = serve(app)
    async with client(server.url) as ws:
        with pytest.raises(ClientClosed) as info:
            await recv(ws)
    assert received_close(info.value) == (4001, "bye")
    assert "1006" in await outcome(slot)


async def test_close_code_from_the_client_reaches_the_app(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            slot.set_result((message, await receive()))  # asking again cannot hang

    server = serve(app)
    async with client(server.url) as ws:
        await ws.close(4002, "later")
    first, again = await outcome(slot)
    assert first == {"type": "websocket.disconnect", "code": 4002, "reason": "later"}
    assert again == first


async def test_send_after_disconnect_raises_connection_closed(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except ConnectionClosed as exc:
            slot.set_result(exc.code)
        await send({"type": "websocket.close"})  # closing twice is harmless

    server = serve(app)
    async with client(server.url) as ws:
        await ws.close(1001)
    assert await outcome(slot) == 1001


async def test_app_returning_after_accept_closes_1000(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        with pytest.raises(ClientClosed) as info:
            await recv(ws)
    assert received_close(info.value)[0] == 1000


async def test_app_exception_after_accept_closes_1011(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("boom")

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        with pytest.raises(ClientClosed) as info:
            await recv(ws)
    assert received_close(info.value)[0] == 1011


async def test_protocol_error_closes_1002_and_tells_the_app(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        slot.set_result(await websocket.receive())

    server = serve(app_of(endpoint))
    raw, head = await RawClient.handshake(server.port)
    assert head.startswith(b"HTTP/1.1 101 ")
    raw.send(OP_CONTINUATION, b"orphan")
    assert close_code(await raw.frame()) == 1002
    assert await raw.eof()
    raw.close()
    assert (await outcome(slot))["code"] == 1002


async def test_max_size_closes_1009(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        first = await websocket.receive_bytes()
        slot.set_result((first, await websocket.receive()))

    server = serve(app_of(endpoint), ws_max_size=1024)
    async with client(f"{server.url}/ws") as ws:
        await ws.send(b"x" * 1024)
        await ws.send(b"x" * 1025)
        with pytest.raises(ClientClosed) as info:
            await recv(ws)
    assert received_close(info.value)[0] == 1009
    first, disconnect = await outcome(slot)
    assert first == b"x" * 1024
    assert disconnect["code"] == 1009


async def test_max_queue_pauses_reading_until_the_app_catches_up(
    serve: Callable[..., Any],
) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        transport = websocket.scope["extensions"]["haske.websocket"].transport
        for _ in range(500):  # the client sends 50 messages; 4 are enough to pause
            if not transport.is_reading():
                break
            await asyncio.sleep(0.01)
        paused = not transport.is_reading()
        received = [await websocket.receive_text() for _ in range(50)]
        await websocket.send_json(
            {"paused": paused, "received": received, "reading": transport.is_reading()}
        )

    server = serve(app_of(endpoint), ws_max_queue=4)
    async with client(f"{server.url}/ws") as ws:
        for i in range(50):
            await ws.send(str(i))
        report = json.loads(await recv(ws))
    assert report == {"paused": True, "received": [str(i) for i in range(50)], "reading": True}


# Keepalive and shutdown


async def test_keepalive_closes_a_silent_peer_with_1011(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        slot.set_result(await websocket.receive())

    server = serve(app_of(endpoint), ws_ping_interval=0.05, ws_ping_timeout=0.1)
    raw, _ = await RawClient.handshake(server.port)
    ping = await raw.frame()
    assert ping.opcode == OP_PING and len(ping.payload) == 4
    close = await raw.frame()
    assert close_code(close) == 1011
    assert close.payload[2:] == b"keepalive ping timeout"
    assert await raw.eof()
    raw.close()
    assert (await outcome(slot))["code"] == 1011


async def test_keepalive_keeps_an_answering_peer(serve: Callable[..., Any]) -> None:
    server = serve(app_of(echo), ws_ping_interval=0.05, ws_ping_timeout=0.1)
    raw, _ = await RawClient.handshake(server.port)
    for _ in range(4):  # 4 intervals span more than the timeout
        ping = await raw.frame()
        assert ping.opcode == OP_PING
        raw.send(OP_PONG, ping.payload)
    raw.send(OP_TEXT, b"still here")
    while (frame := await raw.frame()).opcode == OP_PING:
        raw.send(OP_PONG, frame.payload)
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"still here")
    raw.close()


async def test_shutdown_closes_1012(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ready")
        slot.set_result(await websocket.receive())

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        assert await recv(ws) == "ready"
        stopping = asyncio.ensure_future(asyncio.to_thread(server.stop))
        with pytest.raises(ClientClosed) as info:
            await recv(ws)
        await asyncio.wait_for(stopping, 15)
    assert received_close(info.value)[0] == 1012
    assert (await outcome(slot))["code"] == 1012


async def test_close_timeout_aborts_a_peer_that_never_answers(serve: Callable[..., Any]) -> None:
    class QuickClose(WebSocketProtocol):
        close_timeout = 0.1

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(1000)

    server = serve(app_of(endpoint), ws=QuickClose)
    raw, _ = await RawClient.handshake(server.port)
    assert close_code(await raw.frame()) == 1000
    assert await raw.eof()  # never answered, yet the server hung up
    raw.close()


# The scope extension


async def test_extension_ping_measures_round_trip(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        rtt = await websocket.scope["extensions"]["haske.websocket"].ping(b"rtt?")
        await websocket.send_text(repr(type(rtt).__name__ == "float" and 0 < rtt < TIMEOUT))

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        assert await recv(ws) == "True"


class CountingTransport:
    """Wraps a transport to count the writes that reach it."""

    def __init__(self, transport: asyncio.Transport, protocol: CountingProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.writes = 0

    def write(self, data: bytes) -> None:
        self._count()
        self._transport.write(data)

    def writelines(self, data: Any) -> None:
        self._count()
        self._transport.writelines(data)

    def _count(self) -> None:
        self.writes += 1
        self._protocol.inside.append(self._protocol.feeding)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingProtocol(WebSocketProtocol):
    """Counts its transport's writes, and notes for each whether ``data_received`` made it."""

    feeding = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inside: list[bool] = []
        super().connection_made(CountingTransport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.feeding = True
        try:
            super().data_received(data)
        finally:
            self.feeding = False


async def test_write_frame_corks_one_loop_turn_into_one_write(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ext = websocket.scope["extensions"]["haske.websocket"]
        await asyncio.sleep(0)
        before = ext.transport.writes
        a, b = frames.encode_frame(OP_TEXT, b"a"), frames.encode_frame(OP_TEXT, b"b")
        taken = [ext.write_frame(a), ext.write_frame(b)]
        await websocket.send_text("c")  # same turn: corked with the broadcast frames
        held = ext.buffered_amount >= len(a) + len(b)
        await asyncio.sleep(0)
        await websocket.send_json(
            {"taken": taken, "held": held, "writes": ext.transport.writes - before}
        )

    server = serve(app_of(endpoint), ws=CountingProtocol)
    async with client(f"{server.url}/ws") as ws:
        assert [await recv(ws) for _ in range(4)] == [
            "a",
            "b",
            "c",
            '{"taken":[true,true],"held":true,"writes":1}',
        ]


async def test_the_answer_to_a_message_leaves_in_one_write_when_the_app_waits_again(
    serve: Callable[..., Any],
) -> None:
    """What the app sends in answer to a message is held until it waits again, then written at
    once, within the callback that brought the message: one write for the whole answer."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ext = websocket.scope["extensions"]["haske.websocket"]
        await websocket.receive_text()
        before = ext.transport.writes
        await websocket.send_text("r1")
        await websocket.send_text("r2")
        await websocket.send_text("r3")
        held = ext.transport.writes - before
        await websocket.receive_text()
        written = ext.transport.writes - before
        inside = ext.inside[-written:]
        await websocket.send_json({"held": held, "written": written, "inside": inside})

    server = serve(app_of(endpoint), ws=CountingProtocol)
    async with client(f"{server.url}/ws") as ws:
        await ws.send("go")
        assert [await recv(ws) for _ in range(3)] == ["r1", "r2", "r3"]
        await ws.send("next")
        assert json.loads(await recv(ws)) == {"held": 0, "written": 1, "inside": [True]}


async def test_write_frame_refuses_past_the_outbound_limit(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ext = websocket.scope["extensions"]["haske.websocket"]
        ext.outbound_limit = 10
        big = frames.encode_frame(OP_TEXT, b"x" * 20)
        taken = ext.write_frame(big)  # nothing was buffered: taken, though over the limit
        refused = ext.write_frame(big)  # the first still waits for this turn's write
        queued = ext.buffered_amount
        ext.outbound_limit = 1024 * 1024
        await websocket.send_text(f"{taken} {refused} {queued}")

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        assert await recv(ws) == "x" * 20
        assert await recv(ws) == "True False 22"


async def test_drop_oldest_discards_queued_frames_of_a_stalled_peer(
    serve: Callable[..., Any],
) -> None:
    size = 64 * 1024
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ext = websocket.scope["extensions"]["haske.websocket"]
        ext.outbound_limit = 256 * 1024 * 1024
        sent = 0
        # The peer does not read: the kernel buffers fill, then the transport's, then ours.
        while ext.buffered_amount - ext.transport.get_write_buffer_size() < 4 * size:
            if sent == 4000:
                slot.set_result((sent, False, 0))  # the transport never pushed back
                return
            ext.write_frame(frames.encode_frame(OP_BINARY, sent.to_bytes(4, "big") * (size // 4)))
            sent += 1
            await asyncio.sleep(0)
        before = ext.buffered_amount
        dropped = ext.drop_oldest(2 * size)
        slot.set_result((sent, dropped, before - ext.buffered_amount))
        await websocket.close()

    server = serve(app_of(endpoint))
    raw, _ = await RawClient.handshake(server.port)
    sent, dropped, freed = await outcome(slot)
    assert dropped and freed >= 2 * size
    numbers = []
    while (frame := await raw.frame()).opcode == OP_BINARY:
        assert len(frame.payload) == size
        numbers.append(int.from_bytes(frame.payload[:4], "big"))
    raw.close()
    assert close_code(frame) == 1000
    assert numbers == sorted(numbers) and len(numbers) < sent
    assert numbers[-1] == sent - 1  # the newest survive


async def test_frame_level_receive_and_send(serve: Callable[..., Any]) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ext = websocket.scope["extensions"]["haske.websocket"]
        while True:
            frame = await ext.receive_frame()
            ext.send_frame(frame)
            if frame.fin:
                break
        await websocket.close()

    server = serve(app_of(endpoint))
    raw, _ = await RawClient.handshake(server.port)
    raw.send(OP_TEXT, b"one ", fin=False)
    raw.send(OP_PING, b"still automatic")
    raw.send(OP_CONTINUATION, b"two ", fin=False)
    raw.send(OP_CONTINUATION, b"three")
    received = [await raw.frame() for _ in range(4)]
    # The pong leaves as soon as the ping is read, maybe before the app echoes "one ".
    assert [(f.opcode, f.payload) for f in received if f.opcode == OP_PONG] == [
        (OP_PONG, b"still automatic")
    ]
    assert [(f.opcode, f.payload, f.fin) for f in received if f.opcode != OP_PONG] == [
        (OP_TEXT, b"one ", False),
        (OP_CONTINUATION, b"two ", False),
        (OP_CONTINUATION, b"three", True),
    ]
    assert close_code(await raw.frame()) == 1000
    raw.close()


async def test_extension_before_accept_and_after_close(serve: Callable[..., Any]) -> None:
    slot = result_slot()

    async def endpoint(websocket: WebSocket) -> None:
        ext = websocket.scope["extensions"]["haske.websocket"]
        seen: list[Any] = []
        try:
            ext.write_frame(b"\x81\x00")
        except RuntimeError:
            seen.append("not accepted")
        await websocket.accept()
        await websocket.receive()
        seen.append(ext.closed)
        try:
            ext.send_frame(frames.Frame(OP_TEXT, b"x"))
        except ConnectionClosed as exc:
            seen.append(exc.code)
        slot.set_result(seen)

    server = serve(app_of(endpoint))
    async with client(f"{server.url}/ws") as ws:
        await ws.close(1000)
    assert await outcome(slot) == ["not accepted", True, 1000]


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.combinations(_backends.available("protocol"), 2))
)
def test_the_protocol_core_twins_have_the_same_public_names(first: str, second: str) -> None:
    def public(cls: type) -> list[str]:
        return sorted(name for name in vars(cls) if not name.startswith("_"))

    one = _backends.load("protocol", first).ProtocolCore
    other = _backends.load("protocol", second).ProtocolCore
    expected = [
        "data_received",
        "loop",
        "max_queue",
        "outbound_limit",
        "receive",
        "send",
        "transport",
        "write_frame",
    ]
    assert public(one) == public(other) == expected


async def test_receive_and_send_can_run_as_tasks(serve: Callable[..., Any]) -> None:
    """Apps may hand ``receive()`` and ``send()`` to ``asyncio.create_task`` or to an anyio task
    group, which take coroutines only, as they can with uvicorn's own protocols."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await asyncio.create_task(receive()))["type"] == "websocket.connect"
        await asyncio.create_task(send({"type": "websocket.accept"}))
        message = await asyncio.create_task(receive())
        await asyncio.create_task(send({"type": "websocket.send", "text": message["text"] + "!"}))
        async with anyio.create_task_group() as group:
            group.start_soon(send, {"type": "websocket.send", "text": "from a task group"})
        received: list[Any] = []

        async def take() -> None:
            received.append(await receive())

        async with anyio.create_task_group() as group:
            group.start_soon(receive)  # the second message, read and dropped
        await take()
        await send({"type": "websocket.send", "text": received[0]["text"]})

    server = serve(app)
    async with client(f"{server.url}/ws") as ws:
        await ws.send("hi")
        assert await recv(ws) == "hi!"
        assert await recv(ws) == "from a task group"
        await ws.send("dropped")
        await ws.send("kept")
        assert await recv(ws) == "kept"


async def test_a_waiting_app_runs_in_the_callback_that_brings_its_message(
    serve: Callable[..., Any],
) -> None:
    """The message's arrival steps the app's task at once, as that task, in its own context."""
    where: contextvars.ContextVar[str] = contextvars.ContextVar("where")

    async def endpoint(websocket: WebSocket) -> None:
        where.set("app")
        await websocket.accept()
        task = asyncio.current_task()
        protocol = websocket.scope["extensions"]["haske.websocket"]
        for _ in range(2):
            text = await websocket.receive_text()
            seen = {
                "text": text,
                "feeding": protocol.feeding,
                "same_task": asyncio.current_task() is task,
                "where": where.get(),
            }
            where.set(text)
            await websocket.send_json(seen)

    server = serve(app_of(endpoint), ws=CountingProtocol)
    async with client(f"{server.url}/ws") as ws:
        await ws.send("a")
        assert json.loads(await recv(ws)) == {
            "text": "a",
            "feeding": True,
            "same_task": True,
            "where": "app",
        }
        await ws.send("b")
        assert json.loads(await recv(ws)) == {
            "text": "b",
            "feeding": True,
            "same_task": True,
            "where": "a",
        }


async def test_a_task_waiting_for_a_frame_runs_in_the_callback_that_brings_it(
    serve: Callable[..., Any],
) -> None:
    """Frame mode steps the waiting task the same way, and its answer leaves in one write."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        protocol = websocket.scope["extensions"]["haske.websocket"]
        frame = await protocol.receive_frame()
        feeding = protocol.feeding
        before = protocol.transport.writes
        await websocket.send_text("one")
        await websocket.send_text("two")
        await protocol.receive_frame()
        written = protocol.transport.writes - before
        await websocket.send_json(
            {
                "payload": bytes(frame.payload).decode(),
                "feeding": feeding,
                "written": written,
                "inside": protocol.inside[-written:],
            }
        )

    server = serve(app_of(endpoint), ws=CountingProtocol)
    async with client(f"{server.url}/ws") as ws:
        await ws.send("frame")
        assert [await recv(ws) for _ in range(2)] == ["one", "two"]
        await ws.send("next")
        assert json.loads(await recv(ws)) == {
            "payload": "frame",
            "feeding": True,
            "written": 1,
            "inside": [True],
        }


async def exclaim(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        await websocket.send_text(await websocket.receive_text() + "!")


class TaskFedProtocol(WebSocketProtocol):
    """Is fed its bytes from inside a task, where no other task may be stepped."""

    def data_received(self, data: bytes) -> None:
        self.loop.create_task(self._feed(data))

    async def _feed(self, data: bytes) -> None:
        super().data_received(data)


class TaskContextFedProtocol(WebSocketProtocol):
    """Is fed its bytes from inside the waiting task's own context, which cannot be entered
    twice: stepping the task from there is refused."""

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        callbacks = waiter._callbacks if waiter is not None else None  # type: ignore[attr-defined]
        if callbacks:
            callbacks[0][1].run(super().data_received, data)
        else:
            super().data_received(data)


@pytest.mark.parametrize(
    "protocol", [TaskFedProtocol, TaskContextFedProtocol], ids=["task", "tasks-context"]
)
async def test_messages_fed_where_the_task_cannot_be_stepped_arrive_on_the_next_turn(
    serve: Callable[..., Any], protocol: type[WebSocketProtocol]
) -> None:
    server = serve(app_of(exclaim), ws=protocol)
    async with client(f"{server.url}/ws") as ws:
        for text in ("a", "b", "c"):
            await ws.send(text)
            assert await recv(ws) == text + "!"


async def test_two_waiting_receives_take_the_messages_in_turn(serve: Callable[..., Any]) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        first = asyncio.create_task(receive())
        await asyncio.sleep(0)
        second = asyncio.create_task(receive())
        await send({"type": "websocket.send", "text": "ready"})
        texts = [(await first)["text"], (await second)["text"]]
        await send({"type": "websocket.send", "text": " ".join(texts)})

    server = serve(app)
    async with client(f"{server.url}/ws") as ws:
        assert await recv(ws) == "ready"
        await ws.send("one")
        await ws.send("two")
        assert await recv(ws) == "one two"
