# What setup.py tells every extension about its build (a stale build is refused by the probe).
cdef extern from *:
    """
    #ifndef HASKE_VERSION
    #define HASKE_VERSION "unknown"
    #endif
    #ifndef HASKE_CYTHON_VERSION
    #define HASKE_CYTHON_VERSION "unknown"
    #endif
    """
    const char* HASKE_VERSION
    const char* HASKE_CYTHON_VERSION
