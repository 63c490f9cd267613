"""Broadcast frames written straight to the transport of uvicorn's own WebSocket protocols.

On uvicorn's ``websockets`` and ``websockets-sansio`` protocols, the ASGI ``send`` of a text or
binary message writes one unmasked frame to the transport, at once, or raises. The same bytes,
encoded once per broadcast, can then go to the transport directly, and most of what a delivery
costs there (the ``send`` coroutine and the protocol's framing) is saved — as long as:

- the connection is open (the handshake done, no close frame sent or received);
- no extension was negotiated (per-message deflate would need the protocol's compressor);
- nothing waits in the transport's buffer: frames already queued there go first, and a client
  that falls behind gets its messages through ``send`` and the outbox's byte bound.

Anything else, and every other server, takes the ASGI ``send``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["frame_writer"]

FrameWriter = Callable[[bytes], bool]

_LEGACY = "uvicorn.protocols.websockets.websockets_impl"
_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"


def frame_writer(send: Any) -> FrameWriter | None:
    """A function that writes a pre-encoded server frame to the connection behind ``send`` and
    says whether it did; None when ``send`` is not the ASGI ``send`` of uvicorn's own
    ``websockets`` or ``websockets-sansio`` protocol."""
    protocol = getattr(send, "__self__", None)
    if protocol is None:
        return None
    modules = {cls.__module__ for cls in type(protocol).__mro__}
    if _LEGACY in modules and getattr(send, "__name__", "") == "asgi_send":
        return _writer(protocol, protocol)  # websockets' legacy protocol is its own state
    if _SANSIO in modules and getattr(send, "__name__", "") == "send":
        return _writer(protocol, protocol.conn)
    return None


def _writer(protocol: Any, state: Any) -> FrameWriter:
    # ``state`` (websockets' legacy protocol, or its sans-I/O connection) turns OPEN once the
    # handshake response was written and CLOSING as a close frame is sent or received; its
    # extensions are set in the handshake.
    opened = type(state.state).OPEN

    def write(frame: bytes) -> bool:
        if state.state is not opened or state.extensions:
            return False
        transport = protocol.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            return False
        transport.write(frame)
        return True

    return write
