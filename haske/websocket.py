"""The socket wrapper handlers receive: Starlette's WebSocket with typed, predictable closing.

Every failure to talk to a closed peer is one exception, :class:`ConnectionClosed`, carrying the
close code (never Starlette's or the server's ``RuntimeError``). On Haske's own protocol the
wrapper also reaches the connection itself (``scope["extensions"]["haske.websocket"]``) for real
ping/pong control frames and frame-level access.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.datastructures import URL, Headers, QueryParams, State
from starlette.exceptions import WebSocketException
from starlette.responses import PlainTextResponse
from starlette.types import Message, Scope
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from haske import _json
from haske._hypercorn import websocket_stream
from haske.exceptions import ConnectionClosed, NotSupportedError
from haske.security import SAME_ORIGIN, AuthHook, Deny, OriginPolicy

if TYPE_CHECKING:
    from haske._pure.frames import Frame
    from haske.broadcast import Outbox, WebSocketBroadcaster

__all__ = ["WebSocket", "websocket_endpoint"]

logger = logging.getLogger("haske.ws")

#: The scope extension under which Haske's protocol exposes its connection object.
EXTENSION = "haske.websocket"

HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

_connection_ids = itertools.count(1)

_CONNECTED = WebSocketState.CONNECTED
_RECEIVE = StarletteWebSocket.receive
_SEND = StarletteWebSocket.send
# The wrapper Starlette's exception handlers put around ``send``: it only notes whether an HTTP
# response started.
_SENDER_MODULE = "starlette._exception_handler"
_SENDER_NAME = "wrapped_app.<locals>.sender"

#: Tasks that must outlive the call that started them (asyncio keeps only weak references).
_background: set[asyncio.Task[Any]] = set()


def _raw_headers(headers: HeadersLike | None) -> list[tuple[bytes, bytes]]:
    """Headers as ASGI ``(name, value)`` byte pairs, names lowercased."""
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return list(headers.raw)
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    raw = []
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"headers must be a mapping or (name, value) pairs, got an item {pair!r}"
            ) from None
        raw.append((_latin1(name).lower(), _latin1(value)))
    return raw


def _latin1(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise TypeError(f"header names and values must be str or bytes, got {type(value).__name__}")


def _protocol_send(websocket: StarletteWebSocket, protocol: Any) -> Any:
    """``protocol.send`` when the socket's ASGI ``send`` reaches it through nothing but
    Starlette's exception-handler wrappers; otherwise None (any other middleware that wraps
    ``send`` must see every message)."""
    if protocol is None or type(websocket).send is not _SEND:
        return None
    send: Any = websocket._send
    for _ in range(8):
        if getattr(send, "__self__", None) is protocol:
            return send
        code = getattr(send, "__code__", None)
        if (
            code is None
            or getattr(send, "__module__", None) != _SENDER_MODULE
            or not send.__qualname__.endswith(_SENDER_NAME)
            or "send" not in code.co_freevars
        ):
            return None
        send = send.__closure__[code.co_freevars.index("send")].cell_contents
    return None


def _data(message: Message) -> str | bytes:
    """The payload of a ``websocket.receive`` message: ``str`` for text, ``bytes`` for binary."""
    text = message.get("text")
    if text is not None:
        return text  # type: ignore[no-any-return]
    return message.get("bytes") or b""


def _check_close(code: int, reason: str) -> None:
    # 1005, 1006 and 1015 only ever report a closure; RFC 6455 §7.4.1 forbids sending them.
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(
            f"close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999 "
            "(1005, 1006 and 1015 are reserved for reporting a closure)"
        )
    if len(reason.encode()) > 123:
        raise ValueError("a close reason is at most 123 bytes of UTF-8")


class WebSocket:
    """A WebSocket connection, as handed to ``@websocket_route`` and ``@app.websocket`` handlers.

    Wrap a Starlette WebSocket yourself with ``WebSocket(starlette_websocket)``. Receiving after the
    peer closed and sending after either side closed raise :class:`ConnectionClosed` (a Starlette
    ``WebSocketDisconnect``) with the close code. ``async for message in ws`` yields ``str`` or
    ``bytes`` until the connection closes.
    """

    __slots__ = (
        "_broadcaster",
        "_close_code",
        "_close_reason",
        "_connection",
        "_finalizers",
        "_protocol_send",
        "connection_id",
        "outbound",
        "user",
        "websocket",
    )

    def __init__(
        self, websocket: StarletteWebSocket, *, broadcaster: WebSocketBroadcaster | None = None
    ) -> None:
        self.websocket = websocket
        #: Unique among the connections of this process.
        self.connection_id = next(_connection_ids)
        extensions = websocket.scope.get("extensions") or {}
        self._connection: Any = extensions.get(EXTENSION)
        self._protocol_send: Callable[[Message], Awaitable[None]] | None = _protocol_send(
            websocket, self._connection
        )
        self._broadcaster = broadcaster
        self._close_code: int | None = None
        self._close_reason = ""
        # Sync callbacks run once when the connection ends (leave the broadcaster, sessions):
        # owner, callback, owner, callback... A flat list is a fraction of a dict's size.
        self._finalizers: list[Any] = []
        #: Set by the broadcaster on standard ASGI servers: the queue its messages wait in.
        self.outbound: Outbox | None = None
        #: What the route's ``auth`` hook returned; without a hook, the ``scope["user"]`` set by
        #: Starlette's ``AuthenticationMiddleware``, if any.
        self.user: Any = websocket.scope.get("user")

    # -- the connection's request data --------------------------------------------------------

    @property
    def scope(self) -> Scope:
        return self.websocket.scope

    @property
    def url(self) -> URL:
        return self.websocket.url

    @property
    def headers(self) -> Headers:
        return self.websocket.headers

    @property
    def query_params(self) -> QueryParams:
        return self.websocket.query_params

    @property
    def path_params(self) -> dict[str, Any]:
        return self.websocket.path_params

    @property
    def cookies(self) -> dict[str, str]:
        return self.websocket.cookies

    @property
    def client(self) -> Any:
        """``(host, port)`` of the peer, or None."""
        return self.websocket.client

    @property
    def state(self) -> State:
        return self.websocket.state

    @property
    def native(self) -> bool:
        """True on Haske's own protocol, where ping/pong and frame access work."""
        return self._connection is not None

    @property
    def accepted(self) -> bool:
        return self.websocket.application_state is not WebSocketState.CONNECTING

    @property
    def closed(self) -> bool:
        """True once either side closed, or the connection was lost."""
        if self._close_code is not None:
            return True
        if self._connection is not None and self._connection.closed:
            return True
        return (
            self.websocket.client_state is WebSocketState.DISCONNECTED
            or self.websocket.application_state is WebSocketState.DISCONNECTED
        )

    @property
    def buffered_amount(self) -> int:
        """Outbound bytes queued and not yet sent: the connection's write buffer on Haske's
        protocol, the broadcaster's queue for this connection elsewhere."""
        if self._connection is not None:
            return int(self._connection.buffered_amount)
        return self.outbound.buffered if self.outbound is not None else 0

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006 when the connection was lost), else None."""
        return self._close_code

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.accepted else "connecting"
        return f"<WebSocket {self.connection_id} {self.url.path!r} {state}>"

    # -- opening and closing ------------------------------------------------------------------

    async def accept(
        self, subprotocol: str | None = None, headers: HeadersLike | None = None
    ) -> None:
        """Complete the handshake, optionally choosing a subprotocol and adding headers."""
        if self.accepted:
            raise RuntimeError("accept() was already called for this WebSocket")
        await self.websocket.accept(subprotocol, _raw_headers(headers))
        if self._broadcaster is not None:
            self._broadcaster._attach(self)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection. Calling it again, or after the peer left, does nothing.

        Messages the broadcaster queued for this connection go out first. Before ``accept()``
        this rejects the handshake (HTTP 403).
        """
        _check_close(code, reason)
        if self.outbound is not None and not self.closed:
            await self.outbound.flush()
        if not self.closed:
            self._close_code, self._close_reason = code, reason
            await self._send_close(code, reason)
        if self.outbound is not None:
            self.outbound.clear()

    def _close_soon(self, code: int, reason: str) -> None:
        """Close without waiting: drop what is queued, send the close frame in the background."""
        if self.closed:
            return
        self._close_code, self._close_reason = code, reason
        if self.outbound is not None:
            self.outbound.clear()
        if self._connection is not None:
            self._connection.drop_oldest(self._connection.buffered_amount)
        task = asyncio.get_running_loop().create_task(self._send_close(code, reason))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _send_close(self, code: int, reason: str) -> None:
        if self.websocket.application_state is WebSocketState.DISCONNECTED:
            return
        try:
            await self.websocket.close(code, reason)
        except (WebSocketDisconnect, OSError, RuntimeError):
            # The peer is already gone: the connection is closed either way.
            pass

    def _add_finalizer(self, owner: object, finalizer: Callable[[WebSocket], object]) -> None:
        """Run ``finalizer(self)`` when the connection ends, in place of ``owner``'s earlier one."""
        self._remove_finalizer(owner)
        items = self._finalizers
        items.append(owner)
        items.append(finalizer)  # two appends leave room for 4 items, an extend for 8

    def _remove_finalizer(self, owner: object) -> None:
        items = self._finalizers
        for index in range(0, len(items), 2):
            if items[index] is owner:
                del items[index : index + 2]
                return

    def _finalize(self) -> None:
        """Leave the broadcaster and every session; runs once when the handler ends."""
        items = self._finalizers
        while items:
            finalizer = items.pop()
            items.pop()
            try:
                finalizer(self)
            except Exception:
                logger.exception("error while cleaning up %r", self)

    # -- receiving ----------------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self._close_code or 1006, self._close_reason)

    def _raise_if_closed(self) -> None:
        """``ConnectionClosed`` once the connection is known to be closed, before a send."""
        if self._close_code is None:
            stream = websocket_stream(self.websocket._send)
            if stream is not None and stream.closed:
                self._close_code = 1006  # hypercorn would drop the message without a word
        if self._close_code is not None:
            raise self._closed_error()

    async def receive(self) -> Message:
        """The next ``websocket.receive`` ASGI message; :class:`ConnectionClosed` at the end."""
        next_message = self._next_message()
        try:
            return self._message(await next_message)
        except RuntimeError:
            if self.closed:
                raise self._closed_error() from None
            raise

    def _next_message(self) -> Awaitable[Message]:
        """What to await for the next message, once receiving is allowed.

        For a connected Starlette socket this is what the ASGI ``receive`` returns, with the
        checks of Starlette's ``receive()`` done by :meth:`_message`: one coroutine frame less for
        every connection waiting for a message. When that ``receive`` is Haske's protocol's, one
        more: its future is awaited without the coroutine around it.
        """
        if self._close_code is not None:
            raise self._closed_error()
        if not self.accepted:
            raise RuntimeError("call accept() before receiving")
        websocket = self.websocket
        if websocket.client_state is _CONNECTED and type(websocket).receive is _RECEIVE:
            receive = websocket._receive
            protocol = getattr(receive, "__self__", None)
            if protocol is not None and protocol is self._connection:
                return protocol._next_message()  # type: ignore[no-any-return]
            return receive()
        return websocket.receive()

    def _message(self, message: Message) -> Message:
        """Check a received ASGI message; the disconnect raises :class:`ConnectionClosed`."""
        kind = message["type"]
        if kind == "websocket.disconnect":
            self.websocket.client_state = WebSocketState.DISCONNECTED
            if self._close_code is None:
                self._close_code = message.get("code", 1005)
                self._close_reason = message.get("reason") or ""
            raise self._closed_error()
        if kind != "websocket.receive":
            raise RuntimeError(
                f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {kind!r}'
            )
        return message

    async def receive_data(self) -> str | bytes:
        """The next message: ``str`` for a text message, ``bytes`` for a binary one."""
        return _data(await self.receive())

    async def receive_text(self) -> str:
        """The next message, which must be a text message."""
        data = await self.receive_data()
        if not isinstance(data, str):
            raise TypeError(
                f"receive_text() got a binary message ({len(data)} bytes); "
                "use receive_bytes() or receive_data()"
            )
        return data

    async def receive_bytes(self) -> bytes:
        """The next message, which must be a binary message."""
        data = await self.receive_data()
        if not isinstance(data, bytes):
            raise TypeError(
                f"receive_bytes() got a text message ({len(data)} characters); "
                "use receive_text() or receive_data()"
            )
        return data

    async def receive_json(self) -> Any:
        """The next message (text, or UTF-8 bytes) decoded as JSON; ``ValueError`` if invalid."""
        return _json.loads(await self.receive_data())

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        # receive(), inlined: one coroutine frame less in every connection's receive loop.
        try:
            next_message = self._next_message()
            try:
                return _data(self._message(await next_message))
            except RuntimeError:
                if self.closed:
                    raise StopAsyncIteration from None
                raise
        except ConnectionClosed:
            raise StopAsyncIteration from None

    # -- sending ------------------------------------------------------------------------------

    async def _send_message(self, message: Message) -> None:
        """Send a ``websocket.send`` message, turning every "the peer is gone" failure into
        :class:`ConnectionClosed`.

        Where the app's ASGI ``send`` is Haske's protocol's behind nothing but Starlette's
        exception handlers, the message goes to the protocol directly, which saves the five
        coroutine frames of Starlette's path; Starlette's ``send`` would only have checked the
        state that is checked here.
        """
        protocol_send = self._protocol_send  # only on Haske's protocol, where no outbox is used
        if (
            protocol_send is not None
            and self._close_code is None
            and self.websocket.application_state is _CONNECTED
        ):
            try:
                await protocol_send(message)
            except WebSocketDisconnect as exc:
                raise self._send_failure(exc) from None
            return
        self._raise_if_closed()
        if not self.accepted:
            raise RuntimeError("call accept() before sending")
        if self.outbound is not None:
            # A direct send must not overtake broadcasts already queued for this connection.
            await self.outbound.flush()
        try:
            await self.websocket.send(message)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            raise self._send_failure(exc) from None

    def _send_failure(self, exc: Exception) -> ConnectionClosed:
        if self._close_code is None:
            if isinstance(exc, WebSocketDisconnect):
                self._close_code, self._close_reason = exc.code, exc.reason or ""
            else:
                self._close_code = 1006  # servers differ in what they raise once the peer is gone
        return self._closed_error()

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, got {type(data).__name__}")
        await self._send_message({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._send_message({"type": "websocket.send", "bytes": bytes(data)})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send ``data`` as compact JSON, in a text message (or a binary one with mode="binary")."""
        if mode == "text":
            await self._send_message({"type": "websocket.send", "text": _json.dumps(data)})
        elif mode == "binary":
            await self._send_message({"type": "websocket.send", "bytes": _json.dumps_bytes(data)})
        else:
            raise ValueError(f'mode must be "text" or "binary", got {mode!r}')

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send ``str`` as a text message, bytes as a binary one."""
        if isinstance(data, str):
            await self._send_message({"type": "websocket.send", "text": data})
        elif isinstance(data, (bytes, bytearray, memoryview)):
            await self._send_message({"type": "websocket.send", "bytes": bytes(data)})
        else:
            raise TypeError(
                f"send() takes str or bytes, got {type(data).__name__}; use send_json() for objects"
            )

    # -- Haske's protocol only ----------------------------------------------------------------

    def _native_connection(self, feature: str) -> Any:
        if self._connection is None:
            raise NotSupportedError(
                f"ws.{feature}() needs Haske's WebSocket protocol: run the app with "
                "haske.run(app) or uvicorn --ws haske.server:WebSocketProtocol "
                "(an ASGI application cannot send control frames through other servers)"
            )
        if self._close_code is not None:
            raise self._closed_error()
        return self._connection

    async def ping(self, payload: bytes = b"") -> float:
        """Send a ping control frame; return the round-trip time in seconds once the pong arrives."""
        return float(await self._native_connection("ping").ping(payload))

    async def pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong control frame (a one-way heartbeat)."""
        self._native_connection("pong").pong(payload)

    async def receive_frame(self) -> Frame:
        """The next frame as received, control frames included."""
        return await self._native_connection("receive_frame").receive_frame()  # type: ignore[no-any-return]

    async def send_frame(self, frame: Frame) -> None:
        """Send one frame as given (a ``Frame`` from ``haske._backends.frames``)."""
        self._native_connection("send_frame").send_frame(frame)


Handler = Callable[[WebSocket], Awaitable[None]]


def websocket_endpoint(
    handler: Handler,
    *,
    broadcaster: WebSocketBroadcaster | None = None,
    allowed_origins: Sequence[str] | None = None,
    auth: AuthHook | None = None,
) -> Callable[[StarletteWebSocket], Awaitable[None]]:
    """Turn ``handler(ws)`` into a Starlette WebSocket endpoint.

    Before the handler runs, the request must pass the origin check (``allowed_origins``, else
    the app's, else same-origin only: see :mod:`haske.security`) and the ``auth`` hook (else the
    app's), or the handshake is refused with an HTTP status and the handler never runs.

    The handler gets a :class:`WebSocket`, tracked by ``broadcaster`` once accepted. Its end is
    always clean: a :class:`ConnectionClosed` or ``WebSocketDisconnect`` escaping it is a normal
    end, a Starlette ``WebSocketException`` closes with its code, any other exception is logged
    (logger ``haske.ws``) and closes with 1011. The socket then leaves the broadcaster and every
    session, and is closed if it is still open.
    """
    policy = None if allowed_origins is None else OriginPolicy(allowed_origins)
    steps = EndpointSteps(handler, broadcaster, policy, auth)

    @functools.wraps(handler)
    async def endpoint(websocket: StarletteWebSocket) -> None:
        ws = steps.socket(websocket)
        if await steps.admit(ws):
            try:
                await handler(ws)
            except Exception as exc:  # noqa: BLE001 - failed() logs it
                await steps.failed(ws, exc)
            finally:
                await steps.finish(ws)

    endpoint._haske_steps = steps  # type: ignore[attr-defined]
    return endpoint


class EndpointSteps:
    """What the endpoint made by :func:`websocket_endpoint` does around its handler.

    A ``Haske`` app takes these steps itself instead of awaiting the endpoint: one coroutine
    frame less in the memory of every open connection.
    """

    __slots__ = ("auth", "broadcaster", "handler", "policy")

    def __init__(
        self,
        handler: Handler,
        broadcaster: WebSocketBroadcaster | None,
        policy: OriginPolicy | None,
        auth: AuthHook | None,
    ) -> None:
        self.handler = handler
        self.broadcaster = broadcaster
        self.policy = policy
        self.auth = auth

    def socket(self, websocket: StarletteWebSocket) -> WebSocket:
        return WebSocket(websocket, broadcaster=self.broadcaster)

    async def admit(self, ws: WebSocket) -> bool:
        """Run the origin check and the auth hook; False if the handshake was refused."""
        return await _admit(ws, self.policy, self.auth)

    async def failed(self, ws: WebSocket, exc: Exception) -> None:
        """End the connection after the handler raised ``exc``."""
        if isinstance(exc, WebSocketDisconnect):
            return  # the peer left: a normal end
        if isinstance(exc, WebSocketException):
            await ws.close(exc.code, exc.reason or "")
            return
        logger.error(
            "WebSocket handler %s failed on %s",
            self.handler.__qualname__,
            ws.url.path,
            exc_info=exc,
        )
        await ws.close(1011, "internal error")

    @staticmethod
    async def finish(ws: WebSocket) -> None:
        """Leave the broadcaster and every session, then close if still open."""
        ws._finalize()
        await ws.close()


async def _admit(ws: WebSocket, policy: OriginPolicy | None, auth: AuthHook | None) -> bool:
    """Run the origin check and the auth hook; refuse the handshake and return False on failure."""
    # Settings a route leaves out come from the app serving it (a Haske app has both).
    app = ws.scope.get("app")
    if policy is None:
        policy = getattr(app, "origin_policy", None) or SAME_ORIGIN
    if not policy.allows(ws.scope):
        await _deny(ws, Deny(403, "origin not allowed"))
        return False
    if auth is None:
        auth = getattr(app, "auth", None)
    if auth is not None:
        try:
            ws.user = await auth(ws)
        except Deny as denial:
            await _deny(ws, denial)
            return False
        except Exception:
            logger.exception("WebSocket auth hook %r failed on %s", auth, ws.url.path)
            await _deny(ws, Deny(500, "internal error"))
            return False
    return True


async def _deny(ws: WebSocket, denial: Deny) -> None:
    """Answer the handshake with the denial's status, or 403 where the server cannot."""
    websocket = ws.websocket
    try:
        if "websocket.http.response" in (ws.scope.get("extensions") or {}):
            response = PlainTextResponse(denial.reason, status_code=denial.status)
            response.raw_headers += _raw_headers(denial.headers)
            await websocket.send_denial_response(response)
        else:
            await websocket.close(1008)
    except (WebSocketDisconnect, OSError, RuntimeError):
        # The client left before hearing the answer: refused either way.
        pass
