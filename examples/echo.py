"""The smallest Haske app: the guide's chat socket.

    python examples/echo.py

then, from another terminal, ``python -m websockets ws://127.0.0.1:8000/ws``.
"""

from __future__ import annotations

import haske
from haske import Haske
from haske.ws import WebSocket, websocket_route

app = Haske()


@websocket_route("/ws")
async def chat_socket(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("Welcome to Haske Chat!")
    while True:
        # When the client leaves, this raises ConnectionClosed, which ends the handler cleanly.
        message = await ws.receive_text()
        await ws.send_text(f"You said: {message}")


if __name__ == "__main__":
    haske.run(app)
