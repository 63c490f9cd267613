"""What hypercorn does not tell through ASGI: that a WebSocket's peer is gone.

Once a WebSocket stream is closed (the peer left, or the closing handshake ended), hypercorn
discards every ``websocket.send`` instead of raising, as the ASGI spec asks of servers. A
handler that only sends, or a broadcaster, would then never learn of it and keep the
connection forever. The stream behind hypercorn's ``send`` knows: its ``closed`` attribute.
"""

from __future__ import annotations

from typing import Any

__all__ = ["websocket_stream"]

_WS_STREAM = "hypercorn.protocol.ws_stream"


def websocket_stream(send: Any) -> Any:
    """hypercorn's WebSocket stream behind ``send``, whose ``closed`` turns True once sends are
    discarded; None when ``send`` is not hypercorn's own."""
    stream = getattr(send, "__self__", None)
    if stream is None or type(stream).__module__ != _WS_STREAM or not hasattr(stream, "closed"):
        return None
    return stream
