"""Compiled speedups, each the twin of the module of the same name in ``haske._pure``: the Cython
frame codec (``frames``), the sans-I/O connection (``connection``) and the per-message paths of
the uvicorn protocol (``protocol``)."""
