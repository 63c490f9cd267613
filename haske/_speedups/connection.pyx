# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The sans-I/O RFC 6455 connection, compiled: the twin of :mod:`haske._pure.connection`.

The same state machine, events and errors. With the Cython frame codec, frames come from the
decoder and replies are encoded without a Python call in between; any other codec module is
used through its Python API.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t

from haske._speedups._build cimport HASKE_CYTHON_VERSION, HASKE_VERSION
from haske._speedups.frames cimport Frame, FrameDecoder, _encode

from haske import _backends
from haske._pure import connection as _twin
from haske._pure.connection import (
    ABNORMAL_CLOSURE,
    DEFAULT_MAX_MESSAGE_SIZE,
    NO_STATUS,
    _check_pending_utf8,
    _queued_units,
    _Utf8Decoder,
    check_close_code,
    parse_close,
)
from haske.exceptions import ConnectionClosed, ProtocolError

__version__ = HASKE_VERSION.decode("ascii")
CYTHON_VERSION = HASKE_CYTHON_VERSION.decode("ascii")

cdef enum:
    OP_CONTINUATION = 0
    OP_TEXT = 1
    OP_BINARY = 2
    OP_CLOSE = 8
    OP_PING = 9
    OP_PONG = 10
    FRAME = 16
    ERROR = 17
    OPEN = 1
    CLOSING = 2
    CLOSED = 3
    LARGE_PAYLOAD = 16 * 1024
    MAX_CONTROL_PAYLOAD = 125
    MAX_CLOSE_REASON = 123

if (
    OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, FRAME, ERROR,
    OPEN, CLOSING, CLOSED, LARGE_PAYLOAD, MAX_CONTROL_PAYLOAD, MAX_CLOSE_REASON,
) != (
    _twin.OP_CONTINUATION, _twin.OP_TEXT, _twin.OP_BINARY, _twin.OP_CLOSE, _twin.OP_PING,
    _twin.OP_PONG, _twin.FRAME, _twin.ERROR, _twin.OPEN, _twin.CLOSING, _twin.CLOSED,
    _twin.LARGE_PAYLOAD, _twin._MAX_CONTROL_PAYLOAD, _twin._MAX_CLOSE_REASON,
):
    raise ImportError("haske._speedups.connection disagrees with haske._pure.connection on "
                      "its constants: rebuild it")


@cython.final
cdef class Connection:
    """An RFC 6455 connection after the opening handshake, as a pure state machine.

    See :class:`haske._pure.connection.Connection`, its twin, for the API.
    """

    def __init__(self, *, bint client=False, max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
                 max_frame_size=None, frames=None, bint defer_failure=False):
        if max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        frames = _backends.frames if frames is None else frames
        self.frames = frames
        self.client = client
        self.max_message_size = max_message_size
        frame_limit = (
            max_message_size if max_frame_size is None else min(max_frame_size, max_message_size)
        )
        self._decoder = frames.FrameDecoder(max_frame_size=frame_limit, require_mask=not client)
        self._fast = self._decoder if type(self._decoder) is FrameDecoder else None
        self._encode = frames.encode_frame
        self._header = frames.frame_header
        self._mask = True if client else None
        self.state = OPEN
        self.frame_mode = False
        self.close_sent = None
        self.close_received = None
        self._out = None
        self.pending_bytes = 0
        self._msg_opcode = 0
        self._msg_size = 0
        self._msg_parts = None
        self._msg_framed = False
        self._utf8 = None
        self._partial_utf8 = None
        self._defer_failure = defer_failure
        self._failed = False

    # Incoming data

    cpdef list receive_data(self, data):
        """Take bytes from the peer and return the events they complete."""
        cdef list events = []
        cdef FrameDecoder fast = self._fast
        cdef Frame frame
        cdef object item
        if self.state == CLOSED or self._failed:
            return events
        decoder = self._decoder
        try:
            decoder.feed(data)
            if fast is not None:
                while True:
                    frame = fast._next()
                    if frame is None:
                        break
                    if self._frame(frame, frame.opcode, frame.fin, frame.payload, events):
                        break
            else:
                while True:
                    item = decoder.next_frame()
                    if item is None:
                        break
                    if self._frame(item, item.opcode, item.fin, item.payload, events):
                        break
            if (fast._held if fast is not None else decoder.buffered) and self.state == OPEN:
                self._check_partial()
        except ProtocolError as exc:
            self._fail(exc.code, exc.reason, events)
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8 in a text message", events)
        return events

    cdef int _frame(self, object frame, int opcode, bint fin, bytes payload,
                    list events) except -1:
        """Handle one frame; 1 when nothing more is to be read."""
        if opcode & 8:
            self._control_frame(opcode, payload, events)
            return self.state == CLOSED
        if (
            opcode
            and fin
            and not self._msg_opcode
            and not self.frame_mode
            and self.state == OPEN
        ):
            # The common case, an unfragmented message, decoded in one go.
            if opcode == OP_TEXT:
                events.append((OP_TEXT, payload.decode()))
            else:
                events.append((OP_BINARY, payload))
        else:
            self._data_frame(frame, opcode, fin, payload, events)
        return 0

    cdef int _data_frame(self, object frame, int opcode, bint fin, bytes payload,
                         list events) except -1:
        cdef bint text
        if self.state != OPEN:
            return 0  # after our close frame, data is discarded (RFC 6455 §1.4)
        if opcode == OP_CONTINUATION:
            if not self._msg_opcode:
                raise ProtocolError(1002, "continuation frame without a message to continue")
        else:
            if self._msg_opcode:
                raise ProtocolError(1002, "new data frame while a fragmented message is open")
            self._msg_opcode = opcode
            self._msg_size = 0
            self._msg_framed = self.frame_mode
            if opcode == OP_TEXT:
                if self._utf8 is None:
                    self._utf8 = _Utf8Decoder()
                else:
                    self._utf8.reset()
        self._msg_size += len(payload)
        if self._msg_size > self.max_message_size:
            raise ProtocolError(1009, f"message over {self.max_message_size} bytes")
        text = self._msg_opcode == OP_TEXT
        if text:
            # Fails at the first invalid byte, even when a sequence spans fragments.
            part = self._utf8.decode(payload, fin)
            if not fin:
                _check_pending_utf8(self._utf8)
        else:
            part = payload
        if self._msg_framed:
            events.append((FRAME, frame))
        elif part:
            if self._msg_parts is None:
                self._msg_parts = [part]
            else:
                self._msg_parts.append(part)
        if fin:
            if not self._msg_framed:
                parts = self._msg_parts or ()
                joined = ("" if text else b"").join(parts)
                events.append((OP_TEXT if text else OP_BINARY, joined))
                self._msg_parts = None
            self._msg_opcode = 0
        return 0

    cdef int _check_partial(self) except -1:
        """Fail fast on invalid UTF-8 in a text frame whose payload is still arriving (§8.1)."""
        partial = self._decoder.read_partial()
        if partial is None:
            return 0
        opcode, offset, data = partial
        utf8 = self._partial_utf8
        if utf8 is None:
            utf8 = self._partial_utf8 = _Utf8Decoder()
        if opcode == OP_TEXT and not self._msg_opcode:
            if not offset:
                utf8.reset()
        elif opcode == OP_CONTINUATION and self._msg_opcode == OP_TEXT:
            if not offset:
                utf8.setstate(self._utf8.getstate())
        else:
            return 0
        utf8.decode(data)
        _check_pending_utf8(utf8)
        return 0

    cdef int _control_frame(self, int opcode, bytes payload, list events) except -1:
        if opcode == OP_PING:
            if self.state == OPEN:
                self._queue(self._encode(OP_PONG, payload, mask=self._mask))
            events.append((OP_PING, payload))
        elif opcode == OP_PONG:
            events.append((OP_PONG, payload))
        else:
            code, reason = parse_close(payload)
            self.close_received = (code, reason)
            if self.state == OPEN:
                reply = 1000 if code == NO_STATUS else code
                self._queue(self._encode(OP_CLOSE, reply.to_bytes(2, "big"), mask=self._mask))
                self.close_sent = (reply, "")
            self.state = CLOSED
            events.append((OP_CLOSE, (code, reason)))
        return 0

    def receive_eof(self):
        """The transport is gone: nothing more can be sent or received."""
        self.state = CLOSED

    cdef int _fail(self, int code, str reason, list events) except -1:
        if self._defer_failure and self.state == OPEN:
            self._failed = True
            events.append((ERROR, (code, reason)))
            return 0
        self.fail(code, reason)
        events.append((OP_CLOSE, (code, reason)))
        return 0

    # Outgoing data

    cpdef send_text(self, text):
        """Queue a text message."""
        if self.state != OPEN:
            raise self._closed_error()
        self._send_data(OP_TEXT, text.encode(), True)

    cpdef send_binary(self, data):
        """Queue a binary message."""
        if self.state != OPEN:
            raise self._closed_error()
        # A mutable buffer could change before it is written.
        self._send_data(OP_BINARY, data if type(data) is bytes else bytes(data), True)

    cdef int _send_data(self, int opcode, bytes payload, bint fin) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
        if size < LARGE_PAYLOAD and self._mask is None and self._fast is not None:
            # The Cython codec's encoder, called directly: this runs for every message.
            self._queue(_encode(opcode, <const uint8_t*>PyBytes_AS_STRING(payload), size, fin,
                                False, None))
        elif size < LARGE_PAYLOAD or self._mask:
            self._queue(self._encode(opcode, payload, fin=fin, mask=self._mask))
        else:
            # The payload goes out as it is, after a header of its own.
            self._queue(self._header(opcode, len(payload), fin=fin))
            self._queue(payload)
        return 0

    def send_ping(self, payload=b""):
        """Queue a ping."""
        self._send_control(OP_PING, payload)

    def send_pong(self, payload=b""):
        """Queue a pong (unsolicited pongs are allowed, RFC 6455 §5.5.3)."""
        self._send_control(OP_PONG, payload)

    cdef int _send_control(self, int opcode, object payload) except -1:
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payloads are at most {MAX_CONTROL_PAYLOAD} bytes")
        if self.state != OPEN:
            raise self._closed_error()
        self._queue(self._encode(opcode, bytes(payload), mask=self._mask))
        return 0

    def send_close(self, code=1000, reason=""):
        """Start the closing handshake; ``ValueError`` for a code or reason that cannot be sent."""
        check_close_code(code)
        encoded = reason.encode()
        if len(encoded) > MAX_CLOSE_REASON:
            raise ValueError(f"close reason is over {MAX_CLOSE_REASON} bytes once encoded")
        if self.state != OPEN:
            raise self._closed_error()
        self._queue(self._encode(OP_CLOSE, code.to_bytes(2, "big") + encoded, mask=self._mask))
        self.close_sent = (code, reason)
        self.state = CLOSING

    def send_frame(self, frame):
        """Queue a frame as given; a close frame goes through :meth:`send_close`'s checks.

        RSV bits are refused: no extension is ever negotiated, so the peer would fail on them.
        """
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            raise ValueError("RSV bits need a negotiated extension; Haske negotiates none")
        opcode = frame.opcode
        if opcode == OP_CLOSE:
            try:
                code, reason = parse_close(frame.payload)
            except ProtocolError as exc:
                # The payload is the application's, so this is a usage error, not the peer's.
                raise ValueError(f"invalid close frame: {exc.reason}") from None
            if code == NO_STATUS:
                raise ValueError("close frames sent by Haske always carry a code")
            self.send_close(code, reason)
        elif opcode & 8:
            self._send_control(opcode, frame.payload)
        else:
            if self.state != OPEN:
                raise self._closed_error()
            payload = frame.payload if type(frame.payload) is bytes else bytes(frame.payload)
            self._send_data(opcode, payload, frame.fin)

    def send_encoded(self, data):
        """Queue pre-encoded whole frames, e.g. a broadcast frame encoded once for many peers."""
        if self.state != OPEN:
            raise self._closed_error()
        self._queue(data)

    def fail(self, code, reason=""):
        """Fail the connection: send a close frame with ``code`` (unless one was sent) and stop."""
        if self.state == OPEN:
            # Cut to fit a control frame without splitting a character.
            encoded = reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
            self._queue(self._encode(OP_CLOSE, code.to_bytes(2, "big") + encoded, mask=self._mask))
            self.close_sent = (code, reason)
        self.state = CLOSED

    cdef int _queue(self, object data) except -1:
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)
        self.pending_bytes += len(data)
        return 0

    cdef object _closed_error(self):
        return ConnectionClosed(self.close_code, self.close_reason or None)

    @property
    def close_code(self):
        """The code to report for a closed connection: the peer's, else ours, else 1006."""
        if self.close_received is not None:
            return self.close_received[0]
        if self.close_sent is not None:
            return self.close_sent[0]
        return ABNORMAL_CLOSURE

    @property
    def close_reason(self):
        """The reason that goes with :attr:`close_code`."""
        if self.close_received is not None:
            return self.close_received[1]
        if self.close_sent is not None:
            return self.close_sent[1]
        return ""

    cpdef list data_to_send(self):
        """Everything queued for the peer, in order; the queue is empty afterwards."""
        out = self._out
        if out is None:
            return []
        self._out = None
        self.pending_bytes = 0
        return out

    def drop_oldest(self, nbytes):
        """Discard the oldest queued complete messages until ``nbytes`` are freed.

        Control frames and fragments of a fragmented message are never discarded. When the
        droppable messages add up to less than ``nbytes``, all of them go; the result says
        whether ``nbytes`` were freed.
        """
        entries = self._out or []
        kept = []
        freed = 0
        for start, stop, droppable in _queued_units(entries):
            if droppable and freed < nbytes:
                freed += sum(len(entry) for entry in entries[start:stop])
            else:
                kept += entries[start:stop]
        self._out = kept or None
        self.pending_bytes -= freed
        return freed >= nbytes
