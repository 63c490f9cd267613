# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RFC 6455 §5 frame codec, compiled: the twin of :mod:`haske._pure.frames`.

The decoder parses complete frames straight out of the fed ``bytes``, keeps the fed objects of a
frame that spans several reads, and unmasks each payload in 8-byte words while copying it into
the ``bytes`` object it returns: one copy per payload byte. Its one reusable buffer only holds a
header split across reads, or input that cannot be kept by reference.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memmove

from haske._speedups._build cimport HASKE_CYTHON_VERSION, HASKE_VERSION

import os
import sys

from haske.exceptions import ProtocolError

__version__ = HASKE_VERSION.decode("ascii")
CYTHON_VERSION = HASKE_CYTHON_VERSION.decode("ascii")

cdef enum:
    CONTROL = 8
    CONTROL_PAYLOAD_LIMIT = 125
    # What _read_header found wrong, as negative sizes.
    BAD_RSV = -1
    BAD_OPCODE = -2
    FRAGMENTED_CONTROL = -3
    LONG_CONTROL = -4
    UNMASKED = -5
    MASKED = -6
    BAD_LENGTH = -7
    TOO_BIG = -8
    # An emptied receive buffer larger than this goes back to the allocator, so an idle
    # connection does not keep the memory of its largest frame.
    KEEP_CAPACITY = 256 * 1024
    MIN_CAPACITY = 4096
    # Fed bytes objects at least this large are kept by reference while a frame collects.
    MIN_PIECE = 4096


OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

OPCODE_NAMES = {
    OP_CONTINUATION: "OP_CONTINUATION",
    OP_TEXT: "OP_TEXT",
    OP_BINARY: "OP_BINARY",
    OP_CLOSE: "OP_CLOSE",
    OP_PING: "OP_PING",
    OP_PONG: "OP_PONG",
}

MAX_CONTROL_PAYLOAD = CONTROL_PAYLOAD_LIMIT
MAX_LENGTH = 2**63 - 1
RSV_BITS = 0x70

#: Frames whose payload is longer than this print as ``<N bytes>`` in ``repr``.
REPR_PAYLOAD_LIMIT = 64


cdef inline bint _known_opcode(int opcode) noexcept:
    return 0 <= opcode <= 2 or 8 <= opcode <= 10


cdef inline void _xor_copy(uint8_t* target, const uint8_t* source, Py_ssize_t size,
                           const uint8_t* key, Py_ssize_t phase) noexcept nogil:
    """Copy ``size`` bytes XORed with the 4-byte key, starting ``phase`` bytes into its cycle."""
    cdef uint8_t pattern[8]
    cdef uint64_t mask, word
    cdef Py_ssize_t i
    for i in range(8):
        pattern[i] = key[(phase + i) & 3]
    memcpy(&mask, pattern, 8)
    i = 0
    # memcpy keeps unaligned loads and stores defined; compilers emit plain word moves.
    while i + 8 <= size:
        memcpy(&word, source + i, 8)
        word ^= mask
        memcpy(target + i, &word, 8)
        i += 8
    while i < size:
        target[i] = source[i] ^ pattern[i & 7]
        i += 1


cdef int _get_view(object data, Py_buffer* view, str what) except -1:
    if not PyObject_CheckBuffer(data):
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__!r}")
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except BufferError:
        # A strided memoryview cannot be read as one block: read a contiguous copy.
        PyObject_GetBuffer(bytes(data), view, PyBUF_SIMPLE)
    return 0


cdef bytes _to_bytes(object data, str what):
    if type(data) is bytes:
        return <bytes>data
    if not PyObject_CheckBuffer(data):
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__!r}")
    return bytes(data)


cdef int _check_frame(int opcode, uint64_t length, bint fin) except -1:
    if not _known_opcode(opcode):
        raise ValueError(f"invalid opcode {opcode!r}: expected one of 0, 1, 2, 8, 9, 10")
    if opcode >= CONTROL:
        if not fin:
            raise ValueError("control frames cannot be fragmented")
        if length > CONTROL_PAYLOAD_LIMIT:
            raise ValueError(f"control frame payload of {length} bytes exceeds 125 bytes")
    return 0


@cython.final
@cython.freelist(256)
cdef class Frame:
    """One WebSocket frame: an immutable value."""

    def __init__(self, int opcode, payload=b"", bint fin=True, bint rsv1=False,
                 bint rsv2=False, bint rsv3=False):
        if not _known_opcode(opcode):
            raise ValueError(f"invalid opcode {opcode!r}: expected one of 0, 1, 2, 8, 9, 10")
        self.opcode = opcode
        self.payload = _to_bytes(payload, "payload")
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        cdef Frame that = <Frame>other
        return (
            self.opcode == that.opcode
            and self.fin == that.fin
            and self.rsv1 == that.rsv1
            and self.rsv2 == that.rsv2
            and self.rsv3 == that.rsv3
            and self.payload == that.payload
        )

    def __hash__(self):
        return hash((self.opcode, self.payload, self.fin, self.rsv1, self.rsv2, self.rsv3))

    def __reduce__(self):
        return (Frame, (self.opcode, self.payload, self.fin, self.rsv1, self.rsv2, self.rsv3))

    def __repr__(self):
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


cdef inline Frame _new_frame(uint8_t head, bytes payload):
    cdef Frame frame = Frame.__new__(Frame)
    frame.opcode = head & 0x0F
    frame.payload = payload
    frame.fin = (head & 0x80) != 0
    frame.rsv1 = (head & 0x40) != 0
    frame.rsv2 = (head & 0x20) != 0
    frame.rsv3 = (head & 0x10) != 0
    return frame


@cython.final
cdef class FrameDecoder:
    """Incremental frame parser: feed bytes as they arrive, then take the complete frames.

    Every header is checked as soon as its bytes are in, so a bad or oversized frame is refused
    before its payload is read or any room is made for it. Once it has raised, the decoder stays
    failed: every later call raises the same error.
    """

    def __init__(self, *, max_frame_size=16 * 1024 * 1024, require_mask=True, allowed_rsv=0):
        if type(max_frame_size) is not int or max_frame_size < 0:
            raise ValueError(f"max_frame_size must be an int >= 0, got {max_frame_size!r}")
        if type(allowed_rsv) is not int or allowed_rsv & ~RSV_BITS:
            raise ValueError(
                f"allowed_rsv must combine 0x40 (RSV1), 0x20 (RSV2) and 0x10 (RSV3), "
                f"got {allowed_rsv!r}"
            )
        self._max_frame_size = min(max_frame_size, sys.maxsize)
        self._require_mask = bool(require_mask)
        self._forbidden_rsv = RSV_BITS & ~allowed_rsv

    def __dealloc__(self):
        PyMem_Free(self._data)

    @property
    def buffered(self):
        """Bytes fed but not yet returned in a frame."""
        return self._held

    def feed(self, data):
        """Add bytes received from the peer."""
        cdef Py_buffer view
        if self._error_code:
            self._raise_failure()
        if type(data) is bytes:
            self._absorb(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                         <bytes>data)
            return
        _get_view(data, &view, "data")
        try:
            self._absorb(<const uint8_t*>view.buf, view.len, None)
        finally:
            PyBuffer_Release(&view)

    def next_frame(self):
        """Return the next complete frame, or None when more bytes are needed."""
        return self._next()

    def __iter__(self):
        """Yield complete frames until more bytes are needed."""
        return self

    def read_partial(self):
        """The frame whose header is in but not all of its payload, as far as it arrived.

        Returns ``(opcode, offset, data)``: ``data`` is its payload, unmasked, from ``offset``
        (what earlier calls returned) to the last byte received. None when there is no such
        frame, including when a complete frame is waiting for :meth:`next_frame`.
        """
        cdef Py_ssize_t received, offset
        cdef bytes data
        if self._error_code:
            self._raise_failure()
        if self._pieces is None and self._payload is None and not self._begin_unparsed():
            return None
        if self._pieces is not None:
            received = self._collected
        else:
            received = self._filled
            if received == self._length:
                return None
        offset = self._exposed
        data = PyBytes_FromStringAndSize(NULL, received - offset)
        if self._pieces is not None:
            self._unmask_pieces(<uint8_t*>PyBytes_AS_STRING(data), offset)
        else:
            memcpy(PyBytes_AS_STRING(data), PyBytes_AS_STRING(self._payload) + offset,
                   received - offset)
        self._exposed = received
        return self._head & 0x0F, offset, data

    def __next__(self):
        cdef Frame frame = self._next()
        if frame is None:
            raise StopIteration
        return frame

    cdef Frame _next(self):
        cdef Py_ssize_t consumed, size
        cdef const uint8_t* chunk
        cdef Frame frame
        if self._error_code:
            self._raise_failure()
        if self._payload is not None and self._filled == self._length:
            return self._take_payload()
        if self._payload is not None or self._pieces is not None:
            self._starved = True
            return None
        if self._chunk is not None:
            chunk = <const uint8_t*>PyBytes_AS_STRING(self._chunk)
            size = PyBytes_GET_SIZE(self._chunk)
            frame = self._parse(chunk + self._chunk_pos, size - self._chunk_pos, &consumed,
                                self._chunk)
            self._chunk_pos += consumed
            if frame is None:
                # At most the start of a header is left: keep those bytes, not the chunk.
                self._append(<const char*>chunk + self._chunk_pos, size - self._chunk_pos)
                self._chunk = None
                self._starved = True
            elif self._chunk_pos == size:
                self._chunk = None
            return frame
        frame = self._parse(<const uint8_t*>self._data + self._start, self._end - self._start,
                            &consumed, None)
        self._start += consumed
        if self._start == self._end:
            self._release_buffer()
        if frame is None:
            self._starved = True
        return frame

    cdef bint _begin_unparsed(self) except -1:
        """Begin the first frame of unparsed input if its header is in but not all its payload.

        ``feed`` keeps input unparsed until frames are read; read_partial() needs that frame.
        Raises for a bad header, as reading frames would.
        """
        cdef const uint8_t* data
        cdef Py_ssize_t size, header_size
        cdef uint64_t length = 0
        if self._chunk is not None:
            data = <const uint8_t*>PyBytes_AS_STRING(self._chunk) + self._chunk_pos
            size = PyBytes_GET_SIZE(self._chunk) - self._chunk_pos
        else:
            data = <const uint8_t*>self._data + self._start
            size = self._end - self._start
        header_size = self._read_header(data, size, &length)
        if header_size == 0 or (header_size > 0 and size - header_size >= <Py_ssize_t>length):
            return False
        # _next() raises for a bad header, and begins a frame whose payload is incomplete.
        self._next()
        return self._pieces is not None or self._payload is not None

    cdef Frame _parse(self, const uint8_t* data, Py_ssize_t available, Py_ssize_t* consumed,
                      bytes owner):
        """Take one frame from ``data``, or start the frame whose payload is not all here."""
        cdef uint64_t length = 0
        cdef Py_ssize_t header_size = self._read_header(data, available, &length)
        cdef Py_ssize_t have
        cdef bytes payload
        consumed[0] = 0
        if header_size <= 0:
            if header_size < 0:
                self._fail(header_size, data[0], length)
            return None
        have = available - header_size
        consumed[0] = available
        if have < <Py_ssize_t>length:
            self._begin_frame(data, header_size, <Py_ssize_t>length)
            self._continue_frame(data + header_size, have, owner)
            return None
        payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
        if self._require_mask:
            _xor_copy(<uint8_t*>PyBytes_AS_STRING(payload), data + header_size,
                      <Py_ssize_t>length, data + header_size - 4, 0)
        else:
            memcpy(PyBytes_AS_STRING(payload), data + header_size, length)
        consumed[0] = header_size + <Py_ssize_t>length
        self._held -= consumed[0]
        return _new_frame(data[0], payload)

    cdef Py_ssize_t _read_header(self, const uint8_t* data, Py_ssize_t available,
                                 uint64_t* length) noexcept:
        """The header size once it is complete and valid, 0 while incomplete, < 0 if bad."""
        cdef uint8_t head, second
        cdef int opcode
        cdef Py_ssize_t size
        cdef uint64_t declared
        if available < 2:
            return 0
        head = data[0]
        second = data[1]
        if head & self._forbidden_rsv:
            return BAD_RSV
        opcode = head & 0x0F
        if not _known_opcode(opcode):
            return BAD_OPCODE
        if opcode >= CONTROL and not head & 0x80:
            return FRAGMENTED_CONTROL
        if second & 0x80:
            if not self._require_mask:
                return MASKED
        elif self._require_mask:
            return UNMASKED
        declared = second & 0x7F
        if declared < 126:
            size = 2
        elif declared == 126:
            if available < 4:
                return 0
            declared = (<uint64_t>data[2] << 8) | data[3]
            size = 4
        else:
            if available < 10:
                return 0
            declared = (
                (<uint64_t>data[2] << 56) | (<uint64_t>data[3] << 48)
                | (<uint64_t>data[4] << 40) | (<uint64_t>data[5] << 32)
                | (<uint64_t>data[6] << 24) | (<uint64_t>data[7] << 16)
                | (<uint64_t>data[8] << 8) | data[9]
            )
            size = 10
        length[0] = declared
        if declared >> 63:
            return BAD_LENGTH
        if opcode >= CONTROL and declared > CONTROL_PAYLOAD_LIMIT:
            return LONG_CONTROL
        if declared > <uint64_t>self._max_frame_size:
            return TOO_BIG
        if self._require_mask:
            size += 4
        if available < size:
            return 0
        return size

    cdef int _absorb(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1:
        """Take fed bytes; ``owner`` is the immutable object holding them, if there is one."""
        cdef Py_ssize_t taken = 0
        if size == 0:
            return 0
        self._held += size
        if self._pieces is not None or self._payload is not None:
            taken = self._continue_frame(data, size, owner)
        elif self._starved and self._end > self._start:
            taken = self._top_up(data, size, owner)
        if taken == size:
            return 0
        self._starved = False
        if self._chunk is not None:
            # Fed again before the frames of the last chunk were read: queue behind them.
            self._append(PyBytes_AS_STRING(self._chunk) + self._chunk_pos,
                         PyBytes_GET_SIZE(self._chunk) - self._chunk_pos)
            self._chunk = None
        if owner is not None and self._end == self._start:
            self._chunk = owner
            self._chunk_pos = taken
        else:
            self._append(<const char*>data + taken, size - taken)
        return 0

    cdef Py_ssize_t _top_up(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1:
        """Complete the buffered start of a header with only the bytes it lacks; begin its frame.

        Returns the bytes of ``data`` taken; the rest is left to be parsed in place. Only called
        while starved, when the buffer holds the start of a header and nothing else.
        """
        cdef Py_ssize_t have = self._end - self._start
        cdef Py_ssize_t taken = 0
        cdef Py_ssize_t header_size, step
        cdef uint64_t length = 0
        cdef uint8_t declared
        if have < 2:
            taken = min(2 - have, size)
            self._append(<const char*>data, taken)
            have += taken
            if have < 2:
                return taken
        header_size = self._read_header(<const uint8_t*>self._data + self._start, have, &length)
        if header_size < 0:
            return taken
        if header_size == 0:
            declared = (<const uint8_t*>self._data)[self._start + 1] & 0x7F
            header_size = 2 + (2 if declared == 126 else 8 if declared == 127 else 0)
            if self._require_mask:
                header_size += 4
            step = min(header_size - have, size - taken)
            self._append(<const char*>data + taken, step)
            taken += step
            have += step
            header_size = self._read_header(<const uint8_t*>self._data + self._start, have,
                                            &length)
            if header_size <= 0:
                return taken
        # The buffer held the start of this header and nothing else, so now exactly the header.
        self._begin_frame(<const uint8_t*>self._data + self._start, header_size,
                          <Py_ssize_t>length)
        self._release_buffer()
        return taken + self._continue_frame(data + taken, size - taken, owner)

    cdef int _begin_frame(self, const uint8_t* header, Py_ssize_t header_size,
                          Py_ssize_t length) except -1:
        """Remember the frame at ``header``, whose payload is still arriving."""
        self._head = header[0]
        if self._require_mask:
            memcpy(self._key, header + header_size - 4, 4)
        self._length = length
        self._header_size = header_size
        self._pieces = []
        self._collected = 0
        self._exposed = 0
        return 0

    cdef Py_ssize_t _continue_frame(self, const uint8_t* data, Py_ssize_t size,
                                    bytes owner) except -1:
        """Give the unfinished frame the bytes it needs from ``data``; return how many it took.

        Until half the payload is in, the bytes are kept as they came (the fed ``bytes``
        themselves when possible); then the payload is allocated and everything from there on
        is unmasked straight into it. So a frame never reserves more than twice what the peer
        actually sent, however large a length it declared.
        """
        if self._pieces is not None:
            if 2 * (self._collected + size) < self._length:
                self._collect(data, size, owner)
                return size
            self._payload = PyBytes_FromStringAndSize(NULL, self._length)
            self._filled = 0
            self._drain_pieces()
        return self._fill(data, size)

    cdef int _collect(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1:
        cdef Py_ssize_t used
        if size == 0:
            return 0
        self._collected += size
        # ``data`` always runs to the end of ``owner``, and only the first piece can start
        # inside it (after the frames and header before it).
        if owner is not None and size >= MIN_PIECE:
            if not self._pieces:
                self._first_piece_offset = <const char*>data - PyBytes_AS_STRING(owner)
            self._pieces.append(owner)
            self._tail = None
            return 0
        # Small or mutable input is copied, into one growing tail, so that many tiny feeds do
        # not cost an object each.
        if self._tail is None:
            if not self._pieces:
                self._first_piece_offset = 0
            self._tail = bytearray()
            self._pieces.append(self._tail)
        used = PyByteArray_GET_SIZE(self._tail)
        PyByteArray_Resize(self._tail, used + size)
        memcpy(PyByteArray_AS_STRING(self._tail) + used, data, size)
        return 0

    cdef int _drain_pieces(self) except -1:
        """Unmask the collected pieces into the newly allocated payload."""
        cdef list pieces = self._pieces
        cdef Py_ssize_t offset = self._first_piece_offset
        cdef object piece
        self._pieces = None
        self._tail = None
        for piece in pieces:
            if type(piece) is bytes:
                self._fill(<const uint8_t*>PyBytes_AS_STRING(piece) + offset,
                           PyBytes_GET_SIZE(piece) - offset)
            else:
                self._fill(<const uint8_t*>PyByteArray_AS_STRING(piece) + offset,
                           PyByteArray_GET_SIZE(piece) - offset)
            offset = 0
        return 0

    cdef int _unmask_pieces(self, uint8_t* target, Py_ssize_t skip) except -1:
        """Unmask the collected pieces into ``target``, leaving out their first ``skip`` bytes."""
        cdef Py_ssize_t offset = self._first_piece_offset
        cdef Py_ssize_t position = 0
        cdef Py_ssize_t size
        cdef const uint8_t* data
        cdef object piece
        for piece in self._pieces:
            if type(piece) is bytes:
                data = <const uint8_t*>PyBytes_AS_STRING(piece) + offset
                size = PyBytes_GET_SIZE(piece) - offset
            else:
                data = <const uint8_t*>PyByteArray_AS_STRING(piece) + offset
                size = PyByteArray_GET_SIZE(piece) - offset
            offset = 0
            if skip >= size:
                skip -= size
                position += size
                continue
            if self._require_mask:
                _xor_copy(target, data + skip, size - skip, self._key, position + skip)
            else:
                memcpy(target, data + skip, size - skip)
            target += size - skip
            position += size
            skip = 0
        return 0

    cdef Py_ssize_t _fill(self, const uint8_t* data, Py_ssize_t size) noexcept:
        cdef Py_ssize_t step = min(self._length - self._filled, size)
        cdef uint8_t* target = <uint8_t*>PyBytes_AS_STRING(self._payload) + self._filled
        if self._require_mask:
            _xor_copy(target, data, step, self._key, self._filled)
        else:
            memcpy(target, data, step)
        self._filled += step
        return step

    cdef Frame _take_payload(self):
        cdef Frame frame = _new_frame(self._head, self._payload)
        self._held -= self._header_size + self._length
        self._payload = None
        return frame

    cdef int _append(self, const char* data, Py_ssize_t size) except -1:
        cdef Py_ssize_t used = self._end - self._start
        cdef Py_ssize_t capacity
        cdef char* grown
        if size == 0:
            return 0
        if self._end + size > self._capacity:
            if self._start:
                memmove(self._data, self._data + self._start, used)
                self._start = 0
                self._end = used
            if used + size > self._capacity:
                capacity = max(2 * self._capacity, used + size, <Py_ssize_t>MIN_CAPACITY)
                grown = <char*>PyMem_Realloc(self._data, capacity)
                if grown == NULL:
                    raise MemoryError()
                self._data = grown
                self._capacity = capacity
        memcpy(self._data + self._end, data, size)
        self._end += size
        return 0

    cdef void _release_buffer(self) noexcept:
        """Forget the buffered bytes; give a large buffer back to the allocator."""
        self._start = self._end = 0
        if self._capacity > KEEP_CAPACITY:
            PyMem_Free(self._data)
            self._data = NULL
            self._capacity = 0

    cdef int _fail(self, Py_ssize_t status, uint8_t head, uint64_t length) except -1:
        cdef int code = 1002
        if status == BAD_RSV:
            reason = (
                f"reserved bits {head & self._forbidden_rsv:#x} set without a negotiated "
                f"extension"
            )
        elif status == BAD_OPCODE:
            reason = f"reserved opcode {head & 0x0F:#x}"
        elif status == FRAGMENTED_CONTROL:
            reason = "fragmented control frame"
        elif status == LONG_CONTROL:
            reason = "control frame payload longer than 125 bytes"
        elif status == UNMASKED:
            reason = "client frame is not masked"
        elif status == MASKED:
            reason = "server frame is masked"
        elif status == BAD_LENGTH:
            reason = "64-bit payload length has its most significant bit set"
        else:
            code = 1009
            reason = (
                f"frame payload of {length} bytes exceeds max_frame_size {self._max_frame_size}"
            )
        self._error_code = code
        self._error_reason = reason
        # A failed decoder holds nothing: the connection is going away.
        self._chunk = None
        self._pieces = None
        self._tail = None
        self._payload = None
        self._held = 0
        self._release_buffer()
        self._raise_failure()

    cdef int _raise_failure(self) except -1:
        raise ProtocolError(self._error_code, self._error_reason)


cdef inline Py_ssize_t _write_header(uint8_t* out, int opcode, uint64_t length, bint fin,
                                     bint rsv1, bint masked) noexcept:
    cdef uint8_t mask_bit = 0x80 if masked else 0
    cdef int i
    out[0] = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if length < 126:
        out[1] = mask_bit | length
        return 2
    if length < 65536:
        out[1] = mask_bit | 126
        out[2] = length >> 8
        out[3] = length & 0xFF
        return 4
    out[1] = mask_bit | 127
    for i in range(8):
        out[2 + i] = (length >> (56 - 8 * i)) & 0xFF
    return 10


cdef int _mask_key(object mask, uint8_t* key) except -1:
    if mask is True:
        memcpy(key, PyBytes_AS_STRING(os.urandom(4)), 4)
        return 0
    if not isinstance(mask, (bytes, bytearray, memoryview)):
        raise TypeError(f"mask must be None, a bool or 4 bytes, not {type(mask).__name__!r}")
    cdef bytes given = bytes(mask)
    if len(given) != 4:
        raise ValueError(f"mask must be 4 bytes, got {len(given)}")
    memcpy(key, PyBytes_AS_STRING(given), 4)
    return 0


cdef bytes _encode(int opcode, const uint8_t* payload, Py_ssize_t length, bint fin, bint rsv1,
                   object mask):
    cdef uint8_t key[4]
    cdef bint masked = mask is not None and mask is not False
    if masked:
        _mask_key(mask, key)
    _check_frame(opcode, length, fin)
    cdef Py_ssize_t header_size = (2 if length < 126 else 4 if length < 65536 else 10)
    if masked:
        header_size += 4
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header_size + length)
    cdef uint8_t* out = <uint8_t*>PyBytes_AS_STRING(frame)
    out += _write_header(out, opcode, length, fin, rsv1, masked)
    if masked:
        memcpy(out, key, 4)
        _xor_copy(out + 4, payload, length, key, 0)
    else:
        memcpy(out, payload, length)
    return frame


def encode_frame(int opcode, payload, *, bint fin=True, bint rsv1=False, mask=None):
    """Serialize one frame: unmasked (server) by default; ``mask=True`` or a 4-byte key masks it."""
    cdef Py_buffer view
    if type(payload) is bytes:
        return _encode(opcode, <const uint8_t*>PyBytes_AS_STRING(payload),
                       PyBytes_GET_SIZE(payload), fin, rsv1, mask)
    _get_view(payload, &view, "payload")
    try:
        return _encode(opcode, <const uint8_t*>view.buf, view.len, fin, rsv1, mask)
    finally:
        PyBuffer_Release(&view)


def frame_header(int opcode, length, *, bint fin=True, bint rsv1=False):
    """The header of an unmasked frame, for ``transport.writelines([header, payload])``."""
    cdef uint8_t header[10]
    if type(length) is not int or not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be an int between 0 and 2**63 - 1, got {length!r}")
    cdef uint64_t size = length
    _check_frame(opcode, size, fin)
    return PyBytes_FromStringAndSize(<char*>header,
                                     _write_header(header, opcode, size, fin, rsv1, False))


def apply_mask(data, mask):
    """XOR ``data`` with the repeated 4-byte ``mask`` (masking and unmasking are the same)."""
    cdef Py_buffer data_view, mask_view
    cdef bytes result
    _get_view(data, &data_view, "data")
    try:
        _get_view(mask, &mask_view, "mask")
        try:
            if mask_view.len != 4:
                raise ValueError(f"mask must be 4 bytes, got {mask_view.len}")
            result = PyBytes_FromStringAndSize(NULL, data_view.len)
            _xor_copy(<uint8_t*>PyBytes_AS_STRING(result), <const uint8_t*>data_view.buf,
                      data_view.len, <const uint8_t*>mask_view.buf, 0)
            return result
        finally:
            PyBuffer_Release(&mask_view)
    finally:
        PyBuffer_Release(&data_view)
