"""Haske: fast, correct WebSockets for Starlette apps."""

from haske._backends import backends
from haske._version import __version__

__all__ = ["__version__", "backends"]
