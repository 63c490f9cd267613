"""WebSocketBroadcaster: channels, encode-once fan-out and slow-consumer policies.

A broadcast never awaits a socket. Each connection has an outbound queue bounded in bytes: on
Haske's protocol the connection's own write buffer (the frame is encoded once per broadcast and the
same bytes are handed to every connection), on other ASGI servers an :class:`Outbox`, which sends at
once and only queues while the server makes a send wait. A connection whose queue is full is
handled by the policy of the channel (or of the broadcaster): ``"close"`` (close with 1013 "try
again later"), ``"drop_oldest"`` or ``"drop_newest"``. Everyone else keeps getting every message.

With a Redis backend (``WebSocketBroadcaster("redis://...")``, or ``HASKE_BROADCAST_URL`` for the
default broadcaster) each broadcast is also published once for the other processes, which deliver
it to their own members the same way (see :mod:`haske.redis`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import sys
import types
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, Literal, TypeGuard

from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from haske import _json, limits
from haske._backends import broadcast as _manager_backend
from haske._backends import frames
from haske._hypercorn import websocket_stream
from haske._uvicorn import frame_writer
from haske.exceptions import ConnectionClosed
from haske.websocket import WebSocket

__all__ = [
    "ChannelLimitExceeded",
    "ChannelNotFound",
    "Outbox",
    "Policy",
    "WebSocketBroadcaster",
    "get_broadcaster",
]

logger = logging.getLogger("haske.ws")

Policy = Literal["close", "drop_oldest", "drop_newest"]
POLICIES: tuple[str, ...] = ("close", "drop_oldest", "drop_newest")


BroadcastMessage = str | bytes | bytearray | memoryview | dict[str, Any] | list[Any]
#: A connection of this process, its id, or ``(process id, connection id)`` from :meth:`address`.
Excluded = WebSocket | int | tuple[str, int]
Exclude = Excluded | Iterable[Excluded] | None

#: An outbox item, shared by every connection: the ASGI message, its size for the byte bound, and
#: its frame for connections whose server takes frames directly (``b""`` when none does).
Item = tuple[Message, int, bytes]


class ChannelNotFound(KeyError):
    """A membership query (``count``, ``connections``) named a channel that does not exist, or
    no longer does: a channel that ``subscribe()`` created goes away with its last member."""

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        self.channel = channel

    def __str__(self) -> str:
        return (
            f"no channel named {self.channel!r}: create it first with "
            f"`await broadcaster.create_channel({self.channel!r})` "
            "(subscribe() also creates channels on demand)"
        )


class ChannelLimitExceeded(ValueError):
    """A connection tried to join more channels than its broadcaster allows."""


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(
            f"unknown slow-consumer policy {policy!r}; use one of {', '.join(POLICIES)}"
        )


class Outbox:
    """The outbound queue of one connection on a standard ASGI server, bounded in bytes.

    ``write`` never waits. While nothing is queued it sends at once: on uvicorn's own protocols it
    writes the frame to the transport when it can (:mod:`haske._uvicorn`); otherwise it starts
    the server's ASGI ``send(message)`` and, as a send almost always does, it completes without
    suspending, so a fan-out costs no task switch per connection. A send that does suspend (the
    transport is paused: the client is slow) goes on in a task of its own, and the messages
    written meanwhile queue behind it, up to ``limit`` bytes: past it ``write`` returns False (a
    message larger than the limit is still taken when the queue is empty, so big messages are
    not refused forever). The task sends the queue in order and ends once it is empty;
    ``clear()`` (on close) stops it.
    """

    __slots__ = (
        "_done",
        "_loop",
        "_on_hypercorn",
        "_on_lost",
        "_queue",
        "_send",
        "_size",
        "_task",
        "_waiters",
        "_write_frame",
        "_written",
        "_ws",
        "frames_written",
        "limit",
    )

    def __init__(self, ws: WebSocket, limit: int, on_lost: Callable[[WebSocket], None]) -> None:
        self.limit = limit
        self._ws = ws
        # The server's own ASGI send: the wrapper's state is checked here, once per message.
        self._send: Callable[[Message], Awaitable[None]] = ws.websocket._send
        self._write_frame = frame_writer(self._send)
        # On hypercorn the wrapper has to look at the stream before each send to learn the peer
        # is gone; elsewhere a recorded close code is enough.
        self._on_hypercorn = websocket_stream(self._send) is not None
        #: Messages written to the transport as frames, past the server's ``send``.
        self.frames_written = 0
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[Item] = collections.deque()
        self._size = 0
        self._task: asyncio.Task[None] | None = None  # sending what had to wait
        # Messages ever written, and those sent or discarded: flush() waits on these.
        self._written = 0
        self._done = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet handed to the server."""
        return self._size

    @property
    def takes_frames(self) -> bool:
        """Whether ``write`` can hand an item's frame to the transport (uvicorn's protocols)."""
        return self._write_frame is not None

    def write(self, item: Item) -> bool:
        """Send or queue a message; False (taking nothing) when the queue is full.

        ``ConnectionClosed`` (or what the server raised) when a send fails at once.
        """
        if self._task is not None:
            if self._queue and self._size + item[1] > self.limit:
                return False
            self._queue.append(item)
            self._size += item[1]
            self._written += 1
            return True
        if self._ws._close_code is not None or self._on_hypercorn:
            self._ws._raise_if_closed()
        if self._write_frame is not None and item[2] and self._write_frame(item[2]):
            self.frames_written += 1
            return True
        self._written += 1
        self._done += 1  # sent, moved to the task, or failed: nothing is left queued
        try:
            sending = self._send(item[0]).__await__()
            waiting = sending.send(None)
        except StopIteration:
            return True
        except Exception as exc:  # noqa: BLE001 - whatever the server raised, the send failed
            raise self._failure(exc) from None
        self._done -= 1
        self._task = self._loop.create_task(self._finish(sending, waiting))
        return True

    def drop_oldest(self, nbytes: int) -> bool:
        """Discard queued messages, oldest first, until ``nbytes`` are freed; True if any went."""
        freed = dropped = 0
        while self._queue and freed < nbytes:
            freed += self._queue.popleft()[1]
            dropped += 1
        self._size -= freed
        self._advance(dropped)
        return dropped > 0

    async def flush(self) -> None:
        """Wait until the messages written so far were sent (or discarded, or the peer is gone).

        Messages written meanwhile are not waited for, so a steady stream of broadcasts cannot
        starve a direct send.
        """
        target = self._written
        while self._done < target and self._task is not None:
            if self._task is asyncio.current_task():
                return
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter

    def clear(self) -> None:
        """Forget everything queued and stop the sender task."""
        self._queue.clear()
        self._size = 0
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._advance(self._written - self._done)

    def _advance(self, count: int) -> None:
        self._done += count
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _finish(self, sending: Generator[Any, Any, None], waiting: Any) -> None:
        """Finish the send that suspended, then send what queued behind it, in order."""
        queue = self._queue
        ws = self._ws
        try:
            await _resume(sending, waiting)
            self._advance(1)
            while queue:
                message, size, _ = queue.popleft()
                self._size -= size
                ws._raise_if_closed()
                await self._send(message)
                self._advance(1)
        except Exception as exc:  # noqa: BLE001 - whatever the server raised, the peer is lost
            self._failure(exc)
            self._queue.clear()
            self._size = 0
            self._advance(self._written - self._done)
            self._on_lost(ws)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self._advance(0)

    def _failure(self, exc: Exception) -> Exception:
        """Record on the WebSocket that a send failed, as its own sends do; the error to raise."""
        ws = self._ws
        if isinstance(exc, WebSocketDisconnect):
            code = exc.code
        elif isinstance(exc, (OSError, RuntimeError)):
            code = 1006  # servers differ in what they raise once the connection went away
        else:
            logger.error("sending a broadcast to %r failed", ws, exc_info=exc)
            return exc
        if ws._close_code is None:
            ws._close_code, ws._close_reason = code, getattr(exc, "reason", None) or ""
        return ws._closed_error()


@types.coroutine
def _resume(awaiting: Generator[Any, Any, Any], waiting: Any) -> Generator[Any, Any, Any]:
    """Await the rest of an awaitable (its ``__await__()``) that already ran up to ``waiting``,
    its first suspension, outside of any task: what the task sends or throws in goes on to it."""
    while True:
        try:
            value = yield waiting
        except GeneratorExit:
            awaiting.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - cancellation too belongs to the awaitable
            try:
                waiting = awaiting.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting = awaiting.send(value)
            except StopIteration as stop:
                return stop.value


class WebSocketBroadcaster:
    """Fan messages out to every tracked connection, or to the members of a channel.

    Connections of ``@websocket_route`` handlers are tracked by the default broadcaster
    (:func:`get_broadcaster`) from ``accept()`` until the handler ends. Others join with
    ``add_connection(ws)`` or ``subscribe(ws, channel)``.

    ``policy`` is what happens to a connection that falls more than ``outbound_limit`` bytes
    behind (``None``: the server's own limit on Haske's protocol, 1 MiB elsewhere); a channel can
    override it (``create_channel(name, policy=...)``). A connection may be in at most
    ``max_channels_per_connection`` channels. ``manager`` is a ``BroadcastManager`` (by default
    the fastest built one). A broadcaster belongs to one event loop.

    ``url`` (``"redis://..."``) or ``backend`` (a :class:`haske.redis.RedisBackend`) spreads
    broadcasts over every process that uses the same one; without either, the broadcaster serves
    this process alone.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Any = None,
        policy: Policy = "close",
        outbound_limit: int | None = None,
        max_channels_per_connection: int = limits.MAX_CHANNELS_PER_CONNECTION,
        manager: Any = None,
    ) -> None:
        _check_policy(policy)
        if outbound_limit is not None and outbound_limit <= 0:
            raise ValueError("outbound_limit must be a positive number of bytes")
        if max_channels_per_connection < 1:
            raise ValueError("max_channels_per_connection must be at least 1")
        self.policy: Policy = policy
        self.outbound_limit = outbound_limit
        self.max_channels_per_connection = max_channels_per_connection
        self._manager = _manager_backend.BroadcastManager() if manager is None else manager
        # The manager's own Outlet: fan-out writes frames straight to idle sockets through it.
        self._outlet_type = getattr(sys.modules.get(type(self._manager).__module__), "Outlet", None)
        # Broadcasts in this event-loop turn, and in the last turn that had any.
        self._turn_broadcasts = 0
        self._last_turn_broadcasts = 0
        self._sockets: dict[int, WebSocket] = {}
        # Connections that take a broadcast's frame: on Haske's protocol, and on uvicorn's own.
        self._native = 0
        self._framed = 0
        self._policies: dict[str, Policy] = {}
        # Channels that subscribe() created: removed again when their last member leaves, so
        # per-document or per-room names cannot pile up. create_channel() makes one permanent.
        self._on_demand: set[str] = set()
        self._broadcasts = 0
        self._delivered = 0
        self._dropped = 0
        self._closed = 0
        self._failed = 0
        if url is not None and backend is not None:
            raise ValueError("give a broadcaster a url or a backend, not both")
        self.backend = _backend_for(url) if backend is None else backend
        if self.backend is not None:
            self.backend.listen(
                self.backend.channel_key(None), functools.partial(self._receive, None)
            )

    def __repr__(self) -> str:
        return f"<WebSocketBroadcaster connections={len(self._sockets)} policy={self.policy!r}>"

    # -- connections --------------------------------------------------------------------------

    def _attach(self, ws: WebSocket) -> None:
        if not isinstance(ws, WebSocket):
            raise TypeError(
                f"expected a haske WebSocket, got {type(ws).__name__}; "
                "wrap a Starlette WebSocket with haske.ws.WebSocket(websocket)"
            )
        if ws.connection_id in self._sockets:
            return
        if not ws.accepted:
            raise RuntimeError("accept() the WebSocket before adding it to a broadcaster")
        if ws.closed:
            raise ConnectionClosed(ws.close_code or 1006)
        connection = ws._connection
        if connection is not None:
            if self.outbound_limit is not None:
                connection.outbound_limit = self.outbound_limit
            outlet = connection.outlet(self._outlet_type) if self._outlet_type else None
            if outlet is None:
                self._manager.add_connection(ws.connection_id, connection.write_frame, native=True)
            else:
                self._manager.add_connection(
                    ws.connection_id, connection.write_frame, native=True, outlet=outlet
                )
            self._native += 1
        else:
            outbox = ws.outbound
            if outbox is None:
                limit = self.outbound_limit or limits.OUTBOUND_LIMIT
                outbox = ws.outbound = Outbox(ws, limit, self._lost)
            self._manager.add_connection(ws.connection_id, outbox.write)
            if outbox.takes_frames:
                self._framed += 1
        self._sockets[ws.connection_id] = ws
        ws._add_finalizer(self, self._detach)
        if self.backend is not None:
            self.backend.start()

    def _lost(self, ws: WebSocket) -> None:
        # The peer went away while messages were queued for it: leave the broadcaster and every
        # session now rather than when the handler notices.
        if ws.connection_id in self._sockets:
            self._failed += 1
        ws._finalize()

    def _detach(self, ws: WebSocket) -> bool:
        if self._sockets.pop(ws.connection_id, None) is None:
            return False
        joined = self._manager.channels_of(ws.connection_id) if self._on_demand else ()
        self._manager.remove_connection(ws.connection_id)
        for channel in joined:
            self._prune(channel)
        ws._remove_finalizer(self)
        if ws.native:
            self._native -= 1
        elif ws.outbound is not None and ws.outbound.takes_frames:
            self._framed -= 1
        return True

    def _prune(self, channel: str) -> None:
        if channel in self._on_demand and not self._manager.count(channel):
            self._on_demand.discard(channel)
            self._policies.pop(channel, None)
            self._manager.remove_channel(channel)
            if self.backend is not None:
                self.backend.unlisten(self.backend.channel_key(channel))

    async def add_connection(self, ws: WebSocket, channel: str | None = None) -> None:
        """Track an accepted connection (and subscribe it to ``channel`` when given)."""
        self._attach(ws)
        if channel is not None:
            await self.subscribe(ws, channel)

    async def remove_connection(self, ws: WebSocket) -> bool:
        """Stop tracking a connection; it leaves every channel. False if it was not tracked."""
        return self._detach(ws)

    def connections(self, channel: str | None = None) -> list[WebSocket]:
        """The tracked connections, or the members of ``channel``."""
        return [self._sockets[i] for i in self._members(channel)]

    def count(self, channel: str | None = None) -> int:
        """How many connections are tracked, or are members of ``channel``."""
        try:
            return int(self._manager.count(channel))
        except KeyError:
            raise ChannelNotFound(channel) from None  # type: ignore[arg-type]

    def __contains__(self, ws: object) -> bool:
        return isinstance(ws, WebSocket) and self._sockets.get(ws.connection_id) is ws

    def __len__(self) -> int:
        return len(self._sockets)

    def get_all_connections(self) -> list[WebSocket]:
        """Every tracked connection."""
        return self.connections()

    def get_channel_connections(self, channel: str) -> list[WebSocket]:
        """The members of ``channel``; :class:`ChannelNotFound` if it does not exist."""
        return self.connections(channel)

    def _members(self, channel: str | None) -> list[int]:
        try:
            return list(self._manager.members(channel))
        except KeyError:
            raise ChannelNotFound(channel) from None  # type: ignore[arg-type]

    # -- channels -----------------------------------------------------------------------------

    async def create_channel(self, name: str, *, policy: Policy | None = None) -> bool:
        """Create a channel that lasts until :meth:`remove_channel` (False if it existed);
        ``policy`` overrides the broadcaster's for it."""
        if policy is not None:
            _check_policy(policy)
        created = self._create(name)
        self._on_demand.discard(name)
        if policy is not None:
            self._policies[name] = policy
        if created:
            await self._listen(name)
        return created

    def _create(self, name: str) -> bool:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a channel name is a non-empty str, got {name!r}")
        return bool(self._manager.create_channel(name))

    async def _listen(self, name: str) -> None:
        # Other processes' broadcasts on the channel reach this one once Redis confirms.
        if self.backend is not None:
            key = self.backend.channel_key(name)
            await self.backend.subscribe(key, functools.partial(self._receive, name))

    async def remove_channel(self, name: str) -> bool:
        """Delete a channel; its members stay connected. False if it did not exist."""
        self._policies.pop(name, None)
        self._on_demand.discard(name)
        removed = bool(self._manager.remove_channel(name))
        if removed and self.backend is not None:
            self.backend.unlisten(self.backend.channel_key(name))
        return removed

    def channels(self) -> list[str]:
        """Every channel name, sorted."""
        return list(self._manager.channels())

    def channels_of(self, ws: WebSocket) -> list[str]:
        """The channels a connection is in, sorted."""
        if ws.connection_id not in self._sockets:
            return []
        return list(self._manager.channels_of(ws.connection_id))

    async def subscribe(self, ws: WebSocket, channel: str) -> bool:
        """Put a connection in a channel, tracking the connection if needed.

        A channel that does not exist is created on demand, and removed again when its last
        member leaves. False if the connection was already a member;
        :class:`ChannelLimitExceeded` past ``max_channels_per_connection``.
        """
        if not isinstance(ws, WebSocket):
            raise TypeError(
                f"subscribe(ws, channel) takes the WebSocket first, got {type(ws).__name__}"
            )
        self._attach(ws)
        joined = self._manager.channels_of(ws.connection_id)
        if channel in joined:
            return False
        if len(joined) >= self.max_channels_per_connection:
            raise ChannelLimitExceeded(
                f"{ws!r} is already in {len(joined)} channels, the limit of this broadcaster "
                "(raise it with WebSocketBroadcaster(max_channels_per_connection=...))"
            )
        created = self._create(channel)
        if created:
            self._on_demand.add(channel)
        joined = bool(self._manager.join(ws.connection_id, channel))
        if created:
            await self._listen(channel)
        return joined

    async def unsubscribe(self, ws: WebSocket, channel: str) -> bool:
        """Take a connection out of a channel; False if it was not a member."""
        return self._leave(ws, channel)

    def _leave(self, ws: WebSocket, channel: str) -> bool:
        if ws.connection_id not in self._sockets:
            return False
        try:
            left = bool(self._manager.leave(ws.connection_id, channel))
        except KeyError:
            return False
        self._prune(channel)
        return left

    add_to_channel = subscribe
    remove_from_channel = unsubscribe

    # -- sending ------------------------------------------------------------------------------

    async def broadcast(
        self, message: BroadcastMessage, channel: str | None = None, exclude: Exclude = None
    ) -> int:
        """Send ``message`` to every tracked connection, or to the members of ``channel``.

        ``str`` goes out as a text message, bytes as a binary one, a dict or list as JSON text
        (encoded once). ``exclude`` is a connection, a connection id, or several. Returns how
        many connections were handed the message; it does not wait for any of them. A channel
        with no member counts 0, whether it never existed, was removed, or went away with its
        last member: a handler broadcasting to its own room can always do so.

        With a backend, the message is also published once for the other processes, which
        deliver it to their own connections (``exclude`` names theirs with :meth:`address`).
        The count is still this process's deliveries. ``MessageTooLarge`` (nothing sent) above
        the backend's ``max_message_size``.
        """
        opcode, text, data = _split(message)
        local, remote = _exclusions(exclude, self.backend)
        backend = self.backend
        if backend is not None:
            if data is None:
                data = text.encode()  # type: ignore[union-attr]
            backend.check_size(len(data))
        frame, item = self._encode(opcode, text, data)
        try:
            delivered, overloaded, failed = self._fanout(frame, channel, item, local)
        except KeyError:  # no such channel here: nobody to deliver to
            delivered, overloaded, failed = 0, [], []
        delivered = self._settle(channel, frame, item, delivered, overloaded, failed)
        if backend is not None:
            envelope = backend.pack(opcode, data, {"x": remote} if remote else None)
            published = backend.publish(backend.channel_key(channel), envelope)
            if published is not None:
                await published
        return delivered

    async def send_to(self, connections: Iterable[WebSocket], message: BroadcastMessage) -> int:
        """Send ``message`` to the given connections (tracking any not tracked yet), with the same
        encoding, bounded queues and policy as :meth:`broadcast`; returns how many took it.
        """
        targets = list(connections)
        for ws in targets:
            self._attach(ws)
        frame, item = self._encode(*_split(message))
        return self._send_all(targets, frame, item)

    def _send_all(self, targets: list[WebSocket], frame: bytes, item: Item | None) -> int:
        delivered = 0
        overloaded: list[int] = []
        failed: list[int] = []
        for ws in targets:
            try:
                taken = self._write(ws, frame, item)
            except Exception:  # noqa: BLE001 - a writer raises whatever its broken transport raised
                failed.append(ws.connection_id)
                continue
            if taken:
                delivered += 1
            else:
                overloaded.append(ws.connection_id)
        return self._settle(None, frame, item, delivered, overloaded, failed)

    def _fanout(
        self, frame: bytes, channel: str | None, item: Item | None, exclude: Any
    ) -> tuple[int, list[int], list[int]]:
        """The manager's fan-out. Broadcasts queue their frames, which leave in one write per
        connection at the end of the event-loop turn (corking), except the first broadcast of a
        turn when the last turn with broadcasts had only one: no burst is under way, so that
        one goes straight to every idle socket."""
        if self._outlet_type is None:
            return self._manager.fanout(frame, channel, message=item, exclude=exclude)  # type: ignore[no-any-return]
        count = self._turn_broadcasts
        if not count:
            asyncio.get_running_loop().call_soon(self._end_turn)
        self._turn_broadcasts = count + 1
        direct = not count and self._last_turn_broadcasts <= 1
        return self._manager.fanout(  # type: ignore[no-any-return]
            frame, channel, message=item, exclude=exclude, direct=direct
        )

    def _end_turn(self) -> None:
        self._last_turn_broadcasts = self._turn_broadcasts
        self._turn_broadcasts = 0

    def _encode(
        self, opcode: int, text: str | None, data: bytes | None
    ) -> tuple[bytes, Item | None]:
        """The frame for connections on Haske's protocol and the ASGI message for the others,
        each built only when some tracked connection needs it."""
        frame = b""
        if self._native or self._framed:
            frame = frames.encode_frame(opcode, data if data is not None else text.encode())  # type: ignore[union-attr]
        item: Item | None = None
        if len(self._sockets) > self._native:
            if opcode == frames.OP_BINARY:
                item = ({"type": "websocket.send", "bytes": data}, len(data), frame)  # type: ignore[arg-type]
            else:
                if text is None:
                    text = data.decode()  # type: ignore[union-attr]
                item = ({"type": "websocket.send", "text": text}, len(text), frame)
        return frame, item

    # -- other processes ----------------------------------------------------------------------

    def _receive(self, channel: str | None, opcode: int, options: Any, payload: bytes) -> None:
        """Deliver a broadcast another process published on ``channel`` to the members here."""
        try:
            if not self._manager.count(channel):
                return
        except KeyError:  # the channel went away here meanwhile
            return
        exclude = None
        if options and "x" in options:
            me = self.backend.node
            exclude = [conn_id for node, conn_id in options["x"] if node == me]
        frame, item = self._encode(opcode, None, payload)
        delivered, overloaded, failed = self._fanout(frame, channel, item, exclude)
        self._settle(channel, frame, item, delivered, overloaded, failed)

    def _receive_for(self, targets: list[WebSocket], opcode: int, payload: bytes) -> int:
        """Deliver a message another process published to these connections of this one."""
        frame, item = self._encode(opcode, None, payload)
        return self._send_all(targets, frame, item)

    def _publish(self, key: bytes, message: BroadcastMessage, options: Any = None) -> Any:
        """Publish ``message`` on the backend's ``key`` for the other processes; returns what
        ``backend.publish`` does (a future to await under the ``"raise"`` policy)."""
        backend = self.backend
        opcode, text, data = _split(message)
        if data is None:
            data = text.encode()  # type: ignore[union-attr]
        backend.check_size(len(data))
        return backend.publish(key, backend.pack(opcode, data, options))

    def address(self, ws: WebSocket) -> tuple[str, int]:
        """``(process id, connection id)``: names ``ws`` in ``exclude`` from any process."""
        return node_id().hex(), ws.connection_id

    def health(self) -> dict[str, Any]:
        """The backend's state: always connected in one process; with Redis, see
        :meth:`haske.redis.RedisBackend.health`."""
        if self.backend is None:
            return {"backend": "memory", "connected": True}
        return dict(self.backend.health())

    async def close(self) -> None:
        """Close the backend's connections, once what is queued for it was published (they
        also close by themselves when the event loop ends)."""
        if self.backend is not None:
            await self.backend.close()

    def _write(self, ws: WebSocket, frame: bytes, item: Item | None) -> bool:
        if ws.native:
            return ws._connection.write_frame(frame) is not False
        return ws.outbound.write(item) is not False  # type: ignore[union-attr,arg-type]

    def _settle(
        self,
        channel: str | None,
        frame: bytes,
        item: Item | None,
        delivered: int,
        overloaded: list[int],
        failed: list[int],
    ) -> int:
        """Apply the slow-consumer policy to the overloaded, drop the failed, count."""
        failed = list(failed)
        if overloaded:
            policy = (
                self._policies.get(channel, self.policy) if channel is not None else self.policy
            )
            for conn_id in overloaded:
                ws = self._sockets.get(conn_id)
                if ws is None:
                    continue
                if policy == "close":
                    self._closed += 1
                    ws._finalize()
                    ws._close_soon(1013, "try again later")
                    continue
                self._dropped += 1
                if policy == "drop_oldest":
                    try:
                        if self._make_room(ws, frame, item):
                            delivered += 1
                    except Exception:  # noqa: BLE001 - as in fanout: the connection broke
                        failed.append(conn_id)
        for conn_id in failed:
            ws = self._sockets.get(conn_id)
            if ws is not None:
                self._lost(ws)
        self._broadcasts += 1
        self._delivered += delivered
        return delivered

    def _make_room(self, ws: WebSocket, frame: bytes, item: Item | None) -> bool:
        """Discard the oldest queued data to fit the new message; True if it then went in."""
        if ws.native:
            connection = ws._connection
            size = len(frame)
            excess = connection.buffered_amount + size - connection.outbound_limit
            connection.drop_oldest(max(size, excess))
        else:
            outbox = ws.outbound
            size = item[1]  # type: ignore[index]
            excess = outbox.buffered + size - outbox.limit  # type: ignore[union-attr]
            outbox.drop_oldest(max(size, excess))  # type: ignore[union-attr]
        return self._write(ws, frame, item)

    # -- counters -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since creation: broadcasts, deliveries, messages dropped for slow consumers,
        slow consumers closed, connections lost while sending; and current connections/channels.
        """
        return {
            "connections": len(self._sockets),
            "channels": len(self._manager.channels()),
            "broadcasts": self._broadcasts,
            "delivered": self._delivered,
            "dropped": self._dropped,
            "closed": self._closed,
            "failed": self._failed,
        }


def _split(message: BroadcastMessage) -> tuple[int, str | None, bytes | None]:
    """The opcode of a message, and its text or its bytes."""
    if isinstance(message, str):
        return frames.OP_TEXT, message, None
    if isinstance(message, (bytes, bytearray, memoryview)):
        return frames.OP_BINARY, None, bytes(message)
    if isinstance(message, (dict, list)):
        return frames.OP_TEXT, None, _json.dumps_bytes(message)
    raise TypeError(f"cannot broadcast {type(message).__name__}: send str, bytes, a dict or a list")


def _exclusions(exclude: Exclude, backend: Any) -> tuple[list[int] | None, list[list[Any]]]:
    """The ids of this process's connections to leave out, and ``[process, id]`` of others'."""
    if exclude is None:
        return None, []
    items: Iterable[object]
    if isinstance(exclude, (WebSocket, int)) or _is_address(exclude):
        items = (exclude,)
    else:
        items = exclude
    me = node_id().hex()
    ids: list[int] = []
    remote: list[list[Any]] = []
    for item in items:
        if isinstance(item, WebSocket):
            ids.append(item.connection_id)
        elif isinstance(item, int):
            ids.append(item)
        elif _is_address(item):
            node, conn_id = item
            if node == me:
                ids.append(conn_id)
            elif backend is not None:
                remote.append([node, conn_id])
        else:
            raise TypeError(
                "exclude takes WebSockets, connection ids or (process id, connection id) "
                f"pairs, got {type(item).__name__}"
            )
    return ids, remote


def _is_address(item: object) -> TypeGuard[tuple[str, int]]:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
    )


_node: tuple[int, bytes] = (0, b"")


def node_id() -> bytes:
    """This process's random 8-byte id, which tells processes apart on a shared backend."""
    global _node
    if _node[0] != os.getpid():  # a forked worker gets an id of its own
        _node = (os.getpid(), os.urandom(8))
    return _node[1]


def _backend_for(url: str | None) -> Any:
    if not url or url == "memory://":
        return None
    if url.startswith(("redis://", "rediss://", "unix://")):
        from haske.redis import RedisBackend

        return RedisBackend(url)
    raise ValueError(
        f"unsupported broadcast URL {url!r}: use redis://, rediss:// or unix:// "
        "(or none for a broadcaster of this process alone)"
    )


_default: WebSocketBroadcaster | None = None


def get_broadcaster() -> WebSocketBroadcaster:
    """The process-wide broadcaster that ``@websocket_route`` connections are tracked by.

    It is created on first call, with the backend named by the ``HASKE_BROADCAST_URL``
    environment variable (``redis://host:6379/0``), or for this process alone when it is unset.
    """
    global _default
    if _default is None:
        _default = WebSocketBroadcaster(os.environ.get("HASKE_BROADCAST_URL") or None)
    return _default
