"""RFC 6455 §5 frame codec: the readable reference twin of ``haske._speedups.frames``.

Both implementations expose the same names, accept the same input and raise the same errors
with the same messages; the tests hold them to it.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from typing import Any

from haske.exceptions import ProtocolError

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

OPCODE_NAMES = {
    OP_CONTINUATION: "OP_CONTINUATION",
    OP_TEXT: "OP_TEXT",
    OP_BINARY: "OP_BINARY",
    OP_CLOSE: "OP_CLOSE",
    OP_PING: "OP_PING",
    OP_PONG: "OP_PONG",
}

MAX_CONTROL_PAYLOAD = 125
MAX_LENGTH = 2**63 - 1
RSV_BITS = 0x70

#: Frames whose payload is longer than this print as ``<N bytes>`` in ``repr``.
REPR_PAYLOAD_LIMIT = 64


def _as_bytes(data: Any, what: str) -> bytes:
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"{what} must be a bytes-like object, not {type(data).__name__!r}"
        ) from None
    with view:
        return view.tobytes()


def _check_opcode(opcode: int) -> int:
    opcode = operator.index(opcode)
    if opcode not in OPCODE_NAMES:
        raise ValueError(f"invalid opcode {opcode!r}: expected one of 0, 1, 2, 8, 9, 10")
    return opcode


def _mask_key(mask: Any) -> bytes | None:
    if mask is None or mask is False:
        return None
    if mask is True:
        return os.urandom(4)
    if not isinstance(mask, (bytes, bytearray, memoryview)):
        raise TypeError(f"mask must be None, a bool or 4 bytes, not {type(mask).__name__!r}")
    key = bytes(mask)
    if len(key) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(key)}")
    return key


class Frame:
    """One WebSocket frame: an immutable value."""

    __slots__ = ("opcode", "payload", "fin", "rsv1", "rsv2", "rsv3")

    opcode: int
    payload: bytes
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool

    def __init__(
        self,
        opcode: int,
        payload: bytes = b"",
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        init = object.__setattr__
        init(self, "opcode", _check_opcode(opcode))
        init(self, "payload", _as_bytes(payload, "payload"))
        init(self, "fin", bool(fin))
        init(self, "rsv1", bool(rsv1))
        init(self, "rsv2", bool(rsv2))
        init(self, "rsv3", bool(rsv3))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Frame is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Frame is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[int, bytes, bool, bool, bool, bool]:
        return (self.opcode, self.payload, self.fin, self.rsv1, self.rsv2, self.rsv3)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[type[Frame], tuple[int, bytes, bool, bool, bool, bool]]:
        return (Frame, self._key())

    def __repr__(self) -> str:
        if len(self.payload) > REPR_PAYLOAD_LIMIT:
            payload = f"<{len(self.payload)} bytes>"
        else:
            payload = repr(self.payload)
        flags = "".join(
            f", {name}={value}"
            for name, value, default in (
                ("fin", self.fin, True),
                ("rsv1", self.rsv1, False),
                ("rsv2", self.rsv2, False),
                ("rsv3", self.rsv3, False),
            )
            if value != default
        )
        return f"Frame({OPCODE_NAMES[self.opcode]}, {payload}{flags})"


class FrameDecoder:
    """Incremental frame parser: feed bytes as they arrive, then take the complete frames.

    Every header is checked as soon as its bytes are in, so a bad or oversized frame is refused
    before its payload is read or any room is made for it. Once it has raised, the decoder stays
    failed: every later call raises the same error.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = 16 * 1024 * 1024,
        require_mask: bool = True,
        allowed_rsv: int = 0,
    ) -> None:
        if type(max_frame_size) is not int or max_frame_size < 0:
            raise ValueError(f"max_frame_size must be an int >= 0, got {max_frame_size!r}")
        if type(allowed_rsv) is not int or allowed_rsv & ~RSV_BITS:
            raise ValueError(
                f"allowed_rsv must combine 0x40 (RSV1), 0x20 (RSV2) and 0x10 (RSV3), "
                f"got {allowed_rsv!r}"
            )
        self._max_frame_size = max_frame_size
        self._require_mask = bool(require_mask)
        self._forbidden_rsv = RSV_BITS & ~allowed_rsv
        self._buffer = bytearray()
        # Payload bytes of the frame in progress already returned by read_partial().
        self._exposed = 0
        self._failure: tuple[int, str] | None = None

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned in a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer."""
        if self._failure is not None:
            raise ProtocolError(*self._failure)
        if isinstance(data, (bytes, bytearray)):
            self._buffer += data
        else:
            self._buffer += _as_bytes(data, "data")

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None when more bytes are needed."""
        if self._failure is not None:
            raise ProtocolError(*self._failure)
        header = self._header()
        if header is None:
            return None
        head, header_size, length = header
        buffer = self._buffer
        end = header_size + length
        if len(buffer) < end:
            return None

        with memoryview(buffer) as view:
            payload = view[header_size:end].tobytes()
            if self._require_mask:
                payload = apply_mask(payload, view[header_size - 4 : header_size])
        del buffer[:end]
        self._exposed = 0
        return Frame(
            head & 0x0F,
            payload,
            bool(head & 0x80),
            bool(head & 0x40),
            bool(head & 0x20),
            bool(head & 0x10),
        )

    def read_partial(self) -> tuple[int, int, bytes] | None:
        """The frame whose header is in but not all of its payload, as far as it arrived.

        Returns ``(opcode, offset, data)``: ``data`` is its payload, unmasked, from ``offset``
        (what earlier calls returned) to the last byte received. None when there is no such
        frame, including when a complete frame is waiting for :meth:`next_frame`.
        """
        if self._failure is not None:
            raise ProtocolError(*self._failure)
        header = self._header()
        if header is None:
            return None
        head, header_size, length = header
        buffer = self._buffer
        received = len(buffer) - header_size
        if received >= length:
            return None
        offset = self._exposed
        self._exposed = received
        with memoryview(buffer) as view:
            data = view[header_size + offset :].tobytes()
            if self._require_mask:
                key = view[header_size - 4 : header_size].tobytes()
                shift = offset % 4
                data = apply_mask(data, key[shift:] + key[:shift])
        return head & 0x0F, offset, data

    def _header(self) -> tuple[int, int, int] | None:
        """First byte, header size and payload length of the next frame once its header is in.

        Raises for a header that breaks a rule, as soon as the bytes that decide it are in.
        """
        buffer = self._buffer
        available = len(buffer)
        if available < 2:
            return None
        head, second = buffer[0], buffer[1]
        self._check_start(head, second)

        length = second & 0x7F
        header_size = 2
        if length == 126:
            if available < 4:
                return None
            length = int.from_bytes(buffer[2:4], "big")
            header_size = 4
        elif length == 127:
            if available < 10:
                return None
            length = int.from_bytes(buffer[2:10], "big")
            header_size = 10
            if length > MAX_LENGTH:
                self._fail(1002, "64-bit payload length has its most significant bit set")
        if (head & 0x0F) >= OP_CLOSE and length > MAX_CONTROL_PAYLOAD:
            self._fail(1002, "control frame payload longer than 125 bytes")
        if length > self._max_frame_size:
            self._fail(
                1009,
                f"frame payload of {length} bytes exceeds max_frame_size {self._max_frame_size}",
            )
        if self._require_mask:
            header_size += 4
            if available < header_size:
                return None
        return head, header_size, length

    def __iter__(self) -> Iterator[Frame]:
        """Yield complete frames until more bytes are needed."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _check_start(self, head: int, second: int) -> None:
        """Apply the rules that the first two bytes of a header decide."""
        rsv = head & self._forbidden_rsv
        if rsv:
            self._fail(1002, f"reserved bits {rsv:#x} set without a negotiated extension")
        opcode = head & 0x0F
        if opcode not in OPCODE_NAMES:
            self._fail(1002, f"reserved opcode {opcode:#x}")
        if opcode >= OP_CLOSE and not head & 0x80:
            self._fail(1002, "fragmented control frame")
        if second & 0x80:
            if not self._require_mask:
                self._fail(1002, "server frame is masked")
        elif self._require_mask:
            self._fail(1002, "client frame is not masked")

    def _fail(self, code: int, reason: str) -> None:
        # A failed decoder holds nothing: the connection is going away.
        self._failure = (code, reason)
        self._buffer = bytearray()
        self._exposed = 0
        raise ProtocolError(code, reason)


def _header(opcode: int, length: int, fin: bool, rsv1: bool, masked: bool) -> bytes:
    opcode = _check_opcode(opcode)
    if opcode >= OP_CLOSE:
        if not fin:
            raise ValueError("control frames cannot be fragmented")
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload of {length} bytes exceeds 125 bytes")
    head = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes((head, mask_bit | length))
    if length < 65536:
        return bytes((head, mask_bit | 126)) + length.to_bytes(2, "big")
    return bytes((head, mask_bit | 127)) + length.to_bytes(8, "big")


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | bool | None = None,
) -> bytes:
    """Serialize one frame: unmasked (server) by default; ``mask=True`` or a 4-byte key masks it."""
    data = _as_bytes(payload, "payload")
    key = _mask_key(mask)
    header = _header(opcode, len(data), fin, rsv1, key is not None)
    if key is None:
        return header + data
    return header + key + apply_mask(data, key)


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """The header of an unmasked frame, for ``transport.writelines([header, payload])``."""
    if type(length) is not int or not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be an int between 0 and 2**63 - 1, got {length!r}")
    return _header(opcode, length, fin, rsv1, False)


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray | memoryview) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (masking and unmasking are the same)."""
    data = _as_bytes(data, "data")
    key = _as_bytes(mask, "mask")
    if len(key) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(key)}")
    size = len(data)
    # One big-int XOR runs in C; a per-byte Python loop would be ~50x slower.
    repeated = (key * (size // 4 + 1))[:size]
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(size, "little")
