from haske._speedups.connection cimport Connection


cdef class ProtocolCore:
    cdef:
        public bint _active
        # The sans-I/O connection (the ``_conn`` property), and the same connection when it is
        # the Cython one: its methods are then called without going through Python.
        object _connection
        Connection _compiled
        public bint _dirty
        public object _disconnect
        public object _failure
        public object _flusher
        public list _inbox
        public object _outlet
        public int _paused
        public int _state
        public object _waiter
        public bint _write_paused
        public object loop
        public Py_ssize_t max_queue
        public object outbound_limit
        public object transport

    cpdef _wake(self, waiter, value)
    cpdef _flush(self, bint force=*)
    cpdef bint _outlet_ready(self) except -1
