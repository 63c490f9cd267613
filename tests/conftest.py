"""Shared fixtures: every backend of every component, and real uvicorn (or hypercorn) servers on
127.0.0.1."""

from __future__ import annotations

import asyncio
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
connection_impl = _backend_fixture("connection")
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


class HypercornServer(LiveServer):
    """A real hypercorn server (its own WebSocket implementation, wsproto underneath) running an
    app in a background thread: another ASGI server, where Haske works through ASGI messages."""

    def __init__(self, app: Any) -> None:
        from hypercorn.config import Config

        self.port = free_port()
        self.app = app
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.graceful_timeout = 2
        self.config.accesslog = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.shutdown: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="hypercorn", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from hypercorn.asyncio import serve

        self.loop = asyncio.get_running_loop()
        self.shutdown = asyncio.Event()
        await serve(self.app, self.config, shutdown_trigger=self.shutdown.wait)

    def start(self) -> HypercornServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"hypercorn did not start on port {self.port}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.loop is not None and self.shutdown is not None:
            self.loop.call_soon_threadsafe(self.shutdown.set)
        self.thread.join(15)
        if self.thread.is_alive():
            raise RuntimeError(f"hypercorn on port {self.port} did not stop")


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``serve(app, ws="haske", **uvicorn_config)`` starts a server that stops after the test;
    ``ws="hypercorn"`` runs the app on hypercorn instead of uvicorn."""
    servers: list[LiveServer] = []

    def start(app: Any, ws: str = "haske", **config: Any) -> LiveServer:
        if ws == "hypercorn":
            if config:
                raise TypeError(f"uvicorn settings on hypercorn: {sorted(config)}")
            server: LiveServer = HypercornServer(app)
        else:
            server = LiveServer(app, ws, **config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
