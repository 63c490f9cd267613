# cython: language_level=3, boundscheck=False, wraparound=False
"""The per-message paths of Haske's uvicorn protocol, compiled: the twin of
:mod:`haske._pure.protocol`.

``receive`` and ``send`` are coroutines, as ASGI apps expect (they may hand them to
``asyncio.create_task`` or an anyio task group); Cython's coroutines cost about what a plain
method returning a future would.
"""

from cpython.dict cimport PyDict_GetItem

from haske._speedups._build cimport HASKE_CYTHON_VERSION, HASKE_VERSION

from asyncio import current_task

from haske._pure import connection as _pure_connection
from haske._pure import protocol as _twin
from haske.exceptions import ConnectionClosed

__version__ = HASKE_VERSION.decode("ascii")
CYTHON_VERSION = HASKE_CYTHON_VERSION.decode("ascii")

# The values of haske._pure.protocol and haske._pure.connection.
cdef enum:
    OP_TEXT = 1
    OP_BINARY = 2
    OPEN = 1
    CONNECTING = 1
    ACCEPTED = 2
    RESPONDING = 3
    PAUSE_QUEUE = 2

if (OP_TEXT, OP_BINARY, OPEN, CONNECTING, ACCEPTED, RESPONDING, PAUSE_QUEUE) != (
    _pure_connection.OP_TEXT, _pure_connection.OP_BINARY, _pure_connection.OPEN, _twin.CONNECTING,
    _twin.ACCEPTED, _twin.RESPONDING, _twin.PAUSE_QUEUE,
):
    raise ImportError("haske._speedups.protocol disagrees with haske._pure.protocol on its "
                      "constants: rebuild it")


# The running task of each loop, as asyncio's C module records it (Python 3.10 to 3.13): looked
# up here without the Python-level call that asyncio.current_task() is before 3.12.
try:
    from _asyncio import _current_tasks as _running_tasks
except ImportError:
    _running_tasks = None


cdef inline bint _task_running(loop) except -1:
    if type(_running_tasks) is dict:
        return PyDict_GetItem(<dict>_running_tasks, loop) is not NULL
    return current_task(loop) is not None


cdef inline object _pop_first(list items):
    """``items.pop(0)``, without the method call Cython makes for it."""
    first = items[0]
    del items[0]
    return first


cdef inline _hand_over(waiter, value, loop):
    """Resolve the future the app's task waits on and step the task now: see the twin."""
    callbacks = getattr(waiter, "_callbacks", None)
    if callbacks and len(callbacks) == 1 and not _task_running(loop):
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


cdef class ProtocolCore:
    """The state every message touches, and the methods that touch it."""

    @property
    def _conn(self):
        return self._connection

    @_conn.setter
    def _conn(self, conn):
        self._connection = conn
        self._compiled = conn if type(conn) is Connection else None

    def data_received(self, data):
        """Feed frames to the connection and hand complete messages to the app."""
        cdef list inbox
        cdef int kind
        cdef Connection compiled
        if self._state != ACCEPTED:
            self._data_before_open(data)
            return
        inbox = self._inbox
        compiled = self._compiled
        if compiled is not None:
            events = compiled.receive_data(data)
        else:
            events = self._connection.receive_data(data)
        for kind, value in events:
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
                    message = _pop_first(inbox)
            if len(inbox) >= self.max_queue:
                self._pause_reading(PAUSE_QUEUE)
            if waiter is not None:
                self._wake(waiter, message)
        if not self._dirty and (
            compiled.pending_bytes if compiled is not None else self._connection.pending_bytes
        ):  # _schedule_flush, inlined
            self._dirty = True
            self._flusher.add(self)

    async def receive(self):
        """ASGI ``receive``: the next message; after the disconnect, the disconnect again."""
        inbox = self._inbox
        if inbox:
            message = _pop_first(inbox)
            if self._paused & PAUSE_QUEUE:
                self._resume_reading_queue()
            return message
        waiter = self._waiter
        if (waiter is None or waiter.done()) and self._failure is None and self._disconnect is None:
            # _next_message, inlined for the usual wait.
            waiter = self._waiter = self.loop.create_future()
            return await waiter
        return await self._next_message()

    async def send(self, message):
        """ASGI ``send``; returns at once unless the transport is over its high-water mark."""
        cdef Connection compiled
        cdef dict fields
        kind = message["type"]
        if self._state == ACCEPTED:
            if kind == "websocket.send":
                self._active = True
                compiled = self._compiled
                fields = message if type(message) is dict else dict(message)
                text = fields.get("text")
                if text is not None:
                    if compiled is not None:
                        compiled.send_text(text)
                    else:
                        self._connection.send_text(text)
                else:
                    data = fields.get("bytes")
                    if data is None:
                        raise RuntimeError("'websocket.send' needs 'bytes' or 'text'")
                    if compiled is not None:
                        compiled.send_binary(data)
                    else:
                        self._connection.send_binary(data)
                if not self._dirty:  # _schedule_flush, inlined
                    self._dirty = True
                    self._flusher.add(self)
                if self._write_paused:
                    await self._drain()
            elif kind == "websocket.close":
                if self._connection.state == OPEN:
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
            conn = self._connection
            if kind != "websocket.close":
                raise ConnectionClosed(conn.close_code, conn.close_reason or None)

    cpdef _wake(self, waiter, value):
        """Resolve the app's pending wait with ``value`` and step its task now: see the twin."""
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

    cpdef _flush(self, bint force=False):
        cdef Connection compiled
        self._dirty = False
        if self._write_paused and not force:
            return  # resume_writing flushes; until then drop_oldest can still reach the frames
        compiled = self._compiled
        out = compiled.data_to_send() if compiled is not None else self._connection.data_to_send()
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

    cpdef bint _outlet_ready(self) except -1:
        """Nothing waits to be written: a frame written now directly keeps the stream in order."""
        transport = self.transport
        return (
            self._state == ACCEPTED
            and self._connection.state == OPEN
            and not self._dirty
            and not self._write_paused
            and not self._connection.pending_bytes
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        )

    def write_frame(self, data):
        """Queue pre-encoded frames, or return False (taking nothing) past ``outbound_limit``.

        Frames larger than the limit are still taken while nothing is buffered, so that a big
        message is not refused forever."""
        if self._state != ACCEPTED:
            self._check_writable()
        conn = self._connection
        buffered = self.transport.get_write_buffer_size() + conn.pending_bytes
        if buffered and buffered + len(data) > self.outbound_limit:
            return False
        self._active = True
        conn.send_encoded(data)
        if not self._dirty:  # _schedule_flush, inlined: this runs once per member per broadcast
            self._dirty = True
            self._flusher.add(self)
        return True
