"""``run()``: serve an app with uvicorn on Haske's WebSocket protocol."""

from __future__ import annotations

import importlib.util
from typing import Any


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, **uvicorn_kwargs: Any) -> None:
    """Run ``app`` with uvicorn, using Haske's WebSocket protocol.

    uvloop and httptools are used when installed, else uvicorn's defaults; any keyword argument
    of ``uvicorn.run`` overrides these choices.
    """
    import uvicorn

    from haske.server import WebSocketProtocol

    # The class rather than its import path: uvicorn before 0.36 only takes its own names.
    uvicorn_kwargs.setdefault("ws", WebSocketProtocol)
    uvicorn_kwargs.setdefault("loop", "uvloop" if _installed("uvloop") else "auto")
    uvicorn_kwargs.setdefault("http", "httptools" if _installed("httptools") else "auto")
    uvicorn.run(app, host=host, port=port, **uvicorn_kwargs)
