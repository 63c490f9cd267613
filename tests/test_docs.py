"""The docs' examples run, so they cannot drift from the code.

docs/guide.md: its ``python`` blocks, in order, make up one application; its ``python client``
blocks are a client session (top-level ``await`` allowed) run against that application on a real
server. Clients address the server as 127.0.0.1:8000, which is rewritten to the test server.
The methods the guide's text names (``ws.…``, ``broadcaster.…``, ``sessions.…``) exist.
docs/running.md: its ``python`` blocks compile and its ``--ws`` classes import.
docs/configuration.md and README.md: their examples serve what their text says, on a real server.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets
from clients import recv
from uvicorn.importer import import_from_string
from websockets.exceptions import InvalidStatus

from haske.ws import LiveSessionManager, WebSocket, WebSocketBroadcaster

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = DOCS / "guide.md"
RUNNING = DOCS / "running.md"
CONFIGURATION = DOCS / "configuration.md"
README = ROOT / "README.md"
DOCS_ADDRESS = "127.0.0.1:8000"
# A fence may be indented, inside a list item; its closing fence has the same indentation.
FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
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
        Block(match[2].strip(), textwrap.dedent(match[3]), text.count("\n", 0, match.start(3)))
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


def python_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.info == "python"]


async def refusal(url: str, **options: Any) -> InvalidStatus:
    try:
        async with websockets.connect(url, **options):
            raise AssertionError(f"{url} was accepted")
    except InvalidStatus as refused:
        return refused


async def test_the_configuration_examples_run(serve: Any) -> None:
    protocols, example = python_blocks(CONFIGURATION)
    subclasses: dict[str, Any] = {"__name__": "myprotocols"}
    exec(protocols.compile(CONFIGURATION), subclasses)
    assert subclasses["ChatProtocol"].idle_timeout == 300.0
    assert subclasses["ChatHttp"].handshake_timeout == 10.0

    namespace: dict[str, Any] = {"__name__": "myapp"}
    exec(example.compile(CONFIGURATION), namespace)
    server = serve(namespace["app"])
    # The app's auth hook guards /widget, which takes pages of any site.
    refused = await refusal(server.url + "/widget", origin="https://elsewhere.example")
    assert refused.response.status_code == 401
    assert refused.response.headers["WWW-Authenticate"] == "Bearer"
    url = server.url + "/widget?token=s3cret"
    async with websockets.connect(url, origin="https://elsewhere.example") as client:
        assert await recv(client) == '{"hello":"Ana"}'


async def test_the_readme_example_runs(serve: Any) -> None:
    (example,) = python_blocks(README)
    namespace: dict[str, Any] = {"__name__": "app"}
    exec(example.compile(README), namespace)
    server = serve(namespace["app"])
    async with websockets.connect(server.url + "/ws") as client:
        assert await recv(client) == "Welcome to Haske Chat!"
        await client.send("hi")
        assert await recv(client) == "You said: hi"
        async with httpx.AsyncClient() as http:
            reply = await http.post(server.http_url + "/notify")
        assert reply.text.startswith("sent to ")
        assert await recv(client) == '{"event":"new_post"}'
