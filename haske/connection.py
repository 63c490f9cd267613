"""Sans-I/O RFC 6455 connection: bytes in, events and bytes out.

A :class:`Connection` starts after the opening handshake. Feed it what the peer sent with
:meth:`Connection.receive_data`; it returns events and queues what must go back (pongs, the close
reply, messages the application sends), which :meth:`Connection.data_to_send` hands over. It never
touches a socket, a clock or an event loop.

Events are ``(kind, value)`` pairs, ``kind`` being the opcode of what arrived:

===============  =====================================================================
``OP_TEXT``      a complete text message: ``str``
``OP_BINARY``    a complete binary message: ``bytes``
``OP_PING``      a ping: its payload (the pong is already queued)
``OP_PONG``      a pong: its payload
``OP_CLOSE``     the connection is closed: ``(code, reason)``; see :attr:`Connection.close_code`
``FRAME``        in frame mode, a data frame as the decoder returned it (no reassembly)
``ERROR``        with ``defer_failure``, the peer broke the protocol: ``(code, reason)``
===============  =====================================================================

The capability probe picks the implementation: the compiled one in
:mod:`haske._speedups.connection`, or its pure-Python twin in :mod:`haske._pure.connection`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from haske import _backends
from haske._pure.connection import (
    ABNORMAL_CLOSURE,
    CLOSED,
    CLOSING,
    DEFAULT_MAX_MESSAGE_SIZE,
    ERROR,
    FRAME,
    LARGE_PAYLOAD,
    NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    RESERVED_CLOSE_CODES,
    VALID_CLOSE_CODES,
    check_close_code,
    parse_close,
)

if TYPE_CHECKING:
    from haske._pure.connection import Connection
else:
    Connection = _backends.connection.Connection

__all__ = [
    "ABNORMAL_CLOSURE",
    "CLOSED",
    "CLOSING",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ERROR",
    "FRAME",
    "LARGE_PAYLOAD",
    "NO_STATUS",
    "OPEN",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "RESERVED_CLOSE_CODES",
    "VALID_CLOSE_CODES",
    "Connection",
    "check_close_code",
    "parse_close",
]
