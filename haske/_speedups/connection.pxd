cimport cython
from haske._speedups.frames cimport FrameDecoder


@cython.final
cdef class Connection:
    cdef:
        public bint client
        public object max_message_size
        public object frames
        public int state
        public bint frame_mode
        public object close_sent
        public object close_received
        public Py_ssize_t pending_bytes

        object _decoder
        # The same decoder when it is the Cython one: frames are then taken without Python calls.
        FrameDecoder _fast
        object _encode
        object _header
        object _mask
        list _out
        int _msg_opcode
        Py_ssize_t _msg_size
        list _msg_parts
        bint _msg_framed
        object _utf8
        object _partial_utf8
        bint _defer_failure
        bint _failed

    cpdef list receive_data(self, data)
    cpdef send_text(self, text)
    cpdef send_binary(self, data)
    cpdef list data_to_send(self)
    cdef int _frame(self, object frame, int opcode, bint fin, bytes payload,
                    list events) except -1
    cdef int _data_frame(self, object frame, int opcode, bint fin, bytes payload,
                         list events) except -1
    cdef int _check_partial(self) except -1
    cdef int _control_frame(self, int opcode, bytes payload, list events) except -1
    cdef int _fail(self, int code, str reason, list events) except -1
    cdef int _send_data(self, int opcode, bytes payload, bint fin) except -1
    cdef int _send_control(self, int opcode, object payload) except -1
    cdef int _queue(self, object data) except -1
    cdef object _closed_error(self)
