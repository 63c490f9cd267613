"""LiveSessionManager: sessions of one or more sockets (tabs), presence, join and leave events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from haske.broadcast import BroadcastMessage, WebSocketBroadcaster, get_broadcaster
from haske.websocket import WebSocket

if TYPE_CHECKING:
    from haske.redis_presence import RedisPresence

__all__ = ["LiveSessionManager", "Session"]

logger = logging.getLogger("haske.ws")

PresenceCallback = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(eq=False)
class Session:
    """One session: its id, its metadata and the sockets currently open for it."""

    session_id: str
    metadata: dict[str, Any]
    sockets: list[WebSocket] = field(default_factory=list)
    leave_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class LiveSessionManager:
    """Sessions keyed by id, each with one or more sockets (several tabs) and metadata.

    A session joins when its first socket is added and leaves when its last socket is gone (or
    on ``remove(session_id)``). ``leave_grace`` seconds after the last socket went, the leave
    happens unless a socket rejoined in the meantime, so a reloading tab does not flap. Joins and
    leaves call ``on_join(session_id, metadata)`` / ``on_leave(session_id, metadata)`` and, when
    ``presence_channel`` is set, are broadcast on it as ``{"event": "join" | "leave",
    "session_id": ..., "metadata": {...}}``; a socket is subscribed to that channel while it is
    in a session (so a joining tab sees its own join first).

    Sending goes through ``broadcaster`` (the default one unless given): bounded queues, the
    broadcaster's slow-consumer policy, and a socket that ends leaves its sessions by itself.

    When the broadcaster has a Redis backend, sessions span every process: a session joins when
    its first socket anywhere is added and leaves when its last one anywhere is gone, each
    announced once; ``presence()``, ``len()`` and ``in`` cover the cluster, ``send_to`` and
    ``broadcast`` reach sockets on any process, and ``get()`` is this process's part of a
    session. ``name`` (default: the presence channel, else ``"sessions"``) tells the registries
    of several managers apart.
    """

    def __init__(
        self,
        broadcaster: WebSocketBroadcaster | None = None,
        *,
        leave_grace: float = 0.0,
        presence_channel: str | None = None,
        on_join: PresenceCallback | None = None,
        on_leave: PresenceCallback | None = None,
        name: str | None = None,
    ) -> None:
        if leave_grace < 0:
            raise ValueError("leave_grace is a number of seconds, at least 0")
        self.broadcaster = get_broadcaster() if broadcaster is None else broadcaster
        self.leave_grace = leave_grace
        self.presence_channel = presence_channel
        self.on_join = on_join
        self.on_leave = on_leave
        self._sessions: dict[str, Session] = {}
        self._socket_sessions: dict[int, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        backend = getattr(self.broadcaster, "backend", None)
        self._cluster: RedisPresence | None = None
        if backend is not None:
            self._cluster = backend.presence(self, name or presence_channel or "sessions")

    def __len__(self) -> int:
        if self._cluster is not None:
            return len(self._cluster)
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        if self._cluster is not None:
            return session_id in self._cluster
        return session_id in self._sessions

    def get(self, session_id: str) -> Session | None:
        """The session with this id (its sockets in this process), or None."""
        return self._sessions.get(session_id)

    # -- membership ---------------------------------------------------------------------------

    async def add(self, session_id: str, ws: WebSocket, **metadata: Any) -> bool:
        """Add an accepted socket to a session, creating the session (a join) if needed.

        ``metadata`` is merged into the session's. Returns True when the session joined, False
        when it already existed (another tab, or a reconnect within ``leave_grace``).
        """
        if not isinstance(ws, WebSocket):
            raise TypeError(
                f"expected a haske WebSocket, got {type(ws).__name__}; "
                "wrap a Starlette WebSocket with haske.ws.WebSocket(websocket)"
            )
        self.broadcaster._attach(ws)
        session = self._sessions.get(session_id)
        joined = session is None
        if session is None:
            session = self._sessions[session_id] = Session(session_id, dict(metadata))
        else:
            session.metadata.update(metadata)
            if session.leave_timer is not None:
                session.leave_timer.cancel()
                session.leave_timer = None
        if ws not in session.sockets:
            session.sockets.append(ws)
        self._socket_sessions.setdefault(ws.connection_id, set()).add(session_id)
        ws._add_finalizer(self, self._socket_gone)
        if self.presence_channel is not None:
            await self.broadcaster.subscribe(ws, self.presence_channel)
        merged = session.metadata
        if self._cluster is not None:
            outcome = await self._cluster.sync(session_id, metadata)
            if outcome is not None:
                joined, merged = outcome
        if joined:
            await self._announce("join", session_id, merged)
        return joined

    async def remove(self, session_id: str, ws: WebSocket | None = None) -> bool:
        """Take one socket out of a session, or with ``ws=None`` end the whole session now.

        A session whose last socket is taken out leaves after ``leave_grace``. The sockets are
        not closed. Returns False if there was nothing to remove.
        """
        session = self._sessions.get(session_id)
        if session is None:
            return False
        if ws is None:
            for socket in session.sockets:
                self._forget(socket, session_id)
            session.sockets.clear()
            if session.leave_timer is not None:
                session.leave_timer.cancel()
            del self._sessions[session_id]
            await self._left(session)
            return True
        if ws not in session.sockets:
            return False
        session.sockets.remove(ws)
        self._forget(ws, session_id)
        if session.sockets or self.leave_grace:
            if not session.sockets:
                self._leave_later(session)
            if self._cluster is not None:
                await self._cluster.sync(session_id)
        else:
            del self._sessions[session_id]
            await self._left(session)
        return True

    async def _left(self, session: Session) -> None:
        """The session is gone from this process: announce its leave, if that was the last of
        it (in the cluster, with a Redis backend)."""
        left, metadata = True, session.metadata
        if self._cluster is not None:
            outcome = await self._cluster.sync(session.session_id)
            if outcome is not None:
                left, metadata = outcome
        if left:
            await self._announce("leave", session.session_id, metadata)

    def _forget(self, ws: WebSocket, session_id: str) -> None:
        ids = self._socket_sessions.get(ws.connection_id)
        if ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._socket_sessions[ws.connection_id]
                ws._remove_finalizer(self)
                if self.presence_channel is not None:
                    self.broadcaster._leave(ws, self.presence_channel)

    def _socket_gone(self, ws: WebSocket) -> None:
        # Runs when the socket's handler ends (or the socket was lost), so nothing may await.
        for session_id in self._socket_sessions.pop(ws.connection_id, ()):
            session = self._sessions.get(session_id)
            if session is None or ws not in session.sockets:
                continue
            session.sockets.remove(ws)
            if not session.sockets:
                self._leave_later(session)
            if self._cluster is not None and session_id in self._sessions:
                # One socket fewer here, in the cluster's count too.
                self._spawn(self._logged(self._cluster.sync(session_id), "update", session_id))

    def _leave_later(self, session: Session) -> None:
        if self.leave_grace:
            loop = asyncio.get_running_loop()
            session.leave_timer = loop.call_later(self.leave_grace, self._expire, session)
        else:
            self._expire(session)

    def _expire(self, session: Session) -> None:
        session.leave_timer = None
        if session.sockets or self._sessions.get(session.session_id) is not session:
            return
        del self._sessions[session.session_id]
        self._spawn(self._logged(self._left(session), "leave", session.session_id))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, event: str, session_id: str, metadata: dict[str, Any]) -> None:
        metadata = dict(metadata)
        if self.presence_channel is not None:
            await self.broadcaster.create_channel(self.presence_channel)
            await self.broadcaster.broadcast(
                {"event": event, "session_id": session_id, "metadata": metadata},
                channel=self.presence_channel,
            )
        callback = self.on_join if event == "join" else self.on_leave
        if callback is not None:
            await callback(session_id, metadata)

    async def _announce_logged(self, event: str, session_id: str, metadata: dict[str, Any]) -> None:
        await self._logged(self._announce(event, session_id, metadata), event, session_id)

    async def _logged(self, step: Awaitable[Any], event: str, session_id: str) -> None:
        try:
            await step
        except Exception:
            logger.exception("the %s of session %r failed", event, session_id)

    # -- sending and presence -----------------------------------------------------------------

    async def send_to(self, session_id: str, message: BroadcastMessage) -> bool:
        """Send to every socket of one session (str as text, bytes as binary, dict/list as JSON).

        False if the session does not exist or no socket took the message. With a Redis backend
        the message is also published for the session's sockets on other processes, and True
        means a socket here took it or the session has sockets elsewhere.
        """
        cluster = self._cluster
        published = None
        if cluster is not None:
            published = self.broadcaster._publish(cluster.channel_of(session_id), message)
        session = self._sessions.get(session_id)
        here = session.sockets if session is not None else []
        delivered = await self.broadcaster.send_to(here, message) if here else 0
        if published is not None:
            await published
        if cluster is None:
            return delivered > 0
        return delivered > 0 or cluster.sockets(session_id) > len(here)

    async def broadcast(
        self, message: BroadcastMessage, exclude: str | Iterable[str] | None = None
    ) -> int:
        """Send to every socket of every session (not to other sockets of the broadcaster),
        except the sessions in ``exclude``; returns how many sockets took the message (in this
        process, with a Redis backend, which also publishes it for the other processes).
        """
        skip = {exclude} if isinstance(exclude, str) else set(exclude or ())
        published = None
        if self._cluster is not None:
            options = {"xs": sorted(skip)} if skip else None
            published = self.broadcaster._publish(self._cluster.everyone, message, options)
        sockets = self._sockets_except(skip)
        delivered = await self.broadcaster.send_to(sockets, message) if sockets else 0
        if published is not None:
            await published
        return delivered

    def _sockets_except(self, skip: set[str]) -> list[WebSocket]:
        """The sockets here of every session not in ``skip``."""
        return [
            ws
            for session_id, session in self._sessions.items()
            if session_id not in skip
            for ws in session.sockets
        ]

    def presence(self) -> list[dict[str, Any]]:
        """Who is here, in order of joining: ``session_id``, ``metadata``, open ``connections``
        (every process's, with a Redis backend)."""
        if self._cluster is not None:
            return self._cluster.presence()
        return [
            {
                "session_id": session.session_id,
                "metadata": dict(session.metadata),
                "connections": len(session.sockets),
            }
            for session in self._sessions.values()
        ]

    # -- the original Haske names -------------------------------------------------------------

    add_session = add
    remove_session = remove
    broadcast_to_session = send_to
    broadcast_to_all = broadcast

    def get_session_count(self) -> int:
        """How many sessions there are."""
        return len(self)

    def get_session_ids(self) -> list[str]:
        """Every session id, in order of joining."""
        if self._cluster is not None:
            return self._cluster.session_ids()
        return list(self._sessions)
