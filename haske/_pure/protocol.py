"""The per-message paths of Haske's uvicorn protocol, in pure Python: the twin of
:mod:`haske._speedups.protocol`.

:class:`haske.server.WebSocketProtocol` is built on the :class:`ProtocolCore` the capability
probe chose: the core holds the state that every message touches and moves messages between the
transport, the connection and the app (``data_received``, ASGI ``receive`` and ``send``, the
flush); everything else (the handshake, closing, keepalive, flow control, the scope extension)
is in the subclass, whose methods the core calls by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from haske._pure.connection import OP_BINARY, OP_TEXT, OPEN
from haske.exceptions import ConnectionClosed

# Where the connection is. The close handshake itself is tracked by Connection.state.
HEAD = 0  # waiting for the request head
CONNECTING = 1  # the app decides: accept, close or an HTTP response
ACCEPTED = 2  # accepted: frames flow
RESPONDING = 3  # an HTTP denial response is being sent
DONE = 4  # rejected, or the transport is gone

# Why reading is paused (bit flags: reading resumes when none is left).
PAUSE_HANDSHAKE = 1  # bytes that arrive before the app accepts wait in the kernel
PAUSE_QUEUE = 2  # the app is ws_max_queue messages behind
PAUSE_WRITE = 4  # the peer does not read what we send
PAUSE_FAILED = 8  # the peer broke the protocol: nothing more is read


def _hand_over(waiter: asyncio.Future[Any], value: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Resolve the future the app's task waits on with ``value`` and step the task now.

    Resolving a future only schedules its task for the loop's next turn; stepping the task from
    the callback that brought its message saves that turn, about a tenth of the server's CPU
    time per message in an echo. It is done only when the task's wake-up is the future's one
    callback and no task is running (``data_received`` is then a plain loop callback, as
    transports call it); otherwise the future resolves as usual. Where the task's own context
    is in use, the step is refused before it starts, and the task is woken on the next turn.
    """
    callbacks = getattr(waiter, "_callbacks", None)
    if callbacks and len(callbacks) == 1 and asyncio.current_task(loop) is None:
        wake, context = callbacks[0]
        waiter.remove_done_callback(wake)
        waiter.set_result(value)
        try:
            context.run(wake, waiter)
        except RuntimeError:
            # Refused before the step: the task's context is in use. Wake it as usual.
            loop.call_soon(wake, waiter, context=context)
    else:
        waiter.set_result(value)


class ProtocolCore(asyncio.Protocol):
    """The state every message touches, and the methods that touch it."""

    __slots__ = (
        "_active",
        "_conn",
        "_dirty",
        "_disconnect",
        "_failure",
        "_flusher",
        "_inbox",
        "_outlet",
        "_paused",
        "_state",
        "_waiter",
        "_write_paused",
        "loop",
        "max_queue",
        "outbound_limit",
        "transport",
    )

    _active: bool
    _conn: Any
    _dirty: bool
    _disconnect: dict[str, Any] | None
    _failure: tuple[int, str] | None
    _flusher: Any
    _inbox: list[dict[str, Any]]
    _outlet: Any
    _paused: int
    _state: int
    _waiter: asyncio.Future[dict[str, Any]] | None
    _write_paused: bool
    loop: asyncio.AbstractEventLoop
    max_queue: int
    #: ``write_frame`` refuses frames past this many buffered bytes.
    outbound_limit: int
    transport: asyncio.Transport

    if TYPE_CHECKING:
        # What the subclass provides.
        def _data_before_open(self, data: bytes) -> None: ...
        def _event(self, kind: int, value: Any) -> None: ...
        def _pause_reading(self, reason: int) -> None: ...
        def _resume_reading_queue(self) -> None: ...
        def _next_message(self) -> Awaitable[dict[str, Any]]: ...
        async def _drain(self) -> None: ...
        def _close(self, code: int, reason: str) -> None: ...
        def _send_before_accept(self, kind: str, message: dict[str, Any]) -> None: ...
        def _send_response_body(self, kind: str, message: dict[str, Any]) -> None: ...
        def _check_writable(self) -> None: ...

    def data_received(self, data: bytes) -> None:
        """Feed frames to the connection and hand complete messages to the app."""
        if self._state != ACCEPTED:
            self._data_before_open(data)
            return
        inbox = self._inbox
        for kind, value in self._conn.receive_data(data):
            if kind == OP_TEXT:
                inbox.append({"type": "websocket.receive", "text": value})
            elif kind == OP_BINARY:
                inbox.append({"type": "websocket.receive", "bytes": value})
            else:
                self._event(kind, value)
        if inbox:
            self._active = True
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if waiter.done():
                    waiter = None
                else:
                    # It waits only while the inbox is empty: the first message is its own.
                    message = inbox.pop(0)
            if len(inbox) >= self.max_queue:
                self._pause_reading(PAUSE_QUEUE)
            if waiter is not None:
                self._wake(waiter, message)
        if self._conn.pending_bytes and not self._dirty:  # _schedule_flush, inlined
            self._dirty = True
            self._flusher.add(self)

    async def receive(self) -> dict[str, Any]:
        """ASGI ``receive``: the next message; after the disconnect, the disconnect again."""
        inbox = self._inbox
        if inbox:
            message = inbox.pop(0)
            if self._paused & PAUSE_QUEUE:
                self._resume_reading_queue()
            return message
        waiter = self._waiter
        if (waiter is None or waiter.done()) and self._failure is None and self._disconnect is None:
            # _next_message, inlined for the usual wait.
            waiter = self._waiter = self.loop.create_future()
            return await waiter
        return await self._next_message()

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI ``send``; returns at once unless the transport is over its high-water mark."""
        kind = message["type"]
        if self._state == ACCEPTED:
            if kind == "websocket.send":
                self._active = True
                text = message.get("text")
                if text is not None:
                    self._conn.send_text(text)
                else:
                    data = message.get("bytes")
                    if data is None:
                        raise RuntimeError("'websocket.send' needs 'bytes' or 'text'")
                    self._conn.send_binary(data)
                if not self._dirty:  # _schedule_flush, inlined
                    self._dirty = True
                    self._flusher.add(self)
                if self._write_paused:
                    await self._drain()
            elif kind == "websocket.close":
                if self._conn.state == OPEN:
                    self._close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}."
                )
        elif self._state == CONNECTING:
            self._send_before_accept(kind, message)
        elif self._state == RESPONDING:
            self._send_response_body(kind, message)
        else:
            conn = self._conn
            if kind != "websocket.close":
                raise ConnectionClosed(conn.close_code, conn.close_reason or None)

    def _wake(self, waiter: asyncio.Future[Any], value: Any) -> None:
        """Resolve the app's pending wait (``receive``, ``receive_frame``) with ``value`` and
        step its task now (see :func:`_hand_over`); what it sends before it waits again leaves
        in one write, right after."""
        if self._dirty:  # a flush is queued for this turn: the answer joins it
            _hand_over(waiter, value, self.loop)
            return
        self._dirty = True
        outlet = self._outlet
        if outlet is not None:
            outlet.direct = False  # nothing may be written past the answer
        try:
            _hand_over(waiter, value, self.loop)
        finally:
            self._flush()

    def _flush(self, force: bool = False) -> None:
        self._dirty = False
        if self._write_paused and not force:
            return  # resume_writing flushes; until then drop_oldest can still reach the frames
        out = self._conn.data_to_send()
        if out:
            transport = self.transport
            if transport.is_closing():
                return
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
        if self._outlet is not None:
            self._outlet.direct = self._outlet_ready()

    def _outlet_ready(self) -> bool:
        """Nothing waits to be written: a frame written now directly keeps the stream in order."""
        transport = self.transport
        return (
            self._state == ACCEPTED
            and self._conn.state == OPEN
            and not self._dirty
            and not self._write_paused
            and not self._conn.pending_bytes
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        )

    def write_frame(self, data: bytes) -> bool:
        """Queue pre-encoded frames, or return False (taking nothing) past ``outbound_limit``.

        Frames larger than the limit are still taken while nothing is buffered, so that a big
        message is not refused forever."""
        if self._state != ACCEPTED:
            self._check_writable()
        conn = self._conn
        buffered = self.transport.get_write_buffer_size() + conn.pending_bytes
        if buffered and buffered + len(data) > self.outbound_limit:
            return False
        self._active = True
        conn.send_encoded(data)
        if not self._dirty:  # _schedule_flush, inlined: this runs once per member per broadcast
            self._dirty = True
            self._flusher.add(self)
        return True
