"""The WebSockets guide, made true: its examples verbatim, on Starlette's TestClient and on real
uvicorn servers (Haske's protocol and uvicorn's ``websockets`` protocol)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import websockets
from clients import eventually, receive, recv
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

from haske import _backends
from haske.app import Haske
from haske.sessions import LiveSessionManager
from haske.ws import (
    NotSupportedError,
    WebSocket,
    is_websocket_upgrade,
    validate_websocket_request,
    websocket_handshake,
)

# isort: split
# -- "Defining a WebSocket route", verbatim ------------------------------------------------------

from haske.ws import websocket_route


@websocket_route("/ws")
async def chat_socket(ws):
    await ws.accept()
    await ws.send_text("Welcome to Haske Chat!")
    while True:
        message = await ws.receive_text()
        await ws.send_text(f"You said: {message}")


# -- the rest of the app the guide describes: HTTP and WebSocket routes on one instance -----------

app = Haske()
sessions = LiveSessionManager()


@app.route("/guide/posts", methods=["POST"])
async def new_post(request: Request) -> Response:
    # "Broadcasting messages", verbatim:
    from haske.ws import get_broadcaster

    broadcaster = get_broadcaster()
    await broadcaster.create_channel("notifications")
    await broadcaster.broadcast({"event": "new_post"}, channel="notifications")
    return JSONResponse({"subscribers": broadcaster.count("notifications")})


@app.route("/guide/announce", methods=["POST"])
async def announce(request: Request) -> Response:
    from haske.ws import get_broadcaster

    text = (await request.body()).decode()
    return JSONResponse({"delivered": await get_broadcaster().broadcast(text)})


@app.websocket("/guide/notifications")
async def notifications(ws: WebSocket) -> None:
    from haske.ws import get_broadcaster

    await ws.accept()
    await get_broadcaster().subscribe(ws, "notifications")
    await ws.send_text("subscribed")
    async for _ in ws:
        pass


@app.websocket("/guide/session/{session_id}")
async def session_socket(ws: WebSocket) -> None:
    await ws.accept()
    await sessions.add_session(ws.path_params["session_id"], ws)
    await ws.send_text("joined")
    async for _ in ws:
        pass


@app.route("/guide/session/{session_id}", methods=["POST"])
async def push(request: Request) -> Response:
    body = await request.json()
    if body["to"] == "*":
        return JSONResponse({"sent": await sessions.broadcast_to_all(body["message"])})
    return JSONResponse({"sent": await sessions.broadcast_to_session(body["to"], body["message"])})


@app.route("/guide/sessions")
async def session_ids(request: Request) -> Response:
    return JSONResponse({"ids": sessions.get_session_ids(), "count": sessions.get_session_count()})


@app.route("/guide/upgrade")
async def upgrade_check(request: Request) -> Response:
    validation = validate_websocket_request(request.headers, request.method)
    return JSONResponse(
        {
            "upgrade": is_websocket_upgrade(request.headers),
            "ok": bool(validation),
            "status": validation.status,
            "accept": validation.accept if validation else None,
        }
    )


@app.websocket("/guide/helpers")
async def helpers(ws: WebSocket) -> None:
    await ws.accept()
    data = await ws.receive_json()
    await ws.send_json({"echo": data})
    try:
        rtt = await ws.ping()
        await ws.pong()
        await ws.send_frame(_backends.frames.Frame(_backends.frames.OP_TEXT, b"raw frame"))
        frame = await ws.receive_frame()
        await ws.send_json({"rtt": rtt >= 0, "frame": bytes(frame.payload).decode()})
    except NotSupportedError as exc:
        await ws.send_json({"not_supported": str(exc)})


# -- tests ----------------------------------------------------------------------------------------


def test_the_chat_socket_on_the_test_client(caplog: pytest.LogCaptureFixture) -> None:
    from haske.ws import get_broadcaster

    tracked = len(get_broadcaster())
    with (
        caplog.at_level(logging.WARNING),
        TestClient(app) as client,
        client.websocket_connect("/ws") as session,
    ):
        assert receive(session)["text"] == "Welcome to Haske Chat!"
        session.send_text("hello")
        assert receive(session)["text"] == "You said: hello"
        assert len(get_broadcaster()) == tracked + 1
    assert len(get_broadcaster()) == tracked
    assert not caplog.records, caplog.text


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_the_chat_socket_on_real_servers_ends_cleanly_when_the_client_leaves(
    serve: Any, ws_impl: str, caplog: pytest.LogCaptureFixture
) -> None:
    from haske.ws import get_broadcaster

    tracked = len(get_broadcaster())
    server = serve(app, ws=ws_impl)
    with caplog.at_level(logging.WARNING):
        async with websockets.connect(server.url + "/ws") as client:
            assert await recv(client) == "Welcome to Haske Chat!"
            await client.send("hello")
            assert await recv(client) == "You said: hello"
            # "automatically tracks connections in the global broadcaster"
            async with httpx.AsyncClient() as http:
                reply = await http.post(server.http_url + "/guide/announce", content="to everyone")
            assert reply.json() == {"delivered": tracked + 1}
            assert await recv(client) == "to everyone"
        await eventually(lambda: len(get_broadcaster()) == tracked)
    assert not [r for r in caplog.records if r.name.startswith("haske")], caplog.text


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_broadcasting_to_the_notifications_channel(serve: Any, ws_impl: str) -> None:
    server = serve(app, ws=ws_impl)
    subscribers = [await websockets.connect(server.url + "/guide/notifications") for _ in range(3)]
    chat = await websockets.connect(server.url + "/ws")
    try:
        for subscriber in subscribers:
            assert await recv(subscriber) == "subscribed"
        assert await recv(chat) == "Welcome to Haske Chat!"
        async with httpx.AsyncClient() as http:
            reply = await http.post(server.http_url + "/guide/posts")
        assert reply.json() == {"subscribers": 3}
        for subscriber in subscribers:
            assert await recv(subscriber) == '{"event":"new_post"}'
        await chat.send("still here")  # the chat socket is not in the channel
        assert await recv(chat) == "You said: still here"
    finally:
        for client in (*subscribers, chat):
            await client.close()


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_live_sessions_targeted_and_to_everyone(serve: Any, ws_impl: str) -> None:
    server = serve(app, ws=ws_impl)
    ada = await websockets.connect(server.url + "/guide/session/ada")
    bob = await websockets.connect(server.url + "/guide/session/bob")
    other = await websockets.connect(server.url + "/ws")
    try:
        for client in (ada, bob):
            assert await recv(client) == "joined"
        assert await recv(other) == "Welcome to Haske Chat!"
        async with httpx.AsyncClient() as http:
            ids = (await http.get(server.http_url + "/guide/sessions")).json()
            assert ids == {"ids": ["ada", "bob"], "count": 2}
            url = server.http_url + "/guide/session/x"
            sent = await http.post(url, json={"to": "ada", "message": {"for": "ada"}})
            assert sent.json() == {"sent": True}
            sent = await http.post(url, json={"to": "*", "message": "for every session"})
            assert sent.json() == {"sent": 2}
        assert await recv(ada) == '{"for":"ada"}'
        for client in (ada, bob):
            assert await recv(client) == "for every session"
        await other.send("not a session")
        assert await recv(other) == "You said: not a session"
    finally:
        for client in (ada, bob, other):
            await client.close()
    await eventually(lambda: sessions.get_session_count() == 0)
    assert sessions.get_session_ids() == []


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_the_wrapper_helpers(serve: Any, ws_impl: str) -> None:
    server = serve(app, ws=ws_impl)
    async with websockets.connect(server.url + "/guide/helpers") as client:
        await client.send('{"hello": ["json"]}')
        assert await recv(client) == '{"echo":{"hello":["json"]}}'
        if ws_impl == "haske":
            assert await recv(client) == "raw frame"
            await client.send("frame from the client")
            assert await recv(client) == '{"rtt":true,"frame":"frame from the client"}'
        else:
            reply = await recv(client)
            assert "not_supported" in reply and "haske.server:WebSocketProtocol" in reply


def test_the_decorator_registers_a_websocket_route() -> None:
    assert isinstance(chat_socket, WebSocketRoute)
    assert chat_socket.path == "/ws"


def test_broadcasting_uses_the_selected_manager() -> None:
    from haske.ws import get_broadcaster

    assert type(get_broadcaster()._manager) is _backends.broadcast.BroadcastManager


def test_the_handshake_utilities_use_the_selected_implementation() -> None:
    from haske import ws

    assert ws._handshake is _backends.handshake


def test_websocket_handshake_computes_the_accept_header() -> None:
    # RFC 6455 §1.3's example.
    assert websocket_handshake("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


GOOD = {
    "Host": "example.com",
    "Upgrade": "WebSocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.mark.parametrize(
    "headers",
    [
        GOOD,
        {name.lower(): value for name, value in GOOD.items()},
        list(GOOD.items()),
        [(name.upper().encode(), value.encode()) for name, value in GOOD.items()],
        Headers(GOOD),
    ],
    ids=["dict", "lowercase", "pairs", "bytes", "starlette"],
)
def test_upgrade_utilities_accept_every_kind_of_headers(headers: Any) -> None:
    assert is_websocket_upgrade(headers) is True
    validation = validate_websocket_request(headers)
    assert validation and validation.status == 101
    assert validation.accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("change", "upgrade", "status"),
    [
        ({"Upgrade": "h2c"}, False, 400),
        ({"Connection": "keep-alive"}, False, 400),
        ({"Connection": "not-upgrade"}, False, 400),
        ({"Sec-WebSocket-Key": "short"}, True, 400),
        ({"Sec-WebSocket-Version": "8"}, True, 426),
    ],
)
def test_upgrade_utilities_report_why_a_request_is_refused(
    change: dict[str, str], upgrade: bool, status: int
) -> None:
    headers = {**GOOD, **change}
    assert is_websocket_upgrade(headers) is upgrade
    validation = validate_websocket_request(headers)
    assert not validation
    assert validation.status == status and validation.reason
    assert not validate_websocket_request(GOOD, method="POST")
    with pytest.raises(TypeError, match="str or bytes"):
        is_websocket_upgrade({"Upgrade": 1})


def test_upgrade_utilities_on_a_real_request() -> None:
    with TestClient(app) as client:
        plain = client.get("/guide/upgrade").json()
        upgrade = client.get("/guide/upgrade", headers={**GOOD, "Host": "testserver"}).json()
    assert plain == {"upgrade": False, "ok": False, "status": 400, "accept": None}
    assert upgrade == {
        "upgrade": True,
        "ok": True,
        "status": 101,
        "accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    }
