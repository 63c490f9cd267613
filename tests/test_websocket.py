"""The socket wrapper: its API on Starlette's TestClient, close semantics and frame access on real
uvicorn servers."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from clients import TIMEOUT, eventually, receive
from starlette.exceptions import WebSocketException
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

from haske._backends import frames
from haske.app import Haske
from haske.broadcast import WebSocketBroadcaster
from haske.ws import ConnectionClosed, NotSupportedError, WebSocket

Handler = Callable[[WebSocket], Awaitable[None]]


def app_with(handler: Handler, path: str = "/t/{name}") -> Haske:
    app = Haske()
    app.add_websocket_handler(path, handler, broadcaster=WebSocketBroadcaster())
    return app


# -- the API, on Starlette's TestClient --------------------------------------------------------


def test_handler_gets_the_wrapper_with_the_request_data() -> None:
    seen: queue.Queue[dict[str, Any]] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        ws.state.visits = 1
        seen.put(
            {
                "type": type(ws),
                "id": ws.connection_id,
                "name": ws.path_params["name"],
                "q": ws.query_params["q"],
                "header": ws.headers["x-token"],
                "client": ws.client,
                "state": ws.state.visits,
                "accepted_before": ws.accepted,
                "closed": ws.closed,
            }
        )
        await ws.accept()
        await ws.send_text("hi")

    with TestClient(app_with(handler)) as client:
        for _ in range(2):
            with client.websocket_connect("/t/room1?q=42", headers={"X-Token": "abc"}) as session:
                assert receive(session)["text"] == "hi"
    first, second = seen.get(timeout=TIMEOUT), seen.get(timeout=TIMEOUT)
    assert first["type"] is WebSocket
    assert (first["name"], first["q"], first["header"], first["state"]) == ("room1", "42", "abc", 1)
    if "client" in inspect.signature(TestClient.__init__).parameters:  # starlette >= 0.4x
        assert first["client"] == ("testclient", 50000)
    else:
        assert first["client"] is None
    assert first["accepted_before"] is False and first["closed"] is False
    assert first["id"] != second["id"]


def test_a_wrapped_starlette_socket_with_its_own_receive_keeps_it() -> None:
    received: list[str] = []

    class Recording(StarletteWebSocket):
        async def receive(self) -> Any:
            message = await super().receive()
            received.append(message["type"])
            return message

    async def endpoint(websocket: StarletteWebSocket) -> None:
        ws = WebSocket(Recording(websocket.scope, websocket._receive, websocket._send))
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    app = Haske(routes=[WebSocketRoute("/own", endpoint)])
    with TestClient(app) as client, client.websocket_connect("/own") as session:
        session.send_text("one")
        assert receive(session)["text"] == "one"
    assert received[:2] == ["websocket.connect", "websocket.receive"]


def test_accept_with_subprotocol_and_headers() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept(subprotocol="chat.v2", headers={"X-Room": "7"})
        await ws.send_text("ok")

    with (
        TestClient(app_with(handler)) as client,
        client.websocket_connect("/t/a", subprotocols=["chat.v1", "chat.v2"]) as session,
    ):
        assert receive(session)["text"] == "ok"
        assert session.accepted_subprotocol == "chat.v2"
        assert (b"x-room", b"7") in session.extra_headers


def test_text_bytes_and_json_round_trip() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send(await ws.receive_text() + "!")
        await ws.send(await ws.receive_bytes() + b"!")
        await ws.send_json({"got": await ws.receive_json()})
        await ws.send_json({"got": await ws.receive_json()}, mode="binary")
        await ws.send_json(["é", 1])

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        session.send_text("hé")
        assert receive(session) == {"type": "websocket.send", "text": "hé!"}
        session.send_bytes(b"\x00\xff")
        assert receive(session) == {"type": "websocket.send", "bytes": b"\x00\xff!"}
        session.send_json({"a": [1, 2]})
        assert receive(session)["text"] == '{"got":{"a":[1,2]}}'
        session.send_json({"b": None}, mode="binary")
        assert receive(session)["bytes"] == b'{"got":{"b":null}}'
        assert receive(session)["text"] == '["é",1]'


def test_iteration_yields_str_and_bytes_until_the_peer_closes() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        messages = [message async for message in ws]
        results.put((messages, ws.closed, ws.close_code))

    with TestClient(app_with(handler)) as client:
        with client.websocket_connect("/t/a") as session:
            assert receive(session)["text"] == "ready"
            session.send_text("a")
            session.send_bytes(b"b")
            session.close(1001)
        assert results.get(timeout=TIMEOUT) == (["a", b"b"], True, 1001)


def test_receive_after_the_peer_closed_raises_connection_closed_every_time() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        for _ in range(2):
            try:
                await ws.receive_text()
            except (WebSocketDisconnect, RuntimeError) as exc:
                results.put(exc)

    with TestClient(app_with(handler)) as client:
        with client.websocket_connect("/t/a") as session:
            assert receive(session)["text"] == "ready"
            session.close(4001, "bye")
        for _ in range(2):
            exc = results.get(timeout=TIMEOUT)
            assert isinstance(exc, ConnectionClosed)
            assert isinstance(exc, WebSocketDisconnect)
            assert (exc.code, exc.reason) == (4001, "bye")


def test_close_is_idempotent_and_sending_after_it_raises_connection_closed() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4002, "done")
        await ws.close()
        await ws.close(1000)
        for send in (ws.send_text("late"), ws.send_bytes(b"late"), ws.send_json({})):
            try:
                await send
            except (WebSocketDisconnect, RuntimeError) as exc:
                results.put(exc)
        try:
            await ws.receive()
        except (WebSocketDisconnect, RuntimeError) as exc:
            results.put(exc)

    with TestClient(app_with(handler)) as client:
        with client.websocket_connect("/t/a") as session:
            assert receive(session) == {"type": "websocket.close", "code": 4002, "reason": "done"}
        for _ in range(4):
            exc = results.get(timeout=TIMEOUT)
            assert type(exc) is ConnectionClosed
            assert (exc.code, exc.reason) == (4002, "done")
            assert "4002" in str(exc)


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [(1006, "", "1006"), (1005, "", "reserved"), (999, "", "999"), (1000, "x" * 124, "123 bytes")],
)
def test_close_rejects_codes_and_reasons_that_cannot_be_sent(
    code: int, reason: str, message: str
) -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.close(code, reason)
        except ValueError as exc:
            results.put(exc)
        await ws.send_text("still open")

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        assert receive(session)["text"] == "still open"
    assert message in str(results.get(timeout=TIMEOUT))


def test_an_exception_in_the_handler_closes_with_1011_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("boom")

    with (
        caplog.at_level(logging.ERROR, logger="haske.ws"),
        TestClient(app_with(handler)) as client,
        client.websocket_connect("/t/a") as session,
    ):
        message = receive(session)
    assert message["type"] == "websocket.close" and message["code"] == 1011
    records = [r for r in caplog.records if r.name == "haske.ws"]
    assert records and records[0].exc_info is not None
    assert "boom" in str(records[0].exc_info[1])


def test_a_websocket_exception_closes_with_its_code() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        raise WebSocketException(4403, "not allowed")

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        message = receive(session)
    assert (message["code"], message["reason"]) == (4403, "not allowed")


def test_a_handler_that_never_accepts_rejects_the_handshake() -> None:
    async def handler(ws: WebSocket) -> None:
        return None

    with (
        TestClient(app_with(handler)) as client,
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/t/a"),
    ):
        pass  # pragma: no cover


def test_receiving_the_wrong_kind_of_message_is_a_clear_error() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        for receive_wrong in (ws.receive_text, ws.receive_bytes, ws.receive_json):
            try:
                await receive_wrong()
            except (TypeError, ValueError) as exc:
                results.put(exc)
        await ws.send_text("done")

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        assert receive(session)["text"] == "ready"
        session.send_bytes(b"\x01")
        session.send_text("x")
        session.send_text("{not json")
        assert receive(session)["text"] == "done"
    text_error, bytes_error, json_error = (results.get(timeout=TIMEOUT) for _ in range(3))
    assert isinstance(text_error, TypeError) and "receive_bytes()" in str(text_error)
    assert isinstance(bytes_error, TypeError) and "receive_text()" in str(bytes_error)
    assert isinstance(json_error, ValueError)


def test_sending_the_wrong_type_is_a_clear_error() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        attempts = (
            ws.send_text(b"bytes"),  # type: ignore[arg-type]
            ws.send_bytes("text"),  # type: ignore[arg-type]
            ws.send(123),  # type: ignore[arg-type]
            ws.send_json({1j: 1}),
            ws.send_json({}, mode="yaml"),
        )
        for attempt in attempts:
            try:
                await attempt
            except (TypeError, ValueError) as exc:
                results.put(type(exc))
        await ws.send_text("done")

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        assert receive(session)["text"] == "done"
    assert [results.get(timeout=TIMEOUT) for _ in range(5)] == [
        TypeError,
        TypeError,
        TypeError,
        TypeError,
        ValueError,
    ]


def test_frame_level_features_need_haskes_protocol() -> None:
    results: queue.Queue[Any] = queue.Queue()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        assert not ws.native
        attempts = (
            ws.ping(),
            ws.pong(),
            ws.receive_frame(),
            ws.send_frame(frames.Frame(frames.OP_TEXT, b"x")),
        )
        for attempt in attempts:
            try:
                await attempt
            except NotSupportedError as exc:
                results.put(str(exc))
        await ws.send_text("done")

    with TestClient(app_with(handler)) as client, client.websocket_connect("/t/a") as session:
        assert receive(session)["text"] == "done"
    messages = [results.get(timeout=TIMEOUT) for _ in range(4)]
    for name, message in zip(("ping", "pong", "receive_frame", "send_frame"), messages):
        assert f"ws.{name}()" in message
        assert "--ws haske.server:WebSocketProtocol" in message and "haske.run" in message


# -- real servers -------------------------------------------------------------------------------


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_a_receive_loop_ends_cleanly_when_the_client_goes_away(
    serve: Any, ws_impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    broadcaster = WebSocketBroadcaster()
    ended: queue.Queue[str] = queue.Queue()
    app = Haske()

    @app.websocket("/echo", broadcaster=broadcaster)
    async def echo(ws: WebSocket) -> None:
        try:
            await ws.accept()
            while True:
                message = await ws.receive_text()
                await ws.send_text(f"echo {message}")
        finally:
            ended.put("ended")

    server = serve(app, ws=ws_impl)
    with caplog.at_level(logging.WARNING):
        async with websockets.connect(server.url + "/echo") as client:
            await client.send("one")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == "echo one"
            assert len(broadcaster) == 1
        assert await asyncio.to_thread(ended.get, timeout=TIMEOUT) == "ended"
        await eventually(lambda: len(broadcaster) == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_sending_after_the_client_went_away_raises_connection_closed(
    serve: Any, ws_impl: str
) -> None:
    results: queue.Queue[Any] = queue.Queue()
    app = Haske()

    @app.websocket("/late", broadcaster=WebSocketBroadcaster())
    async def late(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        for _ in range(500):
            try:
                await ws.send_text("are you there?")
            except (WebSocketDisconnect, RuntimeError) as exc:
                results.put(exc)
                return
            await asyncio.sleep(0.01)

    server = serve(app, ws=ws_impl)
    async with websockets.connect(server.url + "/late") as client:
        await client.send("bye")
    exc = await asyncio.to_thread(results.get, timeout=TIMEOUT)
    assert type(exc) is ConnectionClosed
    assert exc.code == (1000 if ws_impl == "haske" else 1006)


class ExclaimingMiddleware:
    """Wraps ``send``: every text message the app sends gets a "!"."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def exclaiming_send(message: Any) -> None:
            if message["type"] == "websocket.send" and message.get("text") is not None:
                message = {**message, "text": message["text"] + "!"}
            await send(message)

        await self.app(scope, receive, exclaiming_send)


@pytest.mark.parametrize("ws_impl", ["haske", "websockets-sansio", "hypercorn"])
@pytest.mark.parametrize("wrapped", [False, True])
async def test_sends_go_to_haskes_protocol_directly_unless_middleware_wraps_send(
    serve: Any, ws_impl: str, wrapped: bool
) -> None:
    """On Haske's protocol, with nothing but Starlette around ``send``, the wrapper hands its
    messages to the protocol itself; a middleware that wraps ``send`` still sees every one."""
    results: queue.Queue[Any] = queue.Queue()
    app = Haske()

    @app.websocket("/direct")
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        results.put(ws._protocol_send is not None)
        async for message in ws:
            await ws.send(message)
            await ws.send_text("text")
            await ws.send_bytes(b"bytes")
            await ws.send_json({"json": 1})

    server = serve(ExclaimingMiddleware(app) if wrapped else app, ws=ws_impl)
    async with websockets.connect(server.url + "/direct") as client:
        await client.send("hi")
        received = [await asyncio.wait_for(client.recv(), TIMEOUT) for _ in range(4)]
    bang = "!" if wrapped else ""
    assert received == [f"hi{bang}", f"text{bang}", b"bytes", f'{{"json":1}}{bang}']
    direct = await asyncio.to_thread(results.get, timeout=TIMEOUT)
    assert direct is (ws_impl == "haske" and not wrapped)


async def test_ping_pong_and_frames_on_haskes_protocol(serve: Any) -> None:
    results: queue.Queue[Any] = queue.Queue()
    app = Haske()

    @app.websocket("/frames", broadcaster=WebSocketBroadcaster())
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        results.put((ws.native, await ws.ping(b"rtt")))
        await ws.pong(b"heartbeat")
        await ws.send_frame(frames.Frame(frames.OP_TEXT, b"a raw frame"))
        frame = await ws.receive_frame()
        results.put((frame.opcode, bytes(frame.payload)))
        await ws.send_text("bye")

    server = serve(app, ws="haske")
    async with websockets.connect(server.url + "/frames") as client:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "a raw frame"
        await client.send(b"binary from the client")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == "bye"
    native, rtt = await asyncio.to_thread(results.get, timeout=TIMEOUT)
    assert native is True
    assert isinstance(rtt, float) and 0.0 <= rtt < TIMEOUT  # uvloop's clock ticks in ms
    opcode, payload = await asyncio.to_thread(results.get, timeout=TIMEOUT)
    assert (opcode, payload) == (frames.OP_BINARY, b"binary from the client")


async def test_ping_on_another_server_raises_not_supported(serve: Any) -> None:
    app = Haske()

    @app.websocket("/ping", broadcaster=WebSocketBroadcaster())
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.ping()
        except NotSupportedError as exc:
            await ws.send_text(str(exc))

    server = serve(app, ws="websockets")
    async with websockets.connect(server.url + "/ping") as client:
        message = await asyncio.wait_for(client.recv(), TIMEOUT)
    assert "ws.ping() needs Haske's WebSocket protocol" in message


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_a_receive_that_times_out_loses_no_message(serve: Any, ws_impl: str) -> None:
    app = Haske()

    @app.websocket("/patient", broadcaster=WebSocketBroadcaster())
    async def patient(ws: WebSocket) -> None:
        await ws.accept()
        received: list[str] = []
        timeouts = 0
        while len(received) < 20:
            try:
                received.append(await asyncio.wait_for(ws.receive_text(), 0.005))
            except asyncio.TimeoutError:
                timeouts += 1
        await ws.send_json({"received": received, "timed out": timeouts > 0})

    server = serve(app, ws=ws_impl)
    async with websockets.connect(server.url + "/patient") as client:
        for n in range(20):
            await client.send(str(n))
            await asyncio.sleep(0.002 * (n % 5))
        reply = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
    assert reply == {"received": [str(n) for n in range(20)], "timed out": True}


async def test_concurrent_receivers_each_get_distinct_messages(serve: Any) -> None:
    # Haske's protocol hands each message to one waiting receiver (uvicorn's websockets
    # protocol refuses a second concurrent receive).
    app = Haske()

    @app.websocket("/shared", broadcaster=WebSocketBroadcaster())
    async def shared(ws: WebSocket) -> None:
        await ws.accept()

        async def take(count: int) -> list[str]:
            return [await ws.receive_text() for _ in range(count)]

        first, second = await asyncio.gather(take(10), take(10))
        await ws.send_json(sorted(first + second, key=int))

    server = serve(app, ws="haske")
    async with websockets.connect(server.url + "/shared") as client:
        for n in range(20):
            await client.send(str(n))
        reply = json.loads(await asyncio.wait_for(client.recv(), TIMEOUT))
    assert reply == [str(n) for n in range(20)]
