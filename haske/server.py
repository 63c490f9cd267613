"""Haske's WebSocket protocol for uvicorn: ``uvicorn app:app --ws haske.server:WebSocketProtocol``.

(uvicorn takes that import path from 0.36 on; with 0.30 to 0.35 pass the class itself, as
``haske.run()`` does.)

The asyncio glue around :class:`haske.connection.Connection`: it checks the upgrade with the
handshake backend, runs the ASGI app, and moves bytes between the transport and the connection.
What every message goes through (``data_received``, ASGI ``receive`` and ``send``,
``write_frame``, the flush) is the ``ProtocolCore`` base class that the capability probe chose
(:mod:`haske._pure.protocol` or its compiled twin).

Outgoing frames are corked: whatever is sent during one event-loop turn (ASGI sends, broadcast
frames, pongs) leaves in a single ``transport.write``. A message that finds the app waiting in
``receive`` steps the app's task from ``data_received`` itself, in the task's own context,
rather than on the loop's next turn (unless a task is running there, or something else waits on
the same ``receive``); what the app sends before it waits again is written, in one piece, as
soon as it does. While the transport is over its high-water mark, frames wait in the
connection's queue, where :meth:`WebSocketProtocol.drop_oldest` can still discard them, and
reading stops so that a peer that does not read cannot make us buffer replies without bound.

Per-message deflate is never negotiated: an offer is declined by leaving it out of the response.

:class:`HttpProtocol` is uvicorn's HTTP protocol with a handshake timeout; ``haske.run()`` uses
both (``uvicorn app:app --http haske.server:HttpProtocol --ws haske.server:WebSocketProtocol``).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools
import logging
import random
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

import h11
from starlette.websockets import WebSocketDisconnect
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornH11Protocol

from haske import _backends, limits
from haske._backends import handshake
from haske._pure.protocol import (
    ACCEPTED,
    CONNECTING,
    DONE,
    HEAD,
    PAUSE_FAILED,
    PAUSE_HANDSHAKE,
    PAUSE_QUEUE,
    PAUSE_WRITE,
    RESPONDING,
)
from haske.connection import (
    ERROR,
    FRAME,
    OP_CLOSE,
    OP_PONG,
    OPEN,
    Connection,
)
from haske.exceptions import ConnectionClosed, HandshakeError

if TYPE_CHECKING:
    from haske._pure.protocol import ProtocolCore
else:
    ProtocolCore = _backends.protocol.ProtocolCore

# Transports that write what they are given, as is, to the socket they own (uvloop's and
# asyncio's); a frame sent to that socket directly while their buffer is empty stays in order.
_SOCKET_TRANSPORTS = frozenset({"TCPTransport", "UnixTransport", "_SelectorSocketTransport"})

_STATUS_PHRASES = {status.value: status.phrase for status in HTTPStatus}

_connection_ids = itertools.count(1)

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_TASK_NAME = "haske.websocket"  # one name for every connection's task, not a string each
_NO_OPTIONS: dict[str, Any] = {}
# Where the end of every app task is handled: a done callback otherwise holds a copy of the
# context it was added in for as long as the connection. The callback sets no context variable.
_CALLBACK_CONTEXT = contextvars.Context()

#: Header names (lowercased) that nearly every upgrade request carries, and whole headers that
#: are the same in most: every scope refers to these instead of holding its own copies.
_SHARED_NAMES = {
    name: name
    for name in (
        b"host",
        b"upgrade",
        b"connection",
        b"origin",
        b"user-agent",
        b"cookie",
        b"authorization",
        b"pragma",
        b"cache-control",
        b"accept-encoding",
        b"accept-language",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    )
}
_SHARED_HEADERS = {
    header: header
    for header in (
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"connection", b"upgrade"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-version", b"13"),
        (b"pragma", b"no-cache"),
        (b"cache-control", b"no-cache"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    )
}

#: Headers whose values tend to repeat across connections (a server has one Host): each scope
#: refers to the previous connection's header when it carries the same one.
_REPEATING_NAMES = frozenset({b"host", b"origin", b"user-agent"})
_last_headers: dict[bytes, tuple[bytes, bytes]] = {}

#: Stand-ins for the proxy-headers middleware instances of uvicorn (see ``_call_app``).
_proxy_stand_ins: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

#: Open WebSocket connections per uvicorn server (its ``server_state``), for ``max_connections``.
_open_connections: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _phrase(status: int) -> str:
    return _STATUS_PHRASES.get(status, "")


class _Flusher:
    """Writes out, once per event-loop turn, every connection of one loop that queued frames.

    One callback per turn for the whole process instead of one per connection: a fan-out to N
    connections would otherwise allocate N handles per message, and the garbage collector would
    keep walking them. It holds no reference to its loop, so that it goes with it.
    """

    __slots__ = ("dirty", "handle")

    def __init__(self) -> None:
        self.dirty: list[WebSocketProtocol] = []
        self.handle: asyncio.Handle | None = None

    def add(self, protocol: WebSocketProtocol) -> None:
        self.dirty.append(protocol)
        outlet = protocol._outlet
        if outlet is not None:
            outlet.direct = False  # what is queued goes first: nothing may be written past it
        if self.handle is None:
            self.handle = protocol.loop.call_soon(self.run)

    def run(self) -> None:
        self.handle = None
        dirty, self.dirty = self.dirty, []
        for protocol in dirty:
            try:
                protocol._flush()
            except Exception as exc:  # noqa: BLE001 - one broken transport must not stall the rest
                protocol.loop.call_exception_handler(
                    {"message": "WebSocket flush failed", "exception": exc, "protocol": protocol}
                )


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher()
    return flusher


class WebSocketProtocol(ProtocolCore, asyncio.Protocol):
    """An uvicorn WebSocket protocol; the instance is also ``scope["extensions"]["haske.websocket"]``.

    As the scope extension it offers frame-level access and writes of pre-encoded frames:

    - ``write_frame(data)`` queues pre-encoded frames, or returns False without queueing them
      when ``buffered_amount + len(data)`` would pass ``outbound_limit`` (a frame larger than
      the limit is still taken while nothing is buffered).
    - ``drop_oldest(nbytes)`` discards queued, unwritten complete messages (never control frames).
    - ``receive_frame()``: after the first call, data frames are delivered one by one as the
      codec's ``Frame`` instead of reassembled ASGI messages (from the next message on). Text
      frames are still checked as UTF-8, size limits still apply, and pings, pongs and close are
      still handled by the protocol. It raises ``ConnectionClosed`` once the connection is closed.
    - ``send_frame(frame)``, ``ping(payload)`` (awaits the pong, returns the round-trip time in
      seconds) and ``pong(payload)``.

    The settings below are read once per connection. uvicorn has no flag for them: override them
    in a subclass (``--ws mymodule:MyProtocol``), with the ``HASKE_*`` environment variables
    (see :mod:`haske.limits`) or with the keyword arguments of ``haske.run()``.
    """

    #: Largest incoming frame in bytes (``HASKE_WS_MAX_FRAME_SIZE``); None: ``ws_max_size``. A
    #: bigger frame closes the connection with 1009 as soon as its header arrives.
    max_frame_size: int | None = limits.MAX_FRAME_SIZE
    #: Seconds without a data message either way before closing with 1001 "idle"
    #: (``HASKE_WS_IDLE_TIMEOUT``); pings and pongs do not count. None: never.
    idle_timeout: float | None = limits.IDLE_TIMEOUT
    #: Open WebSocket connections this server takes (``HASKE_MAX_CONNECTIONS``); past it, the
    #: handshake is answered with HTTP 503 before the app runs. None: no limit.
    max_connections: int | None = limits.MAX_CONNECTIONS
    #: Seconds the peer has to answer our close frame before the transport is aborted. After a
    #: protocol error, also how long the app has to take the messages that came before it.
    close_timeout = limits.CLOSE_TIMEOUT
    #: Default ``outbound_limit`` in bytes.
    default_outbound_limit = limits.OUTBOUND_LIMIT

    # Every per-connection attribute is a slot (those every message touches are the core's):
    # with more than 30 attributes, an instance dictionary would cost about 1.6 KiB per
    # connection.
    __slots__ = (
        "_accept_key",
        "_close_timer",
        "_counted",
        "_drain_waiters",
        "_early",
        "_fail_timer",
        "_frame_waiter",
        "_frames",
        "_head",
        "_idle_timer",
        "_outlet_seen",
        "_ping_timer",
        "_pings",
        "_pong_timer",
        "_quiet_since",
        "_response",
        "app",
        "app_state",
        "client",
        "config",
        "connection_id",
        "connections",
        "default_headers",
        "logger",
        "max_size",
        "ping_interval",
        "ping_timeout",
        "root_path",
        "scheme",
        "scope",
        "server",
        "server_state",
        "tasks",
    )  # fmt: skip

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.root_path: str = config.root_path
        self.app_state = app_state
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.default_headers: list[tuple[bytes, bytes]] = getattr(
            server_state, "default_headers", []
        )
        # Settings that older uvicorn versions may not have.
        self.max_size: int = getattr(config, "ws_max_size", limits.MAX_MESSAGE_SIZE)
        self.max_queue: int = getattr(config, "ws_max_queue", limits.MAX_QUEUE) or limits.MAX_QUEUE
        self.ping_interval: float | None = getattr(config, "ws_ping_interval", limits.PING_INTERVAL)
        self.ping_timeout: float | None = getattr(config, "ws_ping_timeout", limits.PING_TIMEOUT)

        #: Unique among this process's connections.
        self.connection_id = next(_connection_ids)
        #: ``write_frame`` refuses frames past this many buffered bytes.
        self.outbound_limit = self.default_outbound_limit

        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.scope: dict[str, Any] = {}
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"

        self._state = HEAD
        self._head = b""
        self._early = b""
        self._accept_key = ""
        self._conn = Connection(
            max_message_size=self.max_size, max_frame_size=self.max_frame_size, defer_failure=True
        )
        self._counted = False
        self._response: tuple[int, list[tuple[bytes, bytes]], list[bytes]] | None = None

        # ASGI messages and, in frame mode, frames waiting for the app: lists, not deques,
        # since an empty deque holds a 64-slot block and these stay short (max_queue). The
        # frame list, like the other lists below, is only made once it is needed.
        self._inbox: list[dict[str, Any]] = []
        # The receive waiting for the next message, which is set as its result.
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._frames: list[Any] | None = None
        self._frame_waiter: asyncio.Future[None] | None = None
        self._disconnect: dict[str, Any] | None = None

        self._paused = 0
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._flusher = _flusher(self.loop)
        self._dirty = False  # queued in self._flusher for this turn's flush
        # Broadcast frames written straight to the socket while nothing is queued (see outlet()).
        self._outlet: Any = None
        self._outlet_seen = 0
        self._close_timer: asyncio.TimerHandle | None = None
        # A protocol error waiting for the app to take the messages that came before it.
        self._failure: tuple[int, str] | None = None
        self._fail_timer: asyncio.TimerHandle | None = None

        # Pings in flight, oldest first: [payload, sent at, future or None for keepalive].
        self._pings: list[tuple[bytes, float, asyncio.Future[float] | None]] | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None

        # Idle timeout: set on every data message either way, cleared by each check.
        self._active = False
        self._quiet_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Record the transport; uvicorn then passes the request head to ``data_received``."""
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.server = _address(transport, "sockname")
        self.client = cast("tuple[str, int] | None", _address(transport, "peername"))
        self.scheme = "wss" if transport.get_extra_info("sslcontext") else "ws"

    def eof_received(self) -> bool | None:
        """Let the transport close; ``connection_lost`` reports it."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the app (1006 unless a close frame was exchanged) and release every waiter."""
        self.connections.discard(self)
        if self._counted:
            self._counted = False
            _open_connections[self.server_state] -= 1
        previous = self._state
        self._state = DONE
        if self._outlet is not None:
            self._outlet.direct = False
        conn = self._conn
        conn.receive_eof()
        conn.data_to_send()
        self._stop_timers()
        if previous != HEAD:
            self._deliver_disconnect(conn.close_code, conn.close_reason)
        pings = self._pings
        if pings:
            self._pings = None
            closed = ConnectionClosed(conn.close_code, conn.close_reason or None)
            for _, _, future in pings:
                if future is not None and not future.done():
                    future.set_exception(closed)
        self._release_drain_waiters()
        if exc is None:
            self.transport.close()

    def pause_writing(self) -> None:
        """The transport is over its high-water mark: queue frames, stop reading."""
        self._write_paused = True
        if self._outlet is not None:
            self._outlet.direct = False
        if self._conn.state == OPEN:
            self._pause_reading(PAUSE_WRITE)

    def resume_writing(self) -> None:
        """The transport drained: write what was queued and let senders go on."""
        self._write_paused = False
        self._flush()
        self._release_drain_waiters()
        self._resume_reading(PAUSE_WRITE)

    def shutdown(self) -> None:
        """uvicorn is stopping: close with 1012 (Service Restart)."""
        if self._state == ACCEPTED and self._conn.state == OPEN:
            self._close(1012, "server shutting down")
        elif self._state in (HEAD, CONNECTING):
            self._reject(503, "Service Unavailable")
        elif self._close_timer is None:
            self._close_transport()

    # The opening handshake

    def _data_before_open(self, data: bytes) -> None:
        if self._state == HEAD:
            self._request_head(data)
        elif self._state == CONNECTING:
            # The peer should wait for our response; keep what it sent early for after it.
            self._early += data
            self._pause_reading(PAUSE_HANDSHAKE)

    def _request_head(self, data: bytes) -> None:
        self._head += data
        try:
            request = handshake.parse_request(self._head)
        except HandshakeError as exc:
            self._reject(exc.status, exc.reason)
            return
        if request is None:
            return
        self._head = b""
        validation = handshake.validate_request(
            request.method, request.http_version, request.headers
        )
        if not validation:
            self._reject(validation.status, validation.reason)
            return
        if self.max_connections is not None:
            count = _open_connections.get(self.server_state, 0)
            if count >= self.max_connections:
                self.logger.warning(
                    "WebSocket connection limit (%d) reached: refused with 503",
                    self.max_connections,
                )
                self._reject(503, "too many connections")
                return
            _open_connections[self.server_state] = count + 1
            self._counted = True
        self._accept_key = validation.accept
        raw_path, _, query = request.target.partition(b"?")
        path = unquote(raw_path.decode("latin-1"))
        # The scope stays in memory as long as the connection: what is the same for every
        # connection is shared rather than copied.
        self.scope = {
            "type": "websocket",
            "asgi": _ASGI,
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": self.root_path,
            "path": sys.intern(self.root_path + path),
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": query,
            "headers": _scope_headers(request.headers),
            "subprotocols": validation.subprotocols or (),
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": _NO_OPTIONS, "haske.websocket": self},
        }
        self._state = CONNECTING
        self._inbox.append({"type": "websocket.connect"})
        self._start_app()

    def _reject(self, status: int, reason: str) -> None:
        # build_rejection adds Sec-WebSocket-Version to a 426 and uses the reason as the body.
        self._respond(status, reason, list(self.default_headers), b"")

    def _respond(
        self, status: int, reason: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self._state = DONE
        if not self.transport.is_closing():
            self.transport.write(handshake.build_rejection(status, reason, headers, body))
            self.transport.close()

    # The ASGI app

    def _start_app(self) -> None:
        # The task runs the app's own coroutine and a callback handles its end: a coroutine of
        # ours around it would stay in memory as long as the connection.
        try:
            task = self.loop.create_task(
                _call_app(self.app, self.scope, self.receive, self.send), name=_TASK_NAME
            )
        except Exception:
            self.logger.exception("Exception in ASGI application\n")
            self._app_failed()
            return
        self.tasks.add(task)
        task.add_done_callback(self._app_done, context=_CALLBACK_CONTEXT)

    def _app_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            self._app_failed()
            return
        exc = task.exception()
        if isinstance(exc, WebSocketDisconnect):
            pass  # the peer went away and the app let the exception escape: a normal end
        elif exc is not None:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            self._app_failed()
            return
        else:
            result = task.result()
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self._state == CONNECTING:
            self.logger.error("ASGI callable returned without completing handshake.")
            self._reject(500, "Internal Server Error")
        elif self._state == ACCEPTED and self._conn.state == OPEN:
            self._close(1000, "")
        elif self._close_timer is None:
            self._close_transport()

    def _app_failed(self) -> None:
        if self._state == CONNECTING:
            self._reject(500, "Internal Server Error")
        elif self._state == ACCEPTED and self._conn.state == OPEN:
            self._close(1011, "internal error")
        elif self._close_timer is None:
            self._close_transport()

    def _next_message(self) -> Awaitable[dict[str, Any]]:
        """What ``receive`` returns, as a future when it can be: awaiting it directly saves a
        coroutine frame in the memory of every connection that waits for a message."""
        inbox = self._inbox
        if not inbox and self._failure is not None:
            self._fail_now()  # the app took every message that came before the error
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        if inbox:
            future.set_result(inbox.pop(0))
            if self._paused & PAUSE_QUEUE:
                self._resume_reading_queue()
        elif self._disconnect is not None:
            future.set_result(self._disconnect)
        else:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                return self._next_message_after(waiter)
            self._waiter = future
        return future

    async def _next_message_after(self, waiter: asyncio.Future[Any]) -> dict[str, Any]:
        # Another receive waits for the next message: this one takes a later one.
        await asyncio.wait((waiter,))
        return await self._next_message()

    def _send_before_accept(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "websocket.accept":
            headers = [*self.default_headers, *_headers(message)]
            response = handshake.build_response(
                self._accept_key, message.get("subprotocol"), None, headers
            )
            self._accept_key = ""
            self._log_response("[accepted]")
            self._state = ACCEPTED
            self.transport.write(response)
            self._start_keepalive()
            if self.idle_timeout:
                self._quiet_since = self.loop.time()
                self._idle_timer = self.loop.call_later(self.idle_timeout / 4, self._idle_check)
            early = self._early
            if early:
                self._early = b""
                self.data_received(early)
            self._resume_reading(PAUSE_HANDSHAKE)
        elif kind == "websocket.close":
            self._log_response("403")
            self._deliver_disconnect(1006, "")
            self._reject(403, "Forbidden")
        elif kind == "websocket.http.response.start":
            status = message["status"]
            if not 200 <= status < 600:
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            self._log_response(str(status))
            self._state = RESPONDING
            self._response = (status, _headers(message), [])
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                f"'websocket.http.response.start' but got {kind!r}."
            )

    def _send_response_body(self, kind: str, message: dict[str, Any]) -> None:
        if kind != "websocket.http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'websocket.http.response.body' but got {kind!r}."
            )
        assert self._response is not None
        status, headers, body = self._response
        body.append(message.get("body", b""))
        if not message.get("more_body", False):
            self._deliver_disconnect(1006, "")
            self._respond(status, _phrase(status), headers, b"".join(body))

    def _log_response(self, outcome: str) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            query = self.scope["query_string"].decode("latin-1")
            path = self.scope["path"] + (f"?{query}" if query else "")
            self.logger.info('%s - "WebSocket %s" %s', client, path, outcome)

    # Incoming events other than data messages

    def _event(self, kind: int, value: Any) -> None:
        if kind == FRAME:
            self._active = True
            frames = self._frames
            assert frames is not None  # receive_frame made it before turning frame mode on
            frames.append(value)
            if len(frames) + len(self._inbox) >= self.max_queue:
                self._pause_reading(PAUSE_QUEUE)
            waiter = self._frame_waiter
            if waiter is not None:
                self._frame_waiter = None
                if not waiter.done():
                    self._wake(waiter, None)  # as data_received does for receive
        elif kind == OP_PONG:
            self._pong_received(value)
        elif kind == OP_CLOSE:
            code, reason = value
            self._stop_timers()
            self._deliver_disconnect(code, reason)
            # Our close frame, or the reply to theirs, is queued: the server closes TCP first.
            self._close_transport()
        elif kind == ERROR:
            self._protocol_error(value)

    def _protocol_error(self, failure: tuple[int, str]) -> None:
        """Stop reading, and fail the connection once the app had the messages before the error.

        The app may answer them first (their replies then reach the peer before the close
        frame); it gets ``close_timeout`` seconds to take them.
        """
        self._failure = failure
        self._pause_reading(PAUSE_FAILED)
        self._stop_keepalive()
        if self._inbox or self._frames or not self._app_waiting():
            self._fail_timer = self.loop.call_later(self.close_timeout, self._fail_now)
        else:
            self._fail_now()

    def _app_waiting(self) -> bool:
        """Whether the app waits in ``receive`` or ``receive_frame``, done with what it took."""
        for waiter in (self._waiter, self._frame_waiter):
            if waiter is not None and not waiter.done():
                return True
        return False

    def _fail_now(self) -> None:
        failure = self._failure
        if failure is None:
            return
        self._failure = None
        self._conn.fail(*failure)
        self._stop_timers()
        self._deliver_disconnect(*failure)
        self._flush(force=True)
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        # The peer may still be sending: closing now, with its bytes unread, would reset the
        # connection and could destroy our close frame on its side. Send FIN instead and drop
        # what arrives until the peer closes too, for at most close_timeout.
        transport.write_eof()
        self._resume_reading(self._paused)
        self._close_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _deliver_disconnect(self, code: int, reason: str) -> None:
        if self._disconnect is not None:
            return
        self._disconnect = message = {
            "type": "websocket.disconnect",
            "code": code,
            "reason": reason,
        }
        self._inbox.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(self._inbox.pop(0))  # as in data_received
        frame_waiter = self._frame_waiter
        if frame_waiter is not None:
            self._frame_waiter = None
            if not frame_waiter.done():
                frame_waiter.set_result(None)

    # Closing

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake; ``ValueError`` for a code that cannot be sent."""
        self._conn.send_close(code, reason)
        self._closing_started(code, reason)

    def _closing_started(self, code: int, reason: str) -> None:
        if self._failure is not None:
            # Nothing more is read after a protocol error: close TCP behind our close frame.
            self._fail_now()
            return
        self._deliver_disconnect(code, reason)
        self._stop_keepalive()
        self._flush(force=True)
        # Nothing we read can queue output any more: read until the peer's close arrives.
        self._resume_reading(self._paused)
        self._close_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        self._close_timer = None
        self.transport.abort()

    def _close_transport(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._flush(force=True)
        self.transport.close()

    def _stop_timers(self) -> None:
        self._stop_keepalive()
        for name in ("_close_timer", "_fail_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    # Writing

    def _schedule_flush(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._flusher.add(self)

    async def _drain(self) -> None:
        waiter = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = [waiter]
        else:
            self._drain_waiters.append(waiter)
        await waiter

    def _release_drain_waiters(self) -> None:
        waiters = self._drain_waiters
        if waiters is None:
            return
        self._drain_waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self, reason: int) -> None:
        if not self._paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused |= reason

    def _resume_reading_queue(self) -> None:
        """Read again once the app has taken half of the ``max_queue`` messages."""
        if len(self._inbox) + len(self._frames or ()) <= self.max_queue // 2:
            self._resume_reading(PAUSE_QUEUE)

    def _resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.transport.is_closing():
                self.transport.resume_reading()

    # Keepalive and pings

    def _start_keepalive(self) -> None:
        if self.ping_interval:
            self._ping_timer = self.loop.call_later(self.ping_interval, self._keepalive_ping)

    def _stop_keepalive(self) -> None:
        for name in ("_ping_timer", "_pong_timer", "_idle_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    def _keepalive_ping(self) -> None:
        self._ping_timer = None
        if self._conn.state != OPEN:
            return
        payload = random.getrandbits(32).to_bytes(4, "big")
        if self.ping_timeout:
            self._send_ping(payload, None)
            self._pong_timer = self.loop.call_later(self.ping_timeout, self._keepalive_timeout)
        else:
            # Without a timeout nothing waits for the pong: do not track the ping.
            self._conn.send_ping(payload)
            self._schedule_flush()
            self._start_keepalive()

    def _keepalive_timeout(self) -> None:
        self._pong_timer = None
        if self._paused & PAUSE_QUEUE:
            # We stopped reading, not the peer: its pong may be waiting unread.
            self._pong_timer = self.loop.call_later(self.ping_timeout or 0, self._keepalive_timeout)
            return
        conn = self._conn
        if conn.state != OPEN:
            return
        self.logger.debug("WebSocket keepalive ping timeout")
        conn.fail(1011, "keepalive ping timeout")
        self._stop_timers()
        self._deliver_disconnect(1011, "keepalive ping timeout")
        self._close_transport()

    def _idle_check(self) -> None:
        # Checked four times per idle_timeout, so a connection goes after 1 to 1.25 times it.
        self._idle_timer = None
        timeout = self.idle_timeout or 0.0
        if self._conn.state != OPEN:
            return
        now = self.loop.time()
        outlet = self._outlet
        if outlet is not None and outlet.written != self._outlet_seen:
            self._outlet_seen = outlet.written
            self._active = True
        if self._active or self._inbox:
            self._active = False
            self._quiet_since = now
        elif now - self._quiet_since >= timeout:
            self.logger.debug("WebSocket idle timeout")
            self._close(1001, "idle")
            return
        self._idle_timer = self.loop.call_later(timeout / 4, self._idle_check)

    def _send_ping(self, payload: bytes, future: asyncio.Future[float] | None) -> None:
        self._conn.send_ping(payload)
        # loop.time() may tick in milliseconds (uvloop): too coarse for a round trip.
        ping = (payload, time.perf_counter(), future)
        if self._pings is None:
            self._pings = [ping]
        else:
            self._pings.append(ping)
        self._schedule_flush()

    def _pong_received(self, payload: bytes) -> None:
        pings = self._pings
        if not pings:
            return  # unsolicited
        for index, (sent, _, _) in enumerate(pings):
            if sent == payload:
                break
        else:
            return  # unsolicited
        now = time.perf_counter()
        keepalive = False
        # A pong acknowledges its ping and every ping sent before it.
        for _, sent_at, future in pings[: index + 1]:
            if future is None:
                keepalive = True
            elif not future.done():
                future.set_result(now - sent_at)
        del pings[: index + 1]
        if not pings:
            self._pings = None  # the list goes with the last ping in flight
        if keepalive and self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._start_keepalive()

    # The scope extension

    @property
    def closed(self) -> bool:
        """True once the closing handshake started, the transport is gone or it was rejected."""
        return self._state == DONE or self._conn.state != OPEN

    @property
    def buffered_amount(self) -> int:
        """Outbound bytes not yet taken by the kernel."""
        if self._state == DONE:
            return self._conn.pending_bytes
        return self.transport.get_write_buffer_size() + self._conn.pending_bytes

    def outlet(self, outlet_type: Callable[[Any, int], Any]) -> Any:
        """This connection's outlet (made with ``outlet_type`` on first use), through which fan-out
        writes frames straight to the socket while nothing is queued; None when the transport
        is not a plain socket (TLS, or one this module does not know), or when it already has
        an outlet of another type."""
        outlet = self._outlet
        if outlet is None:
            transport = self.transport
            if (
                type(transport).__name__ not in _SOCKET_TRANSPORTS
                or transport.get_extra_info("sslcontext") is not None
                or self._state != ACCEPTED
            ):
                return None
            sock = transport.get_extra_info("socket")
            fd = sock.fileno() if sock is not None else -1
            if fd < 0:
                return None
            outlet = self._outlet = outlet_type(transport, fd)
            outlet.direct = self._outlet_ready()
        elif not isinstance(outlet, outlet_type):  # type: ignore[arg-type]
            return None
        return outlet

    def drop_oldest(self, nbytes: int) -> bool:
        """Discard the oldest queued, unwritten complete messages; True if ``nbytes`` were freed."""
        return self._conn.drop_oldest(nbytes)

    def send_frame(self, frame: Any) -> None:
        """Send any frame; a close frame starts the closing handshake."""
        self._check_writable()
        conn = self._conn
        conn.send_frame(frame)
        if conn.state == OPEN:
            self._schedule_flush()
        else:
            assert conn.close_sent is not None
            self._closing_started(*conn.close_sent)

    async def receive_frame(self) -> Any:
        """The next data frame; see the class docstring for frame mode."""
        self._conn.frame_mode = True
        frames = self._frames
        if frames is None:
            frames = self._frames = []
        while not frames:
            if self._failure is not None:
                self._fail_now()  # as in receive
                continue
            if self._disconnect is not None:
                raise ConnectionClosed(self._disconnect["code"], self._disconnect["reason"] or None)
            waiter = self._frame_waiter
            if waiter is None or waiter.done():
                waiter = self._frame_waiter = self.loop.create_future()
            await waiter
        frame = frames.pop(0)
        if self._paused & PAUSE_QUEUE:
            self._resume_reading_queue()
        return frame

    async def ping(self, payload: bytes = b"") -> float:
        """Send a ping and return the round-trip time in seconds once its pong arrives."""
        self._check_writable()
        future: asyncio.Future[float] = self.loop.create_future()
        self._send_ping(bytes(payload), future)
        return await future

    def pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        self._check_writable()
        self._conn.send_pong(bytes(payload))
        self._schedule_flush()

    def _check_writable(self) -> None:
        if self._state == ACCEPTED and self._conn.state == OPEN:
            return
        if self._state in (HEAD, CONNECTING):
            raise RuntimeError("the WebSocket is not accepted yet")
        conn = self._conn
        raise ConnectionClosed(conn.close_code, conn.close_reason or None)


class _HandshakeTimeout(asyncio.Protocol):
    """Close a connection whose HTTP request head is not complete ``handshake_timeout`` seconds
    after the connection (or, on a kept-alive connection, the request's first byte).

    uvicorn's HTTP protocols wait for a request head forever, so idle or trickling clients
    (slowloris) could hold connections open without limit. The timer stops when the head is
    complete, before the app runs or the connection is upgraded to a WebSocket.
    """

    #: Seconds (``HASKE_HANDSHAKE_TIMEOUT``); None: wait forever, as uvicorn does.
    handshake_timeout: float | None = limits.HANDSHAKE_TIMEOUT

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: logging.Logger
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self._head_timer is None and self.handshake_timeout:
            self._head_timer = self.loop.call_later(self.handshake_timeout, self._head_timeout)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        transport = self.transport
        # After an upgrade the transport belongs to the WebSocket protocol.
        if transport.get_protocol() is self and not transport.is_closing():
            self.logger.debug("HTTP request head not complete in time: connection closed")
            transport.close()


class H11Protocol(_HandshakeTimeout, _UvicornH11Protocol):
    """uvicorn's h11 HTTP protocol with a handshake timeout."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE: the next request's head has not been parsed yet (it may be partly buffered).
        if self.conn.their_state is h11.IDLE:
            if self.conn.trailing_data[0]:
                self._start_head_timer()
        else:
            self._stop_head_timer()


HttpProtocol: type[_HandshakeTimeout]
"""uvicorn's HTTP protocol (httptools when installed, else h11) with a handshake timeout."""

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttpTools
except ImportError:  # httptools is not installed
    HttpProtocol = H11Protocol
else:

    class HttpToolsProtocol(_HandshakeTimeout, _UvicornHttpTools):
        """uvicorn's httptools HTTP protocol with a handshake timeout."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_head_timer()

        def on_headers_complete(self) -> None:
            self._stop_head_timer()
            super().on_headers_complete()

    HttpProtocol = HttpToolsProtocol


def _headers(message: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    # ASGI allows any two-item iterables; the handshake backend takes tuples of bytes.
    return [(bytes(name), bytes(value)) for name, value in message.get("headers") or ()]


def _scope_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The scope's headers: names lowercased, shared headers and names where possible."""
    scope_headers = list(headers)  # a copy of the exact size, where appending would leave room
    for index, (name, value) in enumerate(scope_headers):
        lowered = name.lower()
        header = (_SHARED_NAMES.get(lowered, lowered), value)
        shared = _SHARED_HEADERS.get(header)
        if shared is None and lowered in _REPEATING_NAMES:
            shared = _last_headers.get(lowered)
            if shared is None or shared[1] != value:
                _last_headers[lowered] = shared = header
        scope_headers[index] = header if shared is None else shared
    return scope_headers


async def _called_with(scope: Any, receive: Any, send: Any) -> tuple[Any, Any, Any]:
    return scope, receive, send


def _call_app(
    app: Any, scope: dict[str, Any], receive: Any, send: Any
) -> Coroutine[Any, Any, None]:
    """``app(scope, receive, send)``, with uvicorn's proxy-headers middleware already applied.

    The middleware rewrites the scope, then awaits the app to its end: its coroutine would stay
    in memory, idle, as long as the connection. A copy of it whose app returns the arguments it
    gets completes in one step, and the app behind it is called with them directly.
    """
    if type(app) is ProxyHeadersMiddleware:
        stand_in: Any = _proxy_stand_ins.get(app)
        if stand_in is None:
            stand_in = _proxy_stand_ins[app] = copy.copy(app)
            stand_in.app = _called_with
        step = stand_in(scope, receive, send)
        try:
            step.send(None)
        except StopIteration as done:
            if type(done.value) is tuple:
                inner: Any = app.app
                return cast("Coroutine[Any, Any, None]", inner(*done.value))
        else:
            step.close()  # it waited for something: run it as it is
    return cast("Coroutine[Any, Any, None]", app(scope, receive, send))


def _address(transport: asyncio.BaseTransport, name: str) -> tuple[str, int | None] | None:
    info = None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # uvloop's socket object keeps its addresses (its transport makes a new tuple per call):
        # the scope then refers to that tuple instead of holding a copy per connection.
        try:
            info = getattr(sock, "get" + name)()
        except OSError:
            info = None
    if info is None:
        info = transport.get_extra_info(name)
    if type(info) is tuple and len(info) == 2 and type(info[0]) is str and type(info[1]) is int:
        return info
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None
