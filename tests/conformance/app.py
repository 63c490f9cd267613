"""The echo endpoint: every message comes back unchanged.

The conformance cases run against it, and the server and interoperability tests serve it too.
Serve it by hand with ``uvicorn tests.conformance.app:app --ws haske.server:WebSocketProtocol``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(websocket: WebSocket) -> None:
    """Accept, then send every message back until the client leaves."""
    await websocket.accept()
    await echo_messages(websocket)


async def echo_messages(websocket: WebSocket) -> None:
    """Send every message of an accepted connection back, as text or bytes as it came."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(routes=[WebSocketRoute("/", echo)])
