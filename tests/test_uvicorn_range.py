"""Haske on every supported uvicorn (0.30 and later): which ways of naming its protocols each
version takes, on the command line and in ``uvicorn.Config``.

From 0.36 on uvicorn takes an import path for ``--ws`` and ``--http``; before, only its own names,
and Haske's protocols are passed as classes (``uvicorn.Config(ws=...)``, ``haske.run``). CI runs
these tests on the newest uvicorn and on 0.30.0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import UVICORN_VERSION, free_port
from websockets.sync.client import connect

from haske.server import HttpProtocol, WebSocketProtocol

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0
TAKES_IMPORT_PATHS = UVICORN_VERSION >= (0, 36)

APP = '''
from starlette.responses import PlainTextResponse

from haske import Haske
from haske.ws import websocket_route

app = Haske()


@app.route("/")
async def home(request):
    return PlainTextResponse("home")


@websocket_route("/ws")
async def which(ws):
    await ws.accept()
    served_by = "haske" if "haske.websocket" in ws.scope.get("extensions", {}) else "other"
    await ws.send_text(served_by)
    await ws.close()
'''

PROTOCOL_FLAGS = {
    "ws": ["--ws", "haske.server:WebSocketProtocol"],
    "http+ws": ["--http", "haske.server:HttpProtocol", "--ws", "haske.server:WebSocketProtocol"],
}


def test_haske_supports_this_uvicorn() -> None:
    assert UVICORN_VERSION >= (0, 30), f"uvicorn {uvicorn.__version__} is older than 0.30"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "rangeapp.py").write_text(APP, encoding="utf-8")
    return tmp_path


def served_by(port: int) -> str:
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as ws:
        return str(ws.recv(timeout=TIMEOUT))


def wait_for_http(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "home"
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "uvicorn did not start listening"
            time.sleep(0.05)


def run_cli(app_dir: Path, port: int, flags: list[str]) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [sys.executable, "-m", "uvicorn", "rangeapp:app", "--app-dir", str(app_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("flags", PROTOCOL_FLAGS.values(), ids=PROTOCOL_FLAGS.keys())
def test_the_command_line_takes_the_import_paths_from_uvicorn_0_36(
    app_dir: Path, flags: list[str]
) -> None:
    port = free_port()
    process = run_cli(app_dir, port, flags)
    try:
        if not TAKES_IMPORT_PATHS:
            _, stderr = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 2
            assert "Invalid value for '--" in stderr
            return
        wait_for_http(port, process)
        assert served_by(port) == "haske"
    finally:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=TIMEOUT)


class Serving:
    """``uvicorn.Server(config)`` in a thread, for the duration of a ``with`` block."""

    def __init__(self, **config: Any) -> None:
        self.port = free_port()
        self.config = uvicorn.Config(
            "rangeapp:app", host="127.0.0.1", port=self.port, log_level="warning", **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Serving:
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def importable_app(app_dir: Path) -> Iterator[None]:
    sys.path.insert(0, str(app_dir))
    yield
    sys.path.remove(str(app_dir))
    sys.modules.pop("rangeapp", None)


@pytest.mark.usefixtures("importable_app")
def test_config_takes_the_classes_on_every_version() -> None:
    with Serving(ws=WebSocketProtocol, http=HttpProtocol) as serving:
        assert httpx.get(f"http://127.0.0.1:{serving.port}/", timeout=TIMEOUT).text == "home"
        assert served_by(serving.port) == "haske"


@pytest.mark.usefixtures("importable_app")
def test_config_takes_the_import_paths_from_uvicorn_0_36() -> None:
    config = uvicorn.Config(
        "rangeapp:app",
        ws="haske.server:WebSocketProtocol",
        http="haske.server:HttpProtocol",
    )
    if not TAKES_IMPORT_PATHS:
        with pytest.raises(KeyError, match="haske.server:HttpProtocol"):
            config.load()
        return
    config.load()
    assert config.ws_protocol_class is WebSocketProtocol
    assert config.http_protocol_class is HttpProtocol
