"""Every limit's default, in one place.

The server-side settings that uvicorn has no flag for read an environment variable once, when
this module is imported (``haske.run()`` sets them for its worker processes too):

=============================  ===============================  ==================================
variable                       setting                          value
=============================  ===============================  ==================================
``HASKE_WS_MAX_FRAME_SIZE``    :data:`MAX_FRAME_SIZE`           bytes; unset: the message size
``HASKE_WS_IDLE_TIMEOUT``      :data:`IDLE_TIMEOUT`             seconds; ``0``/``none``: off
``HASKE_MAX_CONNECTIONS``      :data:`MAX_CONNECTIONS`          a count; ``0``/``none``: no limit
``HASKE_HANDSHAKE_TIMEOUT``    :data:`HANDSHAKE_TIMEOUT`        seconds; ``0``/``none``: off
=============================  ===============================  ==================================

``docs/configuration.md`` says what happens when each limit is reached.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = [
    "CLOSE_TIMEOUT",
    "ENVIRONMENT",
    "HANDSHAKE_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CHANNELS_PER_CONNECTION",
    "MAX_CONNECTIONS",
    "MAX_FRAME_SIZE",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "MAX_QUEUE",
    "MAX_REQUEST_HEAD",
    "OUTBOUND_LIMIT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "from_environment",
]

T = TypeVar("T", int, float)

# uvicorn's own defaults for its --ws-* flags, which Haske's protocol honours.
#: Largest incoming message, in bytes (uvicorn ``ws_max_size``).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Incoming messages the app may fall behind before reading stops (uvicorn ``ws_max_queue``).
MAX_QUEUE = 32
#: Seconds between keepalive pings (uvicorn ``ws_ping_interval``).
PING_INTERVAL = 20.0
#: Seconds a pong may take (uvicorn ``ws_ping_timeout``).
PING_TIMEOUT = 20.0

#: Seconds the peer has to answer our close frame before the transport is aborted.
CLOSE_TIMEOUT = 5.0
#: Outbound bytes a connection may have queued before the broadcaster's slow-consumer policy
#: applies.
OUTBOUND_LIMIT = 1024 * 1024
#: Channels one connection may be in at once.
MAX_CHANNELS_PER_CONNECTION = 100
#: Largest WebSocket request head in bytes, and most header lines, on Haske's protocol (the
#: handshake parser's own limits).
MAX_REQUEST_HEAD = 16384
MAX_HEADERS = 100

#: The environment variable behind each setting it overrides.
ENVIRONMENT: Mapping[str, str] = {
    "max_frame_size": "HASKE_WS_MAX_FRAME_SIZE",
    "idle_timeout": "HASKE_WS_IDLE_TIMEOUT",
    "max_connections": "HASKE_MAX_CONNECTIONS",
    "handshake_timeout": "HASKE_HANDSHAKE_TIMEOUT",
}

_OFF = {"0", "none", "off"}


def from_environment(name: str, default: T | None, kind: Callable[[str], T]) -> T | None:
    """The setting in environment variable ``name``: ``default`` when unset or empty, None for
    ``0``, ``none`` or ``off``; ``ValueError`` for anything but a positive number."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _OFF:
        return None
    try:
        value: T | None = kind(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number, 0 or none; got {raw!r}")
    return value


#: Largest incoming frame, in bytes, on Haske's protocol; None: the message size. A frame's
#: declared length is checked before any of it is buffered.
MAX_FRAME_SIZE: int | None = from_environment("HASKE_WS_MAX_FRAME_SIZE", None, int)
#: Seconds without a data message either way after which Haske's protocol closes the
#: connection with 1001 "idle"; None: never.
IDLE_TIMEOUT: float | None = from_environment("HASKE_WS_IDLE_TIMEOUT", None, float)
#: Open WebSocket connections per server process on Haske's protocol; past it, HTTP 503.
MAX_CONNECTIONS: int | None = from_environment("HASKE_MAX_CONNECTIONS", 10_000, int)
#: Seconds a client has, once connected, to send a complete HTTP request head (Haske's HTTP
#: protocol); None: no limit.
HANDSHAKE_TIMEOUT: float | None = from_environment("HASKE_HANDSHAKE_TIMEOUT", 5.0, float)
