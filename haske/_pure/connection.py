"""Sans-I/O RFC 6455 connection, in pure Python: the twin of :mod:`haske._speedups.connection`.

:mod:`haske.connection` documents the API and exports the implementation the capability probe
chose; this module also holds the constants and helpers both implementations share.
"""

from __future__ import annotations

import codecs
from types import ModuleType
from typing import Any

from haske import _backends, limits
from haske.exceptions import ConnectionClosed, ProtocolError

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
#: Event kind of a data frame delivered in frame mode (not an opcode: opcodes stop at 15).
FRAME = 16
#: Event kind of a protocol error whose failure is left to the caller (``defer_failure``).
ERROR = 17

#: Connection states.
OPEN, CLOSING, CLOSED = 1, 2, 3

#: Like uvicorn's ``ws_max_size``.
DEFAULT_MAX_MESSAGE_SIZE = limits.MAX_MESSAGE_SIZE

#: Payloads from this size on go out as a separate header and the payload object itself.
LARGE_PAYLOAD = 16 * 1024

#: Close codes a peer may send and an endpoint may send (RFC 6455 §7.4).
VALID_CLOSE_CODES = (
    frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) | frozenset(range(3000, 5000))
)
#: Codes that only describe a closed connection locally and never appear on the wire.
RESERVED_CLOSE_CODES = frozenset({1005, 1006, 1015})
#: What a close frame without a code means (RFC 6455 §7.1.5).
NO_STATUS = 1005
#: The connection went away without a close frame.
ABNORMAL_CLOSURE = 1006

_MAX_CONTROL_PAYLOAD = 125
_MAX_CLOSE_REASON = 123
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def check_close_code(code: int) -> None:
    """Raise ``ValueError`` unless an endpoint may send ``code`` in a close frame."""
    if code in RESERVED_CLOSE_CODES:
        raise ValueError(f"close code {code} is reserved for local use and can never be sent")
    if code not in VALID_CLOSE_CODES:
        raise ValueError(f"close code {code} is not valid: use 1000-1003, 1007-1014 or 3000-4999")


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload; ``ProtocolError`` if it is malformed."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(1002, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in VALID_CLOSE_CODES:
        raise ProtocolError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(1007, "close reason is not valid UTF-8") from None
    return code, reason


def _check_pending_utf8(utf8: codecs.IncrementalDecoder) -> None:
    """Fail on a UTF-16 surrogate that the incremental decoder holds back.

    CPython keeps ED A0-BF pending until the sequence is complete, but it can never be valid.
    """
    pending = utf8.getstate()[0]
    if len(pending) > 1 and pending[0] == 0xED and pending[1] > 0x9F:
        raise ProtocolError(1007, "invalid UTF-8 in a text message")


def _frame_extent(entry: bytes, pos: int) -> tuple[int, int] | None:
    """First header byte and total length of the encoded frame starting at ``entry[pos]``."""
    if len(entry) - pos < 2:
        return None
    first, second = entry[pos], entry[pos + 1]
    length = second & 0x7F
    header = 2
    if length == 126:
        header = 4
        length = int.from_bytes(entry[pos + 2 : pos + 4], "big")
    elif length == 127:
        header = 10
        length = int.from_bytes(entry[pos + 2 : pos + 10], "big")
    if second & 0x80:
        header += 4
    if len(entry) - pos < header:
        return None
    return first, header + length


def _queued_units(entries: list[bytes]) -> list[tuple[int, int, bool]]:
    """Split queued output into ``(start, stop, droppable)`` runs of whole frames.

    An entry holds one or more whole frames, except that a large frame's payload follows its
    header as the next entry. A run is droppable when every frame in it is a complete text or
    binary message (FIN set): control frames and fragments are never dropped.
    """
    units = []
    index, count = 0, len(entries)
    while index < count:
        start = index
        entry = entries[index]
        index += 1
        droppable = True
        pos = 0
        while pos < len(entry):
            extent = _frame_extent(entry, pos)
            if extent is None:
                units.append((start, count, False))
                return units
            first, size = extent
            droppable = droppable and (first == 0x81 or first == 0x82)
            pos += size
        missing = pos - len(entry)
        while missing > 0 and index < count:
            missing -= len(entries[index])
            index += 1
        units.append((start, index, droppable))
    return units


class Connection:
    """An RFC 6455 connection after the opening handshake, as a pure state machine.

    ``client=False`` is the server side: incoming frames must be masked and outgoing ones are not;
    ``client=True`` is the reverse. ``frames`` is the frame codec module; by default the one the
    capability probe chose.

    On a protocol error the connection fails at once: the close frame is queued and the last
    event is ``OP_CLOSE``. With ``defer_failure=True`` the last event is ``ERROR`` instead and
    the connection stays open for sending, so that the messages that arrived before the error
    can still be answered; nothing more is read, and the caller calls :meth:`fail`.
    """

    # A server holds one per open connection: slots, and the output list, the parts of a
    # fragmented message and the UTF-8 checkers only while they are in use, keep an idle one small.
    __slots__ = (
        "_decoder",
        "_defer_failure",
        "_encode",
        "_failed",
        "_header",
        "_mask",
        "_msg_framed",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_out",
        "_partial_utf8",
        "_utf8",
        "client",
        "close_received",
        "close_sent",
        "frame_mode",
        "frames",
        "max_message_size",
        "pending_bytes",
        "state",
    )

    def __init__(
        self,
        *,
        client: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        frames: ModuleType | None = None,
        defer_failure: bool = False,
    ) -> None:
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
        self._encode = frames.encode_frame
        self._header = frames.frame_header
        self._mask: bool | None = True if client else None
        #: ``OPEN``, then ``CLOSING`` once we sent a close frame, ``CLOSED`` when done.
        self.state = OPEN
        #: Deliver data frames as ``FRAME`` events instead of reassembled messages.
        self.frame_mode = False
        self.close_sent: tuple[int, str] | None = None
        self.close_received: tuple[int, str] | None = None
        # What is queued for the peer; None when nothing is.
        self._out: list[bytes] | None = None
        #: Bytes queued and not yet handed over by :meth:`data_to_send` (an attribute, not a
        #: property: the server reads it for every message and every broadcast frame).
        self.pending_bytes = 0
        # The message being reassembled: its opcode (0: none), size so far, parts, and whether
        # it is delivered frame by frame.
        self._msg_opcode = 0
        self._msg_size = 0
        self._msg_parts: list[Any] | None = None
        self._msg_framed = False
        # Checks a fragmented text message; made for the first one.
        self._utf8: codecs.IncrementalDecoder | None = None
        # Checks the part of a text frame that arrived, from the message's state at its start;
        # made for the first frame that arrives in pieces.
        self._partial_utf8: codecs.IncrementalDecoder | None = None
        self._defer_failure = defer_failure
        self._failed = False

    # Incoming data

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[tuple[int, Any]]:
        """Take bytes from the peer and return the events they complete."""
        events: list[tuple[int, Any]] = []
        if self.state == CLOSED or self._failed:
            return events
        decoder = self._decoder
        try:
            decoder.feed(data)
            for frame in decoder:
                opcode = frame.opcode
                if opcode & 8:
                    self._control_frame(opcode, frame.payload, events)
                    if self.state == CLOSED:
                        break
                elif (
                    opcode
                    and frame.fin
                    and not self._msg_opcode
                    and not self.frame_mode
                    and self.state == OPEN
                ):
                    # The common case, an unfragmented message, decoded in one go.
                    if opcode == OP_TEXT:
                        events.append((OP_TEXT, frame.payload.decode()))
                    else:
                        events.append((OP_BINARY, frame.payload))
                else:
                    self._data_frame(frame, events)
            if decoder.buffered and self.state == OPEN:
                self._check_partial()
        except ProtocolError as exc:
            self._fail(exc.code, exc.reason, events)
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8 in a text message", events)
        return events

    def _data_frame(self, frame: Any, events: list[tuple[int, Any]]) -> None:
        if self.state != OPEN:
            return  # after our close frame, data is discarded (RFC 6455 §1.4)
        opcode = frame.opcode
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
        payload = frame.payload
        fin = frame.fin
        self._msg_size += len(payload)
        if self._msg_size > self.max_message_size:
            raise ProtocolError(1009, f"message over {self.max_message_size} bytes")
        text = self._msg_opcode == OP_TEXT
        if text:
            utf8 = self._utf8
            assert utf8 is not None
            # Fails at the first invalid byte, even when a sequence spans fragments.
            part: Any = utf8.decode(payload, fin)
            if not fin:
                _check_pending_utf8(utf8)
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
                joined: Any = ("" if text else b"").join(parts)
                events.append((OP_TEXT if text else OP_BINARY, joined))
                self._msg_parts = None
            self._msg_opcode = 0

    def _check_partial(self) -> None:
        """Fail fast on invalid UTF-8 in a text frame whose payload is still arriving (§8.1)."""
        partial = self._decoder.read_partial()
        if partial is None:
            return
        opcode, offset, data = partial
        utf8 = self._partial_utf8
        if utf8 is None:
            utf8 = self._partial_utf8 = _Utf8Decoder()
        if opcode == OP_TEXT and not self._msg_opcode:
            if not offset:
                utf8.reset()
        elif opcode == OP_CONTINUATION and self._msg_opcode == OP_TEXT:
            if not offset:
                assert self._utf8 is not None  # made when the text message began
                utf8.setstate(self._utf8.getstate())
        else:
            return
        utf8.decode(data)
        _check_pending_utf8(utf8)

    def _control_frame(self, opcode: int, payload: bytes, events: list[tuple[int, Any]]) -> None:
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

    def receive_eof(self) -> None:
        """The transport is gone: nothing more can be sent or received."""
        self.state = CLOSED

    def _fail(self, code: int, reason: str, events: list[tuple[int, Any]]) -> None:
        if self._defer_failure and self.state == OPEN:
            self._failed = True
            events.append((ERROR, (code, reason)))
            return
        self.fail(code, reason)
        events.append((OP_CLOSE, (code, reason)))

    # Outgoing data

    def send_text(self, text: str) -> None:
        """Queue a text message."""
        if self.state != OPEN:
            raise self._closed_error()
        self._send_data(OP_TEXT, text.encode())

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a binary message."""
        if self.state != OPEN:
            raise self._closed_error()
        # A mutable buffer could change before it is written.
        self._send_data(OP_BINARY, data if type(data) is bytes else bytes(data))

    def _send_data(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        if len(payload) < LARGE_PAYLOAD or self._mask:
            self._queue(self._encode(opcode, payload, fin=fin, mask=self._mask))
        else:
            # The payload goes out as it is, after a header of its own.
            self._queue(self._header(opcode, len(payload), fin=fin))
            self._queue(payload)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping."""
        self._send_control(OP_PING, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        """Queue a pong (unsolicited pongs are allowed, RFC 6455 §5.5.3)."""
        self._send_control(OP_PONG, payload)

    def _send_control(self, opcode: int, payload: bytes) -> None:
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payloads are at most {_MAX_CONTROL_PAYLOAD} bytes")
        if self.state != OPEN:
            raise self._closed_error()
        self._queue(self._encode(opcode, bytes(payload), mask=self._mask))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; ``ValueError`` for a code or reason that cannot be sent."""
        check_close_code(code)
        encoded = reason.encode()
        if len(encoded) > _MAX_CLOSE_REASON:
            raise ValueError(f"close reason is over {_MAX_CLOSE_REASON} bytes once encoded")
        if self.state != OPEN:
            raise self._closed_error()
        self._queue(self._encode(OP_CLOSE, code.to_bytes(2, "big") + encoded, mask=self._mask))
        self.close_sent = (code, reason)
        self.state = CLOSING

    def send_frame(self, frame: Any) -> None:
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

    def send_encoded(self, data: bytes) -> None:
        """Queue pre-encoded whole frames, e.g. a broadcast frame encoded once for many peers."""
        if self.state != OPEN:
            raise self._closed_error()
        # _queue, inlined: a broadcast calls this once per member.
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        self.pending_bytes += len(data)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection: send a close frame with ``code`` (unless one was sent) and stop."""
        if self.state == OPEN:
            # Cut to fit a control frame without splitting a character.
            encoded = reason.encode()[:_MAX_CLOSE_REASON].decode(errors="ignore").encode()
            self._queue(self._encode(OP_CLOSE, code.to_bytes(2, "big") + encoded, mask=self._mask))
            self.close_sent = (code, reason)
        self.state = CLOSED

    def _queue(self, data: bytes) -> None:
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)
        self.pending_bytes += len(data)

    def _closed_error(self) -> ConnectionClosed:
        code, reason = self.close_code, self.close_reason
        return ConnectionClosed(code, reason or None)

    @property
    def close_code(self) -> int:
        """The code to report for a closed connection: the peer's, else ours, else 1006."""
        if self.close_received is not None:
            return self.close_received[0]
        if self.close_sent is not None:
            return self.close_sent[0]
        return ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str:
        """The reason that goes with :attr:`close_code`."""
        if self.close_received is not None:
            return self.close_received[1]
        if self.close_sent is not None:
            return self.close_sent[1]
        return ""

    def data_to_send(self) -> list[bytes]:
        """Everything queued for the peer, in order; the queue is empty afterwards."""
        out = self._out
        if out is None:
            return []
        self._out = None
        self.pending_bytes = 0
        return out

    def drop_oldest(self, nbytes: int) -> bool:
        """Discard the oldest queued complete messages until ``nbytes`` are freed.

        Control frames and fragments of a fragmented message are never discarded. When the
        droppable messages add up to less than ``nbytes``, all of them go; the result says
        whether ``nbytes`` were freed.
        """
        entries = self._out or []
        kept: list[bytes] = []
        freed = 0
        for start, stop, droppable in _queued_units(entries):
            if droppable and freed < nbytes:
                freed += sum(len(entry) for entry in entries[start:stop])
            else:
                kept += entries[start:stop]
        self._out = kept or None
        self.pending_bytes -= freed
        return freed >= nbytes
