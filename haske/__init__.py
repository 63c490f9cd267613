"""Haske: fast, correct WebSockets for Starlette apps."""

from haske._backends import backends
from haske._version import __version__
from haske.app import Haske
from haske.run import run

__all__ = ["Haske", "__version__", "backends", "run"]
