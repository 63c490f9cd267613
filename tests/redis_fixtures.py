"""A real redis-server for the tests, the worker app they run in several uvicorn processes, and
those processes.

The worker app is ``create_app`` (``uvicorn --factory redis_fixtures:create_app``): the default
broadcaster, configured from ``HASKE_BROADCAST_URL``, with a short lease, probe interval and
backoff so that failures show within a test's time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: The worker app's backend settings (seconds).
LEASE = 1.5
BACKOFF = (0.05, 1.0)
PROBE_INTERVAL = 0.5
LEAVE_GRACE = 0.3

UVICORN_VERSION = tuple(int(part) for part in re.findall(r"\d+", uvicorn.__version__)[:3])
#: The worker on uvicorn before 0.36, whose ``--ws`` takes only uvicorn's own names.
RUN_WITH_CLASS = (
    "import sys, uvicorn; from haske.server import WebSocketProtocol; "
    "uvicorn.run('redis_fixtures:create_app', factory=True, app_dir=sys.argv[1], "
    "host='127.0.0.1', port=int(sys.argv[2]), ws=WebSocketProtocol, log_level='warning')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: the Redis backend tests need it "
                "(apt-get install redis-server, brew install redis)",
                pytrace=False,
            )
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, f"redis-server on port {self.port} starting")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def running_redis() -> Iterator[RedisServer]:
    """A redis-server until the generator is closed (for a fixture)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Worker:
    """``create_app`` served by uvicorn on Haske's protocol, in a process of its own."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "HASKE_BROADCAST_URL": redis_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(self.command(), env=env)

    def command(self) -> list[str]:
        """uvicorn's command line, or ``uvicorn.run`` with the class where that cannot name it."""
        if UVICORN_VERSION < (0, 36):
            return [sys.executable, "-c", RUN_WITH_CLASS, str(TESTS), str(self.port)]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "redis_fixtures:create_app",
            "--app-dir",
            str(TESTS),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ws",
            "haske.server:WebSocketProtocol",
            "--log-level",
            "warning",
        ]

    def wait_ready(self) -> Worker:
        try:
            wait_until(self.ready, 20, f"worker on port {self.port} connecting to Redis")
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker on port {self.port} exited")
        try:
            return bool(self.health()["connected"])
        except httpx.HTTPError:
            return False

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.http}/health", timeout=2).json()  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def create_app() -> Any:
    """The worker app: channels, sessions with presence, and HTTP endpoints to drive them."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from haske import Haske
    from haske.redis import MessageTooLarge
    from haske.ws import LiveSessionManager, WebSocket, get_broadcaster

    broadcaster = get_broadcaster()
    backend = broadcaster.backend
    assert backend is not None, "HASKE_BROADCAST_URL is not set"
    backend.lease, backend.backoff, backend.probe_interval = LEASE, BACKOFF, PROBE_INTERVAL
    sessions = LiveSessionManager(presence_channel="presence", leave_grace=LEAVE_GRACE)
    app = Haske()

    @app.websocket("/ws/{name}")
    async def member(ws: WebSocket) -> None:
        """Joins ``?channels=a,b``, says hello with its address; a text it sends is broadcast
        on its first channel to everyone but itself."""
        await ws.accept()
        channels = [c for c in ws.query_params.get("channels", "").split(",") if c]
        for channel in channels:
            await broadcaster.subscribe(ws, channel)
        await ws.send_json({"hello": ws.path_params["name"], "address": broadcaster.address(ws)})
        async for text in ws:
            await broadcaster.broadcast(text, channel=channels[0], exclude=ws)

    @app.websocket("/live/{session}")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        session = ws.path_params["session"]
        await sessions.add(session, ws, name=session.title())
        async for _ in ws:
            pass

    @app.route("/broadcast", methods=["POST"])
    async def broadcast(request: Request) -> JSONResponse:
        body = await request.json()
        exclude = [tuple(address) for address in body.get("exclude", ())]
        try:
            delivered = await broadcaster.broadcast(
                body["message"], channel=body.get("channel"), exclude=exclude
            )
        except MessageTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        return JSONResponse({"delivered": delivered})

    @app.route("/burst", methods=["POST"])
    async def burst(request: Request) -> JSONResponse:
        """Broadcasts ``count`` numbered messages on ``channel`` in one event-loop turn."""
        body = await request.json()
        for number in range(body["count"]):
            await broadcaster.broadcast({"n": number}, channel=body["channel"])
        return JSONResponse({})

    @app.route("/send_to", methods=["POST"])
    async def send_to(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"sent": await sessions.send_to(body["session"], body["message"])})

    @app.route("/presence")
    async def presence(request: Request) -> JSONResponse:
        return JSONResponse(sessions.presence())

    @app.route("/health")
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(broadcaster.health())

    @app.route("/deafen", methods=["POST"])
    async def deafen(request: Request) -> JSONResponse:
        # Redis forgets this process's subscriptions while the connection stays up: the
        # subscriber hears nothing and nothing tells it so.
        backend._command(b"UNSUBSCRIBE")
        return JSONResponse({})

    return app
