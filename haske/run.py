"""``run()``: serve an app with uvicorn on Haske's WebSocket protocol."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from typing import Any

from haske import limits

# Tells "not given" from None, which turns a limit off.
_UNSET: Any = object()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_frame_size: int | None = _UNSET,
    idle_timeout: float | None = _UNSET,
    max_connections: int | None = _UNSET,
    handshake_timeout: float | None = _UNSET,
    **uvicorn_kwargs: Any,
) -> None:
    """Run ``app`` with uvicorn, using Haske's WebSocket and HTTP protocols.

    ``max_frame_size``, ``idle_timeout`` and ``max_connections`` set those attributes of
    :class:`haske.server.WebSocketProtocol`, ``handshake_timeout`` that of
    :class:`haske.server.HttpProtocol` (None turns a limit off; the defaults are in
    :mod:`haske.limits`). They are also exported as the ``HASKE_*`` environment variables, so
    worker processes (``workers=``, ``reload=True``) get them too.

    uvloop is used when installed, else uvicorn's default loop; any keyword argument of
    ``uvicorn.run`` overrides these choices.
    """
    import uvicorn

    from haske.server import HttpProtocol, WebSocketProtocol

    given = {
        "max_frame_size": max_frame_size,
        "idle_timeout": idle_timeout,
        "max_connections": max_connections,
        "handshake_timeout": handshake_timeout,
    }
    for name, value in given.items():
        if value is _UNSET:
            continue
        counted = name in ("max_frame_size", "max_connections")
        if value is not None and (
            (counted and not isinstance(value, int)) or not 0 < value < math.inf
        ):
            kind = "int" if counted else "number"
            raise ValueError(f"{name} must be a positive {kind} or None, got {value!r}")
        os.environ[limits.ENVIRONMENT[name]] = "none" if value is None else str(value)
        setattr(HttpProtocol if name == "handshake_timeout" else WebSocketProtocol, name, value)

    # The classes rather than their import paths: uvicorn before 0.36 only takes its own names.
    uvicorn_kwargs.setdefault("ws", WebSocketProtocol)
    uvicorn_kwargs.setdefault("http", HttpProtocol)
    uvicorn_kwargs.setdefault("loop", "uvloop" if _installed("uvloop") else "auto")
    # uvicorn re-raises the Ctrl-C it shut down on; before 0.30.3 its run() let that escape.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=host, port=port, **uvicorn_kwargs)
