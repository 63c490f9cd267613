"""Exceptions raised by Haske."""

from __future__ import annotations

from starlette.websockets import WebSocketDisconnect


class HaskeError(Exception):
    """Base class of every Haske exception."""


class ProtocolError(HaskeError):
    """The peer broke RFC 6455; ``code`` is the close code to fail the connection with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class HandshakeError(HaskeError):
    """An upgrade request that cannot be accepted; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status})")
        self.status = status
        self.reason = reason


class ConnectionClosed(WebSocketDisconnect, HaskeError):
    """The WebSocket is closed; ``code`` and ``reason`` are those of the closing handshake.

    It is a Starlette ``WebSocketDisconnect``, so existing handlers that catch that keep working.
    """

    def __init__(self, code: int = 1006, reason: str | None = None) -> None:
        super().__init__(code, reason)

    def __str__(self) -> str:
        return f"connection closed with code {self.code}" + (f": {self.reason}" if self.reason else "")


class NotSupportedError(HaskeError):
    """The feature needs Haske's own WebSocket protocol (``--ws haske.server:WebSocketProtocol``)."""
