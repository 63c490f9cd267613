"""Compiled speedups, each the twin of the module of the same name in ``haske._pure``: the Cython
frame codec (``frames``) and the sans-I/O connection (``connection``)."""
