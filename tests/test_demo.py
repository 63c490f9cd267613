"""The demo app (examples/demo.py) and the echo example, through real servers and clients."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.sync.client import connect as connect_sync

import haske

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 5.0
METRIC_KEYS = {
    "event",
    "connections",
    "users",
    "rooms",
    "messages_per_second",
    "deliveries_per_second",
    "dropped",
    "uptime",
    "backends",
}

Serve = Callable[..., Any]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` afresh (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_example("demo")


@contextlib.asynccontextmanager
async def connect(server: Any, path: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(server.url + path, open_timeout=TIMEOUT, close_timeout=2) as ws:
        yield ws


async def receive(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next JSON message, failing instead of hanging."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def receive_event(ws: ClientConnection, event: str) -> dict[str, Any]:
    """The next message of this kind, skipping others."""
    while (message := await receive(ws))["event"] != event:
        pass
    return message


@contextlib.asynccontextmanager
async def join(
    server: Any, room: str, nick: str
) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """Join a chat room; yields the socket and the welcome."""
    async with connect(server, f"/ws/chat/{room}?nick={nick}") as ws:
        yield ws, await receive_event(ws, "welcome")


def presence_event(event: str, nick: str) -> dict[str, Any]:
    return {"event": event, "session_id": nick, "metadata": {}}


@pytest.mark.parametrize("ws_impl", ["haske", "websockets-sansio"])
async def test_chat_join_talk_and_leave(serve: Serve, ws_impl: str) -> None:
    server = serve(demo.create_app(leave_grace=0), ws=ws_impl)

    async with connect(server, "/ws/chat/lobby?nick=Ana") as ana:
        # A newcomer is on the room's channel before its join is announced, so it hears it too.
        assert await receive(ana) == presence_event("join", "Ana")
        welcome = await receive(ana)
        assert welcome == {
            "event": "welcome",
            "room": "lobby",
            "nick": "Ana",
            "presence": ["Ana"],
            "history": [],
        }

        async with join(server, "lobby", "Ben") as (ben, ben_welcome):
            assert ben_welcome["presence"] == ["Ana", "Ben"]
            assert await receive(ana) == presence_event("join", "Ben")

            await ben.send("  hello Ana  ")
            for ws in (ana, ben):
                message = await receive(ws)
                assert message["event"] == "message"
                assert (message["nick"], message["text"]) == ("Ben", "hello Ana")
                assert abs(message["ts"] - time.time()) < 60

            await ana.send("<b>hi</b> Ben")
            assert (await receive(ben))["text"] == "<b>hi</b> Ben"
            assert (await receive(ana))["text"] == "<b>hi</b> Ben"

            async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
                assert (await http.get("/api/rooms")).json() == {"lobby": ["Ana", "Ben"]}

        assert await receive(ana) == presence_event("leave", "Ben")


async def test_rooms_are_separate_channels(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0))
    async with join(server, "red", "Ana") as (red, _), join(server, "blue", "Ben") as (blue, _):
        await red.send("in red")
        await blue.send("in blue")
        assert (await receive(red))["text"] == "in red"
        # Had red's message reached blue, it would have come first.
        assert (await receive(blue))["text"] == "in blue"


async def test_a_newcomer_gets_the_room_history(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0))
    async with join(server, "lobby", "Ana") as (ana, _):
        for text in ("one", "two", "three"):
            await ana.send(text)
            await receive_event(ana, "message")
        async with join(server, "lobby", "Ben") as (_, welcome):
            assert [m["text"] for m in welcome["history"]] == ["one", "two", "three"]
            assert {m["nick"] for m in welcome["history"]} == {"Ana"}


async def test_history_is_bounded(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0))
    async with join(server, "lobby", "Ana") as (ana, _):
        last = str(demo.HISTORY + 4)
        for i in range(demo.HISTORY + 5):
            await ana.send(str(i))
        while (await receive_event(ana, "message"))["text"] != last:
            pass
        async with join(server, "lobby", "Ben") as (_, welcome):
            texts = [m["text"] for m in welcome["history"]]
            assert texts == [str(i) for i in range(5, demo.HISTORY + 5)]


async def test_the_same_nickname_in_two_tabs_is_one_person(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0))
    async with join(server, "lobby", "Ana") as (ana, _):
        async with join(server, "lobby", "Ben") as (tab1, _):
            await receive_event(ana, "join")
            async with join(server, "lobby", "Ben") as (tab2, welcome):
                assert welcome["presence"] == ["Ana", "Ben"]
                await tab2.send("from the second tab")
                # No second join reached Ana: the message is the next thing she hears.
                assert (await receive(ana))["text"] == "from the second tab"
                assert (await receive(tab1))["text"] == "from the second tab"
            # One tab closed, the other is still there: no leave.
            await tab1.send("still here")
            assert (await receive(ana))["text"] == "still here"
        assert await receive(ana) == presence_event("leave", "Ben")


async def test_a_quick_reconnect_is_not_a_leave(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0.5))
    async with join(server, "lobby", "Ana") as (ana, _):
        async with join(server, "lobby", "Ben"):
            await receive_event(ana, "join")
        async with join(server, "lobby", "Ben") as (ben, welcome):
            assert welcome["presence"] == ["Ana", "Ben"]
            await ben.send("back")
            assert (await receive(ana))["text"] == "back"
        started = time.monotonic()
        assert await receive(ana) == presence_event("leave", "Ben")
        assert time.monotonic() - started >= 0.4


async def test_an_empty_room_is_closed(serve: Serve) -> None:
    app = demo.create_app(leave_grace=0)
    server = serve(app)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        async with join(server, "attic", "Ana") as (ana, _):
            await ana.send("echo")
            await receive_event(ana, "message")
            assert (await http.get("/api/rooms")).json() == {"attic": ["Ana"]}
        deadline = time.monotonic() + TIMEOUT
        while (await http.get("/api/rooms")).json() != {}:
            assert time.monotonic() < deadline, "the empty room stayed open"
            await asyncio.sleep(0.02)
        # A new visitor starts a fresh room, without the old history.
        async with join(server, "attic", "Ben") as (_, welcome):
            assert welcome["history"] == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ws/chat/lobby", "a nickname is 1-24 printable characters"),
        ("/ws/chat/lobby?nick=%20%20", "a nickname is 1-24 printable characters"),
        ("/ws/chat/lobby?nick=" + "x" * 25, "a nickname is 1-24 printable characters"),
        ("/ws/chat/lobby?nick=a%0Ab", "a nickname is 1-24 printable characters"),
        ("/ws/chat/no%20spaces?nick=Ana", "a room name is 1-32 letters, digits, '-' or '_'"),
    ],
)
async def test_bad_names_are_refused_with_a_reason(serve: Serve, path: str, reason: str) -> None:
    server = serve(demo.create_app())
    async with connect(server, path) as ws:
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, reason)


async def test_long_messages_are_cut_and_blank_ones_ignored(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0))
    async with join(server, "lobby", "Ana") as (ana, _):
        await ana.send("   ")
        await ana.send(b"binary is not chat")
        await ana.send("y" * (demo.MAX_TEXT + 100))
        assert (await receive(ana))["text"] == "y" * demo.MAX_TEXT


async def test_dashboard_pushes_metrics(serve: Serve) -> None:
    server = serve(demo.create_app(leave_grace=0, interval=0.05))
    backends = {name: info["backend"] for name, info in haske.backends(quiet=True).items()}

    async with connect(server, "/ws/dashboard") as dashboard:
        first = await receive(dashboard)
        assert set(first) == METRIC_KEYS
        assert first["event"] == "metrics"
        assert first["backends"] == backends
        assert (first["connections"], first["users"], first["rooms"]) == (1, 0, {})

        async with join(server, "lobby", "Ana") as (ana, _):
            for i in range(5):
                await ana.send(f"message {i}")
            deadline = time.monotonic() + TIMEOUT
            while True:
                metrics = await receive(dashboard)
                assert set(metrics) == METRIC_KEYS
                if metrics["users"] == 1 and metrics["messages_per_second"] > 0:
                    break
                assert time.monotonic() < deadline, f"no chat activity in {metrics}"
            assert metrics["connections"] == 2
            assert metrics["rooms"] == {"lobby": 1}
            assert metrics["deliveries_per_second"] > 0
            assert metrics["dropped"] == 0

        # Snapshots keep coming, several a second, and the uptime moves on.
        started = time.monotonic()
        snapshots = [await receive(dashboard) for _ in range(5)]
        assert time.monotonic() - started < 1.0
        assert snapshots[-1]["uptime"] > metrics["uptime"]


async def test_pages_and_assets_are_served(serve: Serve) -> None:
    server = serve(demo.create_app())
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        for path, marker in [
            ("/", 'href="/chat"'),
            ("/chat", "socketURL(path)"),
            ("/dashboard", 'socketURL("/ws/dashboard")'),
        ]:
            response = await http.get(path)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            assert marker in response.text
        script = await http.get("/static/live.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert (await http.get("/static/style.css")).status_code == 200
        assert (await http.get("/static/missing.js")).status_code == 404


async def test_echo_example(serve: Serve) -> None:
    echo = load_example("echo")
    server = serve(echo.app)
    async with connect(server, "/ws") as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Welcome to Haske Chat!"
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "You said: hello"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return str(stream.readline())


def test_the_demo_script_serves_and_stops_cleanly_on_ctrl_c() -> None:
    port = _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "demo.py"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert f"http://127.0.0.1:{port}" in _read_line(process.stdout, 10)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the demo did not start listening"
                time.sleep(0.05)

        # An open connection must not hold up the shutdown: it is closed with 1012.
        with connect_sync(f"ws://127.0.0.1:{port}/ws/chat/lobby?nick=Ana", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["event"] == "join"
            process.send_signal(signal.SIGINT)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "Application shutdown complete" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
