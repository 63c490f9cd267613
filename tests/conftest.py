"""Shared fixtures: every backend of every component, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from haske import _backends
from haske.server import WebSocketProtocol

#: uvicorn's version as numbers, e.g. (0, 30, 0); Haske supports 0.30 and later.
UVICORN_VERSION = tuple(int(part) for part in re.findall(r"\d+", uvicorn.__version__)[:3])

WS_IMPLEMENTATIONS: dict[str, Any] = {
    # The class works on every uvicorn; the import path only from 0.36 (test_uvicorn_range.py).
    "haske": WebSocketProtocol,
    "websockets": "websockets",
    # uvicorn's sans-I/O websockets protocol came in 0.35; before, its legacy one stands in.
    "websockets-sansio": "websockets-sansio" if UVICORN_VERSION >= (0, 35) else "websockets",
    "wsproto": "wsproto",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start a redis-server, so that ``-m "not redis"`` leaves them out."""
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


def _backend_fixture(component: str) -> Callable[..., ModuleType]:
    @pytest.fixture(params=_backends.available(component))
    def fixture(request: pytest.FixtureRequest) -> ModuleType:
        return _backends.load(component, request.param)

    return fixture


frames_impl = _backend_fixture("frames")
handshake_impl = _backend_fixture("handshake")
broadcast_impl = _backend_fixture("broadcast")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server running an app in a background thread."""

    def __init__(self, app: Any, ws: str = "haske", **config: Any) -> None:
        self.port = free_port()
        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "auto")
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ws=WS_IMPLEMENTATIONS.get(ws, ws), **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{ws}", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        if self.thread.is_alive():
            raise RuntimeError(f"uvicorn on port {self.port} did not stop")


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``serve(app, ws="haske", **uvicorn_config)`` starts a server that stops after the test."""
    servers: list[LiveServer] = []

    def start(app: Any, ws: str = "haske", **config: Any) -> LiveServer:
        server = LiveServer(app, ws, **config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
