"""Client-side helpers the tests share: reading what an app sent without hanging, waiting for a
condition to come true, and opening a handshake by hand."""

from __future__ import annotations

import asyncio
import base64
import os
import queue
from collections.abc import Callable
from typing import Any

import anyio
from starlette.testclient import WebSocketTestSession
from starlette.types import Message

#: Seconds any one step may take before the test fails instead of hanging.
TIMEOUT = 5.0


def receive(session: WebSocketTestSession, timeout: float = TIMEOUT) -> Message:
    """The next message the app sent to a TestClient session, failing instead of hanging."""
    if not hasattr(session, "_send_rx"):  # starlette before 0.38: a thread queue
        try:
            message = session._send_queue.get(timeout=timeout)  # type: ignore[attr-defined]
        except queue.Empty:
            raise TimeoutError(f"no message from the app within {timeout} s") from None
        if isinstance(message, BaseException):
            raise message
        return message  # type: ignore[no-any-return]

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


async def upgrade(
    port: int, path: str = "/ws", headers: dict[str, str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send an upgrade request over raw TCP; the streams and the response head, as received.

    ``headers`` add to or replace the valid request's headers.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    writer.write(request.encode() + b"\r\n")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    except BaseException:
        writer.close()
        raise
    return reader, writer, head
