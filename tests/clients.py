"""Client-side helpers the tests share: reading what an app sent without hanging, and waiting for
a condition to come true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
from starlette.testclient import WebSocketTestSession
from starlette.types import Message

#: Seconds any one step may take before the test fails instead of hanging.
TIMEOUT = 5.0


def receive(session: WebSocketTestSession, timeout: float = TIMEOUT) -> Message:
    """The next message the app sent to a TestClient session, failing instead of hanging."""

    async def get() -> Message:
        with anyio.fail_after(timeout):
            return await session._send_rx.receive()

    return session.portal.call(get)


async def recv(client: Any, timeout: float = TIMEOUT) -> Any:
    """The next message a real client (``websockets``) received, failing instead of hanging."""
    return await asyncio.wait_for(client.recv(), timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` is true, checking every 10 ms; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
