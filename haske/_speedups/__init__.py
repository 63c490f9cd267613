"""Compiled speedups: the Cython frame codec (``frames``), twin of ``haske._pure.frames``."""
