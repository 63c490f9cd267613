"""Haske demo: a live chat and a live dashboard, served by one app.

    python examples/demo.py --host 127.0.0.1 --port 8000

- ``/chat``: every room is a broadcaster channel. The room's ``LiveSessionManager`` keeps the
  presence list and announces joins and leaves on that same channel, so they arrive in order with
  the messages.
- ``/dashboard``: a few times a second the server pushes its numbers to the ``dashboard`` channel.

Under plain uvicorn: ``uvicorn demo:app --app-dir examples --ws haske.server:WebSocketProtocol``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import haske
from haske import Haske
from haske.ws import LiveSessionManager, WebSocket, WebSocketBroadcaster

STATIC = Path(__file__).parent / "static"

ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_NICK = 24
MAX_TEXT = 500
#: Messages a room replays to whoever joins it.
HISTORY = 50
DASHBOARD = "dashboard"
#: Seconds over which the per-second rates are measured.
RATE_WINDOW = 1.0


class Room:
    """One chat room: its channel, the people in it and its latest messages."""

    def __init__(
        self,
        name: str,
        broadcaster: WebSocketBroadcaster,
        leave_grace: float,
        on_empty: Callable[[Room], Awaitable[None]],
    ) -> None:
        self.name = name
        self.channel = f"room:{name}"
        self.broadcaster = broadcaster
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.sessions = LiveSessionManager(
            broadcaster,
            leave_grace=leave_grace,
            presence_channel=self.channel,
            on_leave=self._left,
        )
        self._on_empty = on_empty

    def people(self) -> list[str]:
        """Nicknames, in order of joining."""
        return [entry["session_id"] for entry in self.sessions.presence()]

    async def say(self, nick: str, text: str) -> None:
        message = {"event": "message", "nick": nick, "text": text, "ts": time.time()}
        self.history.append(message)
        await self.broadcaster.broadcast(message, channel=self.channel)

    async def _left(self, nick: str, metadata: dict[str, Any]) -> None:
        if len(self.sessions) == 0:
            await self._on_empty(self)


class Chat:
    """The chat rooms: a room opens with its first visitor and closes when the last one leaves."""

    def __init__(self, broadcaster: WebSocketBroadcaster, leave_grace: float) -> None:
        self.broadcaster = broadcaster
        self.leave_grace = leave_grace
        self.rooms: dict[str, Room] = {}
        #: Chat messages received since the start, for the dashboard's rate.
        self.received = 0

    async def socket(self, ws: WebSocket) -> None:
        """``/ws/chat/{room}?nick=...``: join the room, then say every text message in it."""
        await ws.accept()
        name = ws.path_params["room"]
        nick = ws.query_params.get("nick", "").strip()
        # Accept first and then close, so that the page can show the reason.
        if not ROOM_NAME.fullmatch(name):
            await ws.close(1008, "a room name is 1-32 letters, digits, '-' or '_'")
            return
        if not (0 < len(nick) <= MAX_NICK and nick.isprintable()):
            await ws.close(1008, f"a nickname is 1-{MAX_NICK} printable characters")
            return

        room = self.rooms.get(name) or self._open(name)
        # The same nickname in several tabs is one person with several connections.
        await room.sessions.add(nick, ws)
        # Sent through the broadcaster rather than ws.send_json: it is queued at once, so no join,
        # leave or message that happens after this snapshot can overtake it.
        welcome = {
            "event": "welcome",
            "room": name,
            "nick": nick,
            "presence": room.people(),
            "history": list(room.history),
        }
        await self.broadcaster.send_to([ws], welcome)

        async for data in ws:
            text = data.strip() if isinstance(data, str) else ""
            if text:
                self.received += 1
                await room.say(nick, text[:MAX_TEXT])
        # Leaving needs no code: when this handler returns, the socket leaves the broadcaster and
        # its session, and the room announces the leave once the nickname has no socket left.

    def _open(self, name: str) -> Room:
        room = self.rooms[name] = Room(name, self.broadcaster, self.leave_grace, self._close)
        return room

    async def _close(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            await self.broadcaster.remove_channel(room.channel)

    def summary(self) -> dict[str, list[str]]:
        """Every open room and who is in it."""
        return {name: room.people() for name, room in sorted(self.rooms.items())}


class Dashboard:
    """Pushes a snapshot of the server's numbers to the ``dashboard`` channel every ``interval``."""

    def __init__(self, broadcaster: WebSocketBroadcaster, chat: Chat, interval: float) -> None:
        self.broadcaster = broadcaster
        self.chat = chat
        self.interval = interval
        self.backends = {name: info["backend"] for name, info in haske.backends(quiet=True).items()}
        self.started = 0.0
        #: (time, chat messages received, broadcast deliveries) over the last RATE_WINDOW.
        self._samples: deque[tuple[float, int, int]] = deque()

    async def socket(self, ws: WebSocket) -> None:
        """``/ws/dashboard``: a snapshot now, then one every ``interval``."""
        await ws.accept()
        await self.broadcaster.subscribe(ws, DASHBOARD)
        await self.broadcaster.send_to([ws], self.snapshot())
        async for _ in ws:  # the page only listens: wait until it goes
            pass

    def snapshot(self) -> dict[str, Any]:
        stats = self.broadcaster.stats()
        messages, deliveries = self._rates(stats["delivered"])
        rooms = self.chat.summary()
        return {
            "event": "metrics",
            "connections": stats["connections"],
            "users": sum(len(people) for people in rooms.values()),
            "rooms": {name: len(people) for name, people in rooms.items()},
            "messages_per_second": messages,
            "deliveries_per_second": deliveries,
            "dropped": stats["dropped"],
            "uptime": round(time.monotonic() - self.started, 1),
            "backends": self.backends,
        }

    def _rates(self, delivered: int) -> tuple[float, float]:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, self.chat.received, delivered))
        while now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        then, received_then, delivered_then = samples[0]
        elapsed = now - then
        if elapsed == 0:
            return 0.0, 0.0
        return (
            round((self.chat.received - received_then) / elapsed, 1),
            round((delivered - delivered_then) / elapsed, 1),
        )

    async def push(self) -> None:
        # A dashboard that falls behind only needs the latest numbers: drop stale ones.
        await self.broadcaster.create_channel(DASHBOARD, policy="drop_oldest")
        while True:
            await self.broadcaster.broadcast(self.snapshot(), channel=DASHBOARD)
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Haske) -> AsyncIterator[None]:
        self.started = time.monotonic()
        task = asyncio.create_task(self.push())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def page(filename: str) -> Callable[[Request], Awaitable[FileResponse]]:
    """An endpoint serving one of the HTML pages."""

    async def endpoint(request: Request) -> FileResponse:
        return FileResponse(STATIC / filename)

    return endpoint


def create_app(*, leave_grace: float = 2.0, interval: float = 0.25) -> Haske:
    """The demo app, with its own broadcaster.

    ``leave_grace`` is how long a nickname stays in a room after its last tab went (a reload then
    does not show as a leave and a join); ``interval`` is the dashboard's refresh period.
    """
    broadcaster = WebSocketBroadcaster()
    chat = Chat(broadcaster, leave_grace)
    dashboard = Dashboard(broadcaster, chat, interval)
    app = Haske(
        routes=[
            Route("/", page("index.html"), name="index"),
            Route("/chat", page("chat.html"), name="chat"),
            Route("/dashboard", page("dashboard.html"), name="dashboard"),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=dashboard.lifespan,
    )
    app.add_websocket_handler(
        "/ws/chat/{room}", chat.socket, name="chat_socket", broadcaster=broadcaster
    )
    app.add_websocket_handler(
        "/ws/dashboard", dashboard.socket, name="dashboard_socket", broadcaster=broadcaster
    )

    @app.route("/api/rooms")
    async def rooms(request: Request) -> JSONResponse:
        """Who is where, for HTTP clients."""
        return JSONResponse(chat.summary())

    return app


app = create_app()


def main() -> None:
    parser = argparse.ArgumentParser(description="Haske live chat and dashboard demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"Haske demo on http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    haske.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
