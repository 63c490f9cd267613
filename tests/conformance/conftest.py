"""The echo server the conformance suite runs against, and the choice of its WebSocket protocol."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from haske.server import WebSocketProtocol

from .app import app

WS_IMPLEMENTATIONS: dict[str, object] = {
    # The class rather than its import path, which uvicorn takes only from 0.36 on.
    "haske": WebSocketProtocol,
    "websockets": "websockets",
    "websockets-sansio": "websockets-sansio",
    "wsproto": "wsproto",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ws-impl",
        default=None,
        help="uvicorn WebSocket implementation for tests/conformance: haske (default), "
        "websockets, websockets-sansio or wsproto; also $HASKE_CONFORMANCE_WS",
    )


@pytest.fixture(scope="session")
def ws_impl(request: pytest.FixtureRequest) -> str:
    # The option exists only when this directory is on the command line; the variable always works.
    option = request.config.getoption("--ws-impl", default=None)
    return str(option or os.environ.get("HASKE_CONFORMANCE_WS", "haske"))


@pytest.fixture(scope="module")
def echo_url(ws_impl: str) -> Iterator[str]:
    """One echo server on 127.0.0.1 for every case, as in an Autobahn run.

    Sharing it also lets state leaking from one connection into the next show up.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=WS_IMPLEMENTATIONS.get(ws_impl, ws_impl),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"conformance-{ws_impl}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn with ws={ws_impl!r} did not start")
        time.sleep(0.01)
    # uvicorn before 0.36 installs uvloop's policy process-wide; the client runs on asyncio's.
    asyncio.set_event_loop_policy(None)
    yield f"ws://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(15)
