"""The Redis backend: one broadcaster, many processes.

``WebSocketBroadcaster(url="redis://...")``, or ``HASKE_BROADCAST_URL`` for the default
broadcaster, publishes every broadcast once on Redis pub/sub; each process delivers it to its own
connections, encoding the frame once per process. Delivery is at most once, in order per publisher
and channel. The backend connects on first use, reconnects by itself with jittered exponential
backoff, resubscribes every channel, and checks with a periodic self-addressed probe that its
subscriber still hears what is published.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import InvalidResponse, ResponseError

from haske import _json
from haske.broadcast import node_id

if TYPE_CHECKING:
    from haske.redis_presence import RedisPresence
    from haske.sessions import LiveSessionManager

__all__ = ["BackendUnavailable", "MessageTooLarge", "PublishPolicy", "RedisBackend"]

logger = logging.getLogger("haske.redis")

PublishPolicy = Literal["buffer", "raise"]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
DEFAULT_BUFFER_LIMIT = 8 << 20
#: Bytes asked of a connection to Redis per read: every reply already there, in one go.
READ_SIZE = 1 << 18

#: Envelope of a published message: format version, opcode, origin process, options length.
_HEADER = struct.Struct("!BB8sI")
_FORMAT = 1
_PROBE = struct.Struct("!Qd")

#: Called in the subscriber's task with a message another process published: its opcode, the
#: options it was published with, and its payload.
Handler = Callable[[int, Any, bytes], None]
#: Called with the bytes published on a channel, as they are (for scripts' messages).
RawHandler = Callable[[bytes], None]
Listener = Callable[[], Any]


class BackendUnavailable(ConnectionError):
    """Redis could not take a message (``publish_policy="raise"``): other processes missed it."""


class MessageTooLarge(ValueError):
    """A message is over the backend's ``max_message_size``; nothing was sent."""


def unpack(data: bytes) -> tuple[int, bytes, Any, bytes]:
    """``(opcode, origin process, options, payload)`` of a message published with ``pack``."""
    version, opcode, origin, size = _HEADER.unpack_from(data)
    if version != _FORMAT:
        raise ValueError(f"unknown message format {version}")
    start = _HEADER.size
    options = _json.loads(data[start : start + size]) if size else None
    return opcode, origin, options, data[start + size :]


def command(*args: bytes) -> bytes:
    """A Redis command as RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    def __init__(self, end: int) -> None:
        self.end = end  # the buffer length that may hold the reply


def _parse(buffer: bytes, pos: int) -> tuple[Any, int]:
    """The RESP2 reply at ``pos`` and where the next one starts; :class:`_Incomplete` if the
    buffer stops before its end."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete(len(buffer) + 1)
    kind, line = buffer[pos], buffer[pos + 1 : end]
    if kind == 0x24:  # $: a bulk string
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buffer) < stop + 2:
            raise _Incomplete(stop + 2)
        return buffer[end + 2 : stop], stop + 2
    if kind == 0x2A:  # *: an array
        count = int(line)
        pos = end + 2
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 0x3A:  # :
        return int(line), end + 2
    if kind == 0x2B:  # +
        return line, end + 2
    if kind == 0x2D:  # -
        return ResponseError(line.decode(errors="replace")), end + 2
    raise InvalidResponse(f"unexpected reply from Redis: {buffer[pos:end][:64]!r}")


class RespReader:
    """Splits the replies Redis sends out of the bytes read from it (RESP2), without copying a
    read's bytes once per reply."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._unread = 0  # bytes fed and not parsed yet
        self._need = 0  # of them, the least the next reply takes

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._unread += len(data)

    def gets(self) -> Any:
        """The next complete reply (an error reply as :class:`ResponseError`), or False until
        more bytes are fed."""
        if self._unread < self._need or not self._unread:
            return False
        if self._chunks:
            rest = self._buffer[self._pos :]
            chunks = self._chunks
            self._buffer = chunks[0] if not rest and len(chunks) == 1 else rest + b"".join(chunks)
            self._pos = 0
            self._chunks = []
        try:
            reply, pos = _parse(self._buffer, self._pos)
        except _Incomplete as incomplete:
            # A big message arriving in many reads is joined once it is all there.
            self._need = incomplete.end - self._pos
            return False
        self._unread -= pos - self._pos
        self._pos, self._need = pos, 0
        return reply


def _streams(connection: AbstractConnection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # redis-py connects (TLS, AUTH, SELECT); past that the backend reads and writes the streams
    # itself: all the replies of a read parsed in one go, and each write made at once.
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        raise ConnectionError("the Redis connection closed as it opened")
    return reader, writer


async def _replies(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """The replies Redis sends on a connection, until it closes it (``ConnectionError``). All
    those of one read come before the next read, in the same event-loop turn: a subscriber hands
    every message that arrived together to the fan-out at once."""
    parser = RespReader()
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ConnectionError("Redis closed the connection")
        parser.feed(data)
        while (reply := parser.gets()) is not False:
            yield reply


def redact(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


class RedisBackend:
    """Redis pub/sub for a :class:`~haske.broadcast.WebSocketBroadcaster` (and its sessions).

    - ``prefix`` starts every Redis channel and key name; broadcasters that share a Redis server
      (pub/sub ignores the database number) need different prefixes.
    - ``publish_policy``: while Redis is unreachable, ``"buffer"`` (the default) keeps messages to
      publish, up to ``buffer_limit`` bytes (then the oldest go), and sends them once it is back;
      ``"raise"`` makes ``broadcast()`` wait for Redis to take each message and raise
      :class:`BackendUnavailable` when it could not, after delivering it locally.
    - ``max_message_size``: bytes a message may have; more raises :class:`MessageTooLarge`.
    - ``backoff``: first and largest delay, in seconds, between reconnection attempts.
    - ``probe_interval``: seconds between self-addressed probes; a probe that does not come back
      by the next one restarts the subscriber.
    - ``lease``: seconds a crashed process's sessions stay listed before the others remove them.
    - ``timeout``: seconds to connect, and for a command to answer.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "haske",
        publish_policy: PublishPolicy = "buffer",
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        backoff: tuple[float, float] = (0.1, 5.0),
        probe_interval: float = 5.0,
        lease: float = 15.0,
        timeout: float = 5.0,
    ) -> None:
        if publish_policy not in ("buffer", "raise"):
            raise ValueError(f'publish_policy is "buffer" or "raise", got {publish_policy!r}')
        if max_message_size <= 0 or buffer_limit <= 0:
            raise ValueError("max_message_size and buffer_limit are positive numbers of bytes")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError("backoff is (first delay, largest delay), with 0 < first <= largest")
        if probe_interval <= 0 or lease <= 0 or timeout <= 0:
            raise ValueError("probe_interval, lease and timeout are positive numbers of seconds")
        # Parse now so that a bad URL fails where the broadcaster is made.
        ConnectionPool.from_url(url)
        self.url = url
        self.prefix = prefix
        self.publish_policy: PublishPolicy = publish_policy
        self.buffer_limit = buffer_limit
        self.max_message_size = max_message_size
        self.backoff = backoff
        self.probe_interval = probe_interval
        self.lease = lease
        self.timeout = timeout
        self._handlers: dict[bytes, tuple[Callable[..., None], bool]] = {}
        # This process's id, read again when the backend starts (in a forked worker, say).
        self._node = node_id()
        self._listeners: list[Listener] = []
        self.presences: list[RedisPresence] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._pool: ConnectionPool | None = None
        self._client: Redis | None = None
        # The subscriber's connection while it is up.
        self._subscriber_writer: asyncio.StreamWriter | None = None
        self._connected_to: AbstractConnection | None = None
        self._subscribing: set[bytes] = set()
        self._confirmations: dict[bytes, list[asyncio.Future[bool]]] = {}
        self._ready = False
        self._connecting = False
        self._publisher_down = False
        # Messages waiting for the publishing connection, and their bytes.
        self._queue: collections.deque[tuple[bytes, bytes, asyncio.Future[int] | None]] = (
            collections.deque()
        )
        self._queued = 0
        # The publishing connection while it is up; what it was given and Redis has not
        # answered yet, in order; PUBLISH commands held for the end of this event-loop turn.
        self._publisher_writer: asyncio.StreamWriter | None = None
        self._in_flight: collections.deque[asyncio.Future[int] | None] = collections.deque()
        self._cork: list[bytes] | None = None
        # Set when Redis answers again: the publisher stops waiting to reconnect.
        self._wake: asyncio.Event | None = None
        self._probe: tuple[int, float] | None = None
        self._probes = 0
        self._rtt: float | None = None
        self._connections = 0
        self._published = 0
        self._received = 0
        self._dropped = 0
        self._errors = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"<RedisBackend {redact(self.url)} prefix={self.prefix!r}>"

    # -- names ---------------------------------------------------------------------------------

    def key(self, *parts: str) -> bytes:
        """A Redis channel or key name under this backend's prefix."""
        return ":".join((self.prefix, *parts)).encode()

    def channel_key(self, channel: str | None) -> bytes:
        """The Redis channel of a broadcaster channel (None: every connection)."""
        return self.key("all") if channel is None else self.key("c", channel)

    @property
    def node(self) -> str:
        """This process's id on the backend."""
        return node_id().hex()

    def pack(self, opcode: int, payload: bytes, options: Any = None) -> bytes:
        """The published form of a message: a small header (with this process's id, so that it
        skips its own messages), the JSON ``options`` if any, the payload."""
        extra = _json.dumps_bytes(options) if options else b""
        return _HEADER.pack(_FORMAT, opcode, node_id(), len(extra)) + extra + payload

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the running event loop; done on first use."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError(
                "this broadcaster's Redis backend runs in another event loop: "
                "a broadcaster belongs to one event loop"
            )
        # A first start, or a new loop after the old one ended (a test client, say).
        self._loop = loop
        self._closed = False
        self._node = node_id()
        self._queue.clear()
        self._queued = 0
        self._in_flight.clear()
        self._cork = None
        self._confirmations.clear()
        self._subscriber_writer = self._publisher_writer = None
        self._ready = self._publisher_down = False
        self._probe = None
        self._wake = asyncio.Event()
        kwargs: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
            # Pub/sub replies as plain arrays, whichever protocol the redis client defaults to.
            "protocol": 2,
        }
        self._pool = ConnectionPool.from_url(self.url, **kwargs)
        self._client = Redis(connection_pool=self._pool)
        work = {
            "subscriber": self._subscriber,
            "publisher": self._publisher,
            "prober": self._prober,
            "keeper": self._keeper,
        }
        self._tasks = {
            name: loop.create_task(run(), name=f"haske-redis-{name}") for name, run in work.items()
        }

    def start_if_running(self) -> None:
        """:meth:`start` when called in an event loop, unless :meth:`close` was called."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._closed:
            self.start()

    async def connect(self, timeout: float | None = None) -> bool:
        """Start, and wait up to ``timeout`` seconds (default: the backend's) to be subscribed."""
        self.start()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._ready

    async def close(self) -> None:
        """Publish what is queued (for up to ``timeout`` seconds), then close every connection."""
        if self._loop is not asyncio.get_running_loop():
            return
        deadline = time.monotonic() + self.timeout
        while (
            (self._queue or self._in_flight)
            and not self._publisher_down
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.005)
        tasks = [*self._tasks.values(), *self._background]
        self._tasks = {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._disconnect()
        self._loop = None
        self._closed = True

    async def _disconnect(self) -> None:
        self._ready = False
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()

    def _connection(self) -> AbstractConnection:
        assert self._pool is not None
        return self._pool.connection_class(**self._pool.connection_kwargs)

    @property
    def client(self) -> Redis:
        """A Redis client on the backend's pool (for scripts and keys)."""
        self.start()
        assert self._client is not None
        return self._client

    @property
    def connected(self) -> bool:
        """True while the subscriber is subscribed and publishing works."""
        return self._ready and not self._publisher_down

    @property
    def subscribed(self) -> bool:
        """True while the subscriber is subscribed."""
        return self._ready

    def presence(self, manager: LiveSessionManager, name: str) -> RedisPresence:
        """The cluster-wide registry of a session manager, under ``name``."""
        from haske.redis_presence import RedisPresence

        return RedisPresence(self, manager, name)

    def on_connect(self, listener: Listener) -> None:
        """Call ``listener()`` (it may return an awaitable) after each (re)subscription."""
        self._listeners.append(listener)

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"

    def _delay(self, attempt: int) -> float:
        first, largest = self.backoff
        # Full jitter between half and all of the exponential step, so that processes which lost
        # Redis together do not come back in lockstep.
        return float(min(largest, first * 2**attempt) * random.uniform(0.5, 1.0))

    # -- subscribing ---------------------------------------------------------------------------

    def listen(self, channel: bytes, handler: Handler | RawHandler, *, raw: bool = False) -> None:
        """Deliver what other processes publish on ``channel`` to ``handler`` (everything that is
        published, as is, when ``raw``), subscribing now or as soon as Redis is reachable."""
        known = channel in self._handlers
        self._handlers[channel] = (handler, raw)
        if not known:
            self._command(b"SUBSCRIBE", channel)

    def unlisten(self, channel: bytes) -> None:
        """Stop listening to ``channel``."""
        if self._handlers.pop(channel, None) is not None:
            self._command(b"UNSUBSCRIBE", channel)

    async def subscribe(self, channel: bytes, handler: Handler) -> None:
        """:meth:`listen`, then wait (up to ``timeout``) for Redis to confirm, so that whatever is
        published afterwards arrives; no wait while Redis is unreachable."""
        self.start()
        if channel in self._handlers:
            self._handlers[channel] = (handler, False)
            return
        self.listen(channel, handler)
        if self._subscriber_writer is None and not self._connecting:
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, []).append(confirmed)
        try:
            await asyncio.wait_for(confirmed, self.timeout)
        except asyncio.TimeoutError:
            pass

    def _command(self, *args: bytes) -> None:
        # Written at once: SUBSCRIBE and UNSUBSCRIBE reach Redis in call order.
        if self._subscriber_writer is not None:
            self._subscriber_writer.write(command(*args))

    def _release_confirmations(self) -> None:
        # Nobody waits for a confirmation from a connection that is gone.
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(False)
        self._confirmations.clear()

    async def _subscriber(self) -> None:
        attempt = 0
        while True:
            connection = self._connection()
            self._connecting = True
            try:
                await connection.connect()
                reader, self._subscriber_writer = _streams(connection)
                self._connected_to = connection
                self._subscribing = {self._probe_channel, *self._handlers}
                self._command(b"SUBSCRIBE", *self._subscribing)
                async for reply in _replies(reader):
                    if self._on_reply(reply):
                        attempt = 0
            except asyncio.CancelledError:
                await self._end_subscription(connection)
                if self._tasks.get("subscriber") is asyncio.current_task():
                    # The event loop is ending, not close(): close the pool too.
                    await self._disconnect()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke, reconnect
                self._failed(exc)
                if self._ready:
                    logger.warning("lost the Redis subscription (%s); reconnecting", exc)
            await self._end_subscription(connection)
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    async def _end_subscription(self, connection: AbstractConnection) -> None:
        self._subscriber_writer = self._connected_to = None
        self._ready = self._connecting = False
        self._release_confirmations()
        await connection.disconnect(nowait=True)

    def _on_reply(self, reply: Any) -> bool:
        """Handle one pub/sub reply; True when it completed the subscription."""
        if not isinstance(reply, list):
            raise InvalidResponse(f"unexpected reply to the subscriber: {reply!r}")
        kind = reply[0]
        if kind == b"message":
            self._received += 1
            channel, data = reply[1], reply[2]
            if channel == self._probe_channel:
                self._probe_back(data)
                return False
            entry = self._handlers.get(channel)
            if entry is None:
                return False
            handler, raw = entry
            try:
                if raw:
                    handler(data)
                    return False
                opcode, origin, options, payload = unpack(data)
                # This process delivered its own messages when it published them.
                if origin != self._node:
                    handler(opcode, options, payload)
            except Exception:
                logger.exception("delivering a message from Redis channel %r failed", channel)
            return False
        if kind != b"subscribe":
            return False
        channel = reply[1]
        for waiter in self._confirmations.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(True)
        if self._ready or channel not in self._subscribing:
            return False
        self._subscribing.discard(channel)
        if self._subscribing:
            return False
        self._ready, self._connecting = True, False
        self._connections += 1
        self._probe = None
        self._wake.set()  # type: ignore[union-attr]
        for listener in self._listeners:
            outcome = listener()
            if asyncio.iscoroutine(outcome):
                task = asyncio.get_running_loop().create_task(outcome)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return True

    # -- publishing ----------------------------------------------------------------------------

    def check_size(self, size: int) -> None:
        """:class:`MessageTooLarge` if ``size`` bytes are over ``max_message_size``."""
        if size > self.max_message_size:
            raise MessageTooLarge(
                f"a message of {size} bytes is over this broadcaster's limit of "
                f"{self.max_message_size} bytes (RedisBackend(max_message_size=...)): Redis "
                "disconnects subscribers that fall too far behind, and big messages do that"
            )

    def publish(
        self, channel: bytes, data: bytes, *, wait: bool = False
    ) -> asyncio.Future[int] | None:
        """Publish ``data`` on ``channel``, without waiting.

        While the publishing connection is up and keeps up, the first message of an event-loop
        turn is written at once (ahead of the frames the turn queued for this process's own
        connections) and the others together at the end of the turn. Otherwise the message
        waits in a buffer of ``buffer_limit`` bytes.

        Returns a future of the number of Redis subscribers that got it when ``wait`` is True or
        the policy is ``"raise"`` (it fails with :class:`BackendUnavailable`), else None.
        """
        self.start()
        waiting = wait or self.publish_policy == "raise"
        if self._publisher_down and self.publish_policy == "raise":
            raise BackendUnavailable(f"Redis is unreachable ({self._last_error})")
        future: asyncio.Future[int] | None = (
            asyncio.get_running_loop().create_future() if waiting else None
        )
        writer = self._publisher_writer
        if writer is not None and not self._queue and self._keeps_up(writer):
            self._in_flight.append(future)
            self._write(writer, command(b"PUBLISH", channel, data))
            return future
        queue = self._queue
        queue.append((channel, data, future))
        self._queued += len(data)
        while self._queued > self.buffer_limit and len(queue) > 1:
            _, old, waiter = queue.popleft()
            self._queued -= len(old)
            self._dropped += 1
            if waiter is not None and not waiter.done():
                waiter.set_exception(BackendUnavailable("the publish buffer overflowed"))
        return future

    def _keeps_up(self, writer: asyncio.StreamWriter) -> bool:
        # Past this, messages wait in the bounded buffer rather than in the transport's.
        return writer.transport.get_write_buffer_size() <= self.buffer_limit

    def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self._cork is None:
            writer.write(data)
            self._cork = []
            asyncio.get_running_loop().call_soon(self._uncork)
        else:
            self._cork.append(data)

    def _uncork(self) -> None:
        cork, self._cork = self._cork, None
        if cork and self._publisher_writer is not None:
            self._publisher_writer.write(b"".join(cork))

    def _write_queue(self, writer: asyncio.StreamWriter) -> None:
        """Write what waits in the buffer, after what is held for the end of this turn."""
        self._uncork()
        queue = self._queue
        commands = []
        while queue:
            channel, data, future = queue.popleft()
            commands.append(command(b"PUBLISH", channel, data))
            self._in_flight.append(future)
        self._queued = 0
        writer.write(b"".join(commands))

    def _fail_waiting(self, exc: BaseException) -> None:
        # A message somebody waits for is not kept for later: they are told now.
        kept: collections.deque[tuple[bytes, bytes, asyncio.Future[int] | None]] = (
            collections.deque()
        )
        for item in self._queue:
            future = item[2]
            if future is None:
                kept.append(item)
                continue
            self._queued -= len(item[1])
            if not future.done():
                future.set_exception(BackendUnavailable(f"Redis is unreachable ({exc})"))
                future.exception()  # a probe's future may have nobody left to read it
        self._queue = kept

    async def _publisher(self) -> None:
        wake = self._wake
        assert wake is not None
        attempt = 0
        while True:
            connection = self._connection()
            try:
                await connection.connect()
                reader, writer = _streams(connection)
            except asyncio.CancelledError:
                await connection.disconnect(nowait=True)
                raise
            except Exception as exc:  # noqa: BLE001 - unreachable: keep, retry later
                self._failed(exc)
                self._publisher_down = True
                self._fail_waiting(exc)
                await connection.disconnect(nowait=True)
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), self._delay(attempt))
                except asyncio.TimeoutError:
                    pass
                attempt += 1
                continue
            attempt = 0
            self._publisher_down = False
            try:
                await self._publish_on(reader, writer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke, reconnect
                self._failed(exc)
            finally:
                self._end_publishing()
                await connection.disconnect(nowait=True)
            # A connection that Redis keeps closing is not opened again in a tight loop.
            await asyncio.sleep(self._delay(0))

    async def _publish_on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Publish on a new connection, first what waited for it; read Redis's answers."""
        if self._queue:
            self._write_queue(writer)
        self._publisher_writer = writer
        async for reply in _replies(reader):
            self._answered(reply)
            if self._queue and self._keeps_up(writer):
                self._write_queue(writer)

    def _answered(self, reply: Any) -> None:
        if not self._in_flight:
            raise InvalidResponse(f"unexpected reply to the publisher: {reply!r}")
        future = self._in_flight.popleft()
        if isinstance(reply, ResponseError):
            self._failed(reply)
            self._dropped += 1
            if future is not None and not future.done():
                future.set_exception(BackendUnavailable(f"Redis refused a message ({reply})"))
                future.exception()  # a probe's future may have nobody left to read it
            return
        self._published += 1
        if future is not None and not future.done():
            future.set_result(int(reply))

    def _end_publishing(self) -> None:
        # What Redis has not answered may or may not have been published: it is never resent.
        self._publisher_writer = self._cork = None
        exc = BackendUnavailable(f"Redis connection lost ({self._last_error})")
        in_flight, self._in_flight = self._in_flight, collections.deque()
        self._dropped += len(in_flight)
        for future in in_flight:
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()

    # -- probing -------------------------------------------------------------------------------

    @property
    def _probe_channel(self) -> bytes:
        return self.key("probe", self.node)

    async def _prober(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            if not self._ready:
                self._probe = None
                continue
            if self._probe is not None:
                await self._restart_subscriber("a probe did not come back")
                continue
            self._probes += 1
            probe = self._probe = (self._probes, time.monotonic())
            try:
                receivers = await asyncio.wait_for(
                    self.publish(self._probe_channel, _PROBE.pack(*probe), wait=True),  # type: ignore[arg-type]
                    self.probe_interval,
                )
            except (BackendUnavailable, asyncio.TimeoutError) as exc:
                # The publishing side is in trouble, which says nothing about the subscriber.
                writer = self._publisher_writer
                if isinstance(exc, asyncio.TimeoutError) and writer is not None:
                    # Redis left the publisher unanswered: it connects again.
                    writer.close()
                if self._probe == probe:
                    self._probe = None
                continue
            if receivers == 0 and self._probe == probe:
                await self._restart_subscriber("Redis has no subscription for this process")

    def _probe_back(self, data: bytes) -> None:
        sequence, sent = _PROBE.unpack(data)
        if self._probe is not None and self._probe[0] == sequence:
            self._rtt = time.monotonic() - sent
            self._probe = None

    async def _restart_subscriber(self, reason: str) -> None:
        logger.warning("the Redis subscriber stopped receiving (%s); restarting it", reason)
        self._failed(RuntimeError(reason))
        self._probe = None
        connection = self._connected_to
        if connection is not None:
            # The reader sees its connection close and goes through the usual reconnection.
            await connection.disconnect(nowait=True)

    # -- presence leases -----------------------------------------------------------------------

    def lease_key(self, node: str) -> bytes:
        return self.key("lease", node)

    async def renew_lease(self) -> bool:
        """Extend this process's lease; False if it had run out (or never existed)."""
        client = self.client
        milliseconds = int(self.lease * 1000)
        key = self.lease_key(self.node)
        if await client.set(key, b"1", px=milliseconds, xx=True):
            return True
        await client.set(key, b"1", px=milliseconds)
        return False

    async def _keeper(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self.presences or not self._ready:
                continue
            try:
                renewed = await self.renew_lease()
                for presence in list(self.presences):
                    await presence.tick(renewed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis trouble: next round
                self._failed(exc)

    # -- health --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The state of the backend: connected, probe RTT, reconnects and message counters.

        Asking is a first use: it starts the backend when called in an event loop.
        """
        self.start_if_running()
        return {
            "backend": "redis",
            "url": redact(self.url),
            "node": self.node,
            "connected": self.connected,
            "last_probe_rtt": self._rtt,
            "reconnects": max(0, self._connections - 1),
            "buffered": len(self._queue),
            "published": self._published,
            "received": self._received,
            "dropped": self._dropped,
            "errors": self._errors,
            "last_error": self._last_error,
        }
