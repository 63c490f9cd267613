"""The docs' examples run, so they cannot drift from the code.

docs/guide.md: its ``python`` blocks, in order, make up one application; its ``python client``
blocks are a client session (top-level ``await`` allowed) run against that application on a real
server. Clients address the server as 127.0.0.1:8000, which is rewritten to the test server.
The methods the guide's text names (``ws.…``, ``broadcaster.…``, ``sessions.…``) exist.
docs/running.md: its ``python`` blocks compile and its ``--ws`` classes import.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvicorn.importer import import_from_string

from haske.ws import LiveSessionManager, WebSocket, WebSocketBroadcaster

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDE = DOCS / "guide.md"
RUNNING = DOCS / "running.md"
DOCS_ADDRESS = "127.0.0.1:8000"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT = 10.0
#: The receivers the guide's text uses, and their classes.
RECEIVERS = {"ws": WebSocket, "broadcaster": WebSocketBroadcaster, "sessions": LiveSessionManager}


@dataclass
class Block:
    info: str
    code: str
    line: int  # lines before the block's first line of code

    def compile(self, path: Path, flags: int = 0, address: str = DOCS_ADDRESS) -> Any:
        # Padding keeps tracebacks pointing at the right line of the Markdown file.
        source = "\n" * self.line + self.code.replace(DOCS_ADDRESS, address)
        return compile(source, str(path), "exec", flags=flags, dont_inherit=True)


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [
        Block(match[1].strip(), match[2], text.count("\n", 0, match.start(2)))
        for match in FENCE.finditer(text)
    ]


def test_every_python_block_of_the_guide_is_run() -> None:
    found = blocks(GUIDE)
    python = [block for block in found if block.info.startswith("py")]
    assert python, "the guide has no Python examples"
    assert {block.info for block in python} == {"python", "python client"}, (
        "a Python block in docs/guide.md is neither `python` (the app) nor `python client`"
    )


async def test_the_guide_runs_against_a_real_server(serve: Any) -> None:
    found = blocks(GUIDE)
    guide: dict[str, Any] = {"__name__": "guide"}
    for block in found:
        if block.info == "python":
            exec(block.compile(GUIDE), guide)

    server = serve(guide["app"])
    session: dict[str, Any] = {"__name__": "__main__"}
    clients = [block for block in found if block.info == "python client"]
    assert len(clients) >= 8
    for block in clients:
        code = block.compile(
            GUIDE, ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, address=f"127.0.0.1:{server.port}"
        )
        result = eval(code, session)
        if inspect.iscoroutine(result):
            await asyncio.wait_for(result, BLOCK_TIMEOUT)


def test_the_methods_the_guide_names_exist() -> None:
    text = FENCE.sub("", GUIDE.read_text(encoding="utf-8"))
    named = set(re.findall(r"`(?:await )?(ws|broadcaster|sessions)\.(\w+)", text))
    assert len(named) >= 20
    missing = sorted(
        f"{receiver}.{name}" for receiver, name in named if not hasattr(RECEIVERS[receiver], name)
    )
    assert not missing, f"docs/guide.md names methods that do not exist: {missing}"


def test_running_examples_are_valid() -> None:
    found = blocks(RUNNING)
    python = [block for block in found if block.info == "python"]
    assert python
    for block in python:
        block.compile(RUNNING)
    text = RUNNING.read_text(encoding="utf-8")
    protocols = set(re.findall(r"--ws ([\w.]+:\w+)", text))
    assert protocols == {"haske.server:WebSocketProtocol"}
    for protocol in protocols:
        assert inspect.isclass(import_from_string(protocol))
