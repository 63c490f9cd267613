"""LiveSessionManager: tabs, metadata, targeted sends, presence, join/leave and the grace period,
on Starlette's TestClient; connection churn on real servers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import websockets
from clients import TIMEOUT, receive, recv
from starlette.testclient import TestClient, WebSocketTestSession

from haske.app import Haske
from haske.broadcast import WebSocketBroadcaster
from haske.sessions import LiveSessionManager
from haske.ws import WebSocket


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached in time")


class Events:
    """Join and leave callbacks that record what they saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def join(self, session_id: str, metadata: dict[str, Any]) -> None:
        self.seen.append(("join", session_id, metadata))

    async def leave(self, session_id: str, metadata: dict[str, Any]) -> None:
        self.seen.append(("leave", session_id, metadata))


def live_app(sessions: LiveSessionManager) -> Haske:
    """``/live/{sid}?k=v`` joins session ``sid`` with metadata ``k=v``; ``/other`` does not."""
    app = Haske()

    @app.websocket("/live/{sid}", broadcaster=sessions.broadcaster)
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        await sessions.add(ws.path_params["sid"], ws, **ws.query_params)
        await ws.send_text("ready")
        async for message in ws:
            if message == "leave":
                await sessions.remove(ws.path_params["sid"], ws)
                await ws.send_text("left")

    @app.websocket("/other", broadcaster=sessions.broadcaster)
    async def other(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        async for _ in ws:
            pass

    return app


class Tabs:
    """TestClient WebSocket sessions on one app (one event loop)."""

    def __init__(self, client: TestClient, sessions: LiveSessionManager) -> None:
        self.client = client
        self.sessions = sessions
        self.open: list[WebSocketTestSession] = []

    def connect(self, path: str) -> WebSocketTestSession:
        """Open a tab; presence events it gets before "ready" (its own join) are skipped."""
        tab = self.client.websocket_connect(path)
        tab.__enter__()
        self.open.append(tab)
        while (text := receive(tab)["text"]) != "ready":
            assert text.startswith('{"event":"join"')
        return tab

    def close(self, tab: WebSocketTestSession) -> None:
        self.open.remove(tab)
        tab.__exit__(None, None, None)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return await function(*args, **kwargs)

        return self.client.portal.call(run)

    def close_all(self) -> None:
        for tab in list(self.open):
            self.close(tab)


@pytest.fixture
def events() -> Events:
    return Events()


def make_tabs(broadcast_impl: ModuleType, events: Events, **options: Any) -> Iterator[Tabs]:
    broadcaster = WebSocketBroadcaster(manager=broadcast_impl.BroadcastManager())
    sessions = LiveSessionManager(
        broadcaster, on_join=events.join, on_leave=events.leave, **options
    )
    with TestClient(live_app(sessions)) as client:
        tabs = Tabs(client, sessions)
        yield tabs
        tabs.close_all()


@pytest.fixture
def tabs(broadcast_impl: ModuleType, events: Events) -> Iterator[Tabs]:
    yield from make_tabs(broadcast_impl, events)


@pytest.fixture
def grace_tabs(broadcast_impl: ModuleType, events: Events) -> Iterator[Tabs]:
    yield from make_tabs(broadcast_impl, events, leave_grace=0.5)


@pytest.fixture
def presence_tabs(broadcast_impl: ModuleType, events: Events) -> Iterator[Tabs]:
    yield from make_tabs(broadcast_impl, events, presence_channel="presence")


def test_a_session_has_several_tabs_and_merged_metadata(tabs: Tabs) -> None:
    sessions = tabs.sessions
    ada1 = tabs.connect("/live/ada?name=Ada")
    tabs.connect("/live/ada?color=red")
    tabs.connect("/live/bob?name=Bob")
    assert sessions.presence() == [
        {"session_id": "ada", "metadata": {"name": "Ada", "color": "red"}, "connections": 2},
        {"session_id": "bob", "metadata": {"name": "Bob"}, "connections": 1},
    ]
    assert sessions.get_session_count() == len(sessions) == 2
    assert sessions.get_session_ids() == ["ada", "bob"]
    assert "ada" in sessions and "eve" not in sessions
    assert len(sessions.get("ada").sockets) == 2  # type: ignore[union-attr]
    tabs.close(ada1)
    wait_for(lambda: sessions.presence()[0]["connections"] == 1)
    assert sessions.get_session_ids() == ["ada", "bob"]


def test_send_to_reaches_every_tab_of_one_session_and_keeps_the_kind(tabs: Tabs) -> None:
    sessions = tabs.sessions
    ada_tabs = [tabs.connect("/live/ada"), tabs.connect("/live/ada")]
    bob = tabs.connect("/live/bob")
    assert tabs.call(sessions.send_to, "ada", b"\x00\xff") is True
    assert tabs.call(sessions.broadcast_to_session, "ada", {"kind": "json"}) is True
    assert tabs.call(sessions.send_to, "ada", "text") is True
    assert tabs.call(sessions.send_to, "nobody", "text") is False
    for tab in ada_tabs:
        assert receive(tab) == {"type": "websocket.send", "bytes": b"\x00\xff"}
        assert receive(tab) == {"type": "websocket.send", "text": '{"kind":"json"}'}
        assert receive(tab) == {"type": "websocket.send", "text": "text"}
    assert tabs.call(sessions.send_to, "bob", "only bob") is True
    assert receive(bob)["text"] == "only bob"


def test_broadcast_reaches_session_sockets_only(tabs: Tabs) -> None:
    sessions = tabs.sessions
    ada, bob = tabs.connect("/live/ada"), tabs.connect("/live/bob")
    other = tabs.connect("/other")
    assert len(sessions.broadcaster) == 3
    assert tabs.call(sessions.broadcast, "sessions only") == 2
    assert tabs.call(sessions.broadcast_to_all, b"not ada", exclude="ada") == 1
    assert tabs.call(sessions.broadcaster.broadcast, "everyone") == 3
    assert [receive(ada)["text"], receive(ada)["text"]] == ["sessions only", "everyone"]
    assert receive(bob)["text"] == "sessions only"
    assert receive(bob)["bytes"] == b"not ada"
    assert receive(bob)["text"] == "everyone"
    assert receive(other)["text"] == "everyone"


def test_join_and_leave_fire_once_per_session_and_are_broadcast(
    presence_tabs: Tabs, events: Events
) -> None:
    tabs, sessions = presence_tabs, presence_tabs.sessions
    watcher = tabs.connect("/live/watcher")
    ada1 = tabs.connect("/live/ada?name=Ada")
    ada2 = tabs.connect("/live/ada")
    assert (
        receive(watcher)["text"] == '{"event":"join","session_id":"ada","metadata":{"name":"Ada"}}'
    )
    tabs.close(ada1)
    ada2.send_text("leave")
    assert receive(ada2)["text"] == "left"  # it left the presence channel with the session
    expected_leave = '{"event":"leave","session_id":"ada","metadata":{"name":"Ada"}}'
    assert receive(watcher)["text"] == expected_leave
    assert events.seen == [
        ("join", "watcher", {}),
        ("join", "ada", {"name": "Ada"}),
        ("leave", "ada", {"name": "Ada"}),
    ]
    assert sessions.get_session_ids() == ["watcher"]
    assert sessions.broadcaster.count("presence") == 1
    assert len(sessions.broadcaster) == 2  # ada2 is still open


def test_a_tab_that_reconnects_within_the_grace_period_does_not_flap(
    grace_tabs: Tabs, events: Events
) -> None:
    tabs, sessions = grace_tabs, grace_tabs.sessions
    tabs.close(tabs.connect("/live/ada?v=1"))
    tabs.connect("/live/ada?v=2")  # a reload: back within the grace period
    assert sessions.presence() == [{"session_id": "ada", "metadata": {"v": "2"}, "connections": 1}]
    tabs.close_all()
    assert sessions.get_session_ids() == ["ada"]  # still there during the grace period
    wait_for(lambda: len(sessions) == 0)
    wait_for(lambda: len(events.seen) == 2)
    assert events.seen == [("join", "ada", {"v": "1"}), ("leave", "ada", {"v": "2"})]


def test_remove_ends_a_session_now_without_closing_its_sockets(
    presence_tabs: Tabs, events: Events
) -> None:
    tabs, sessions = presence_tabs, presence_tabs.sessions
    ada = tabs.connect("/live/ada")
    ada_ws = sessions.get("ada").sockets[0]  # type: ignore[union-attr]
    assert tabs.call(sessions.remove_session, "ada") is True
    assert tabs.call(sessions.remove, "ada") is False
    assert events.seen == [("join", "ada", {}), ("leave", "ada", {})]
    assert len(sessions) == 0 and not ada_ws.closed
    assert tabs.call(sessions.broadcaster.broadcast, "still open") == 1
    assert receive(ada)["text"] == "still open"
    assert tabs.call(sessions.add_session, "ada", ada_ws, again="yes") is True
    assert receive(ada)["text"] == '{"event":"join","session_id":"ada","metadata":{"again":"yes"}}'
    assert tabs.call(sessions.remove, "ada", ada_ws) is True
    assert tabs.call(sessions.remove, "ada", ada_ws) is False
    with pytest.raises(TypeError, match="haske WebSocket"):
        tabs.call(sessions.add, "ada", object())
    with pytest.raises(ValueError, match="leave_grace"):
        LiveSessionManager(sessions.broadcaster, leave_grace=-1)


# -- real servers -------------------------------------------------------------------------------


async def vanish(port: int, path: str) -> None:
    """Open a WebSocket on a plain socket, wait for the "ready" frame, then reset the TCP
    connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    await asyncio.wait_for(reader.readuntil(b"\x81\x05ready"), TIMEOUT)  # after presence events
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("ws_impl", ["haske", "websockets", "hypercorn"])
async def test_connection_churn_leaves_the_broadcaster_and_sessions_empty(
    serve: Any, ws_impl: str
) -> None:
    events = Events()
    sessions = LiveSessionManager(
        WebSocketBroadcaster(),
        presence_channel="presence",
        on_join=events.join,
        on_leave=events.leave,
    )
    server = serve(live_app(sessions), ws=ws_impl)

    async def cycle(i: int) -> None:
        path = f"/live/user{i % 37}?tab={i}"
        if i % 10 == 0:
            await vanish(server.port, path)
            return
        # Presence events it never reads must not pause the client's reading (and with it
        # the closing handshake): no max_queue.
        async with websockets.connect(server.url + path, max_queue=None) as client:
            while await recv(client) != "ready":
                pass  # presence events of other users

    cycles = 10_000
    for start in range(0, cycles, 50):
        await asyncio.gather(*(cycle(i) for i in range(start, start + 50)))

    def joins_and_leaves() -> tuple[list[Any], list[Any]]:
        return (
            [e for e in events.seen if e[0] == "join"],
            [e for e in events.seen if e[0] == "leave"],
        )

    # Leave callbacks run in their own tasks, so they may trail the registry by a moment.
    for _ in range(int(TIMEOUT / 0.01)):
        joins, leaves = joins_and_leaves()
        if len(sessions) == 0 and len(sessions.broadcaster) == 0 and len(joins) == len(leaves):
            break
        await asyncio.sleep(0.01)
    assert len(sessions) == 0 and len(sessions.broadcaster) == 0
    assert sessions.broadcaster.count("presence") == 0
    joins, leaves = joins_and_leaves()
    assert len(joins) == len(leaves) >= 37
