from libc.stdint cimport uint8_t, uint64_t


cdef class Frame:
    cdef readonly int opcode
    cdef readonly bytes payload
    cdef readonly bint fin
    cdef readonly bint rsv1
    cdef readonly bint rsv2
    cdef readonly bint rsv3


cdef class FrameDecoder:
    cdef:
        Py_ssize_t _max_frame_size
        bint _require_mask
        uint8_t _forbidden_rsv

        # Bytes fed but not yet returned in a frame (the ``buffered`` property).
        Py_ssize_t _held
        # True once next_frame() ran out of bytes with the start of a header buffered: feed()
        # then adds only what the header lacks instead of queueing the whole chunk behind it.
        bint _starved
        int _error_code
        str _error_reason

        # Receive buffer: bytes [_start, _end) of _data are unread.
        char* _data
        Py_ssize_t _capacity
        Py_ssize_t _start
        Py_ssize_t _end

        # A fed bytes object parsed in place, from _chunk_pos on; only while _data is empty.
        bytes _chunk
        Py_ssize_t _chunk_pos

        # The frame whose header has arrived but not all of its payload.
        uint8_t _head
        uint8_t _key[4]
        Py_ssize_t _header_size
        Py_ssize_t _length
        # While under half of the payload is in: what arrived, as fed (bytes) or copied
        # (into _tail, a bytearray); its first piece starts at _first_piece_offset.
        list _pieces
        bytearray _tail
        Py_ssize_t _first_piece_offset
        Py_ssize_t _collected
        # Then: the payload itself, its first _filled bytes written.
        bytes _payload
        Py_ssize_t _filled
        # Payload bytes already returned by read_partial().
        Py_ssize_t _exposed

    cdef Frame _next(self)
    cdef bint _begin_unparsed(self) except -1
    cdef Frame _parse(self, const uint8_t* data, Py_ssize_t available, Py_ssize_t* consumed,
                      bytes owner)
    cdef Py_ssize_t _read_header(self, const uint8_t* data, Py_ssize_t available,
                                 uint64_t* length) noexcept
    cdef int _absorb(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1
    cdef Py_ssize_t _top_up(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1
    cdef int _begin_frame(self, const uint8_t* header, Py_ssize_t header_size,
                          Py_ssize_t length) except -1
    cdef Py_ssize_t _continue_frame(self, const uint8_t* data, Py_ssize_t size,
                                    bytes owner) except -1
    cdef int _collect(self, const uint8_t* data, Py_ssize_t size, bytes owner) except -1
    cdef int _drain_pieces(self) except -1
    cdef int _unmask_pieces(self, uint8_t* target, Py_ssize_t skip) except -1
    cdef Py_ssize_t _fill(self, const uint8_t* data, Py_ssize_t size) noexcept
    cdef Frame _take_payload(self)
    cdef int _append(self, const char* data, Py_ssize_t size) except -1
    cdef void _release_buffer(self) noexcept
    cdef int _fail(self, Py_ssize_t status, uint8_t head, uint64_t length) except -1
    cdef int _raise_failure(self) except -1


cdef bytes _encode(int opcode, const uint8_t* payload, Py_ssize_t length, bint fin, bint rsv1,
                   object mask)
