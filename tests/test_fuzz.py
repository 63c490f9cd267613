"""The fuzz targets' properties (see fuzz/), as short hypothesis runs in the normal suite.

- The frame decoder raises nothing but ``ProtocolError`` 1002 or 1009, never returns a payload
  over ``max_frame_size``, and every built backend does exactly what the pure twin does, with
  ``read_partial()`` between feeds too; the partial reads of a frame are the start of its payload.
- The handshake twins agree field by field from request bytes to response bytes, and raise only
  ``HandshakeError`` (parsing) or ``ValueError`` (building).
- The sans-I/O connection never raises on peer bytes, reports and sends only valid close codes,
  sends only valid server frames and behaves the same on every connection backend with every
  frames backend; with
  ``defer_failure``, failing at the ``ERROR`` event gives the same events and bytes as without.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haske import _backends
from haske.connection import (
    CLOSED,
    ERROR,
    FRAME,
    OP_CLOSE,
    OP_TEXT,
    VALID_CLOSE_CODES,
    parse_close,
)
from haske.exceptions import HandshakeError, ProtocolError

FRAMES = {name: _backends.load("frames", name) for name in _backends.available("frames")}
CONNECTIONS = {
    name: _backends.load("connection", name).Connection
    for name in _backends.available("connection")
}
HANDSHAKES = {name: _backends.load("handshake", name) for name in _backends.available("handshake")}
PURE_FRAMES = FRAMES["python"]
KEY = b"\x37\xfa\x21\x3d"
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame_key(frame: Any) -> tuple[int, bytes, bool, bool, bool, bool]:
    return (frame.opcode, frame.payload, frame.fin, frame.rsv1, frame.rsv2, frame.rsv3)


VALID_HEADS = [0x81, 0x82, 0x01, 0x00, 0x80, 0x88, 0x89, 0x8A]


@st.composite
def raw_frames(draw: st.DrawFn, masked: bool) -> bytes:
    """A frame on the wire: mostly well formed, one in ten with odd bits, lengths or masking."""
    odd = draw(st.integers(0, 9)) == 0
    head = draw(st.integers(0, 255) if odd else st.sampled_from(VALID_HEADS))
    payload = draw(st.binary(max_size=200))
    if head & 0x0F == 8 and draw(st.booleans()):
        payload = draw(st.integers(0, 5000)).to_bytes(2, "big") + payload[:20]
    mask = draw(st.booleans()) if odd else masked
    size = len(payload)
    if odd and draw(st.booleans()):
        size = draw(st.sampled_from([126, 65535, 2**63 - 1, 2**63, 2**64 - 1]))
    width = draw(st.sampled_from([0, 0, 2, 8])) if size < 126 else (2 if size < 65536 else 8)
    second = (0x80 if mask else 0) | {0: size, 2: 126, 8: 127}[width]
    header = bytes([head, second]) + (size.to_bytes(width, "big") if width else b"")
    if mask:
        body: bytes = PURE_FRAMES.apply_mask(payload, KEY)
        return header + KEY + body
    return header + payload


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (taken modulo its length)."""
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def streams(masked: bool) -> st.SearchStrategy[bytes]:
    return st.lists(raw_frames(masked), max_size=6).map(b"".join)


cut_points = st.lists(st.integers(0, 4000), max_size=6)
feed_kinds = st.sampled_from([bytes, bytearray, memoryview])


def decode_log(
    frames: ModuleType,
    chunks: list[bytes],
    kind: Callable[[bytes], Any],
    partial: bool,
    **options: Any,
) -> list[Any]:
    """Everything one decoder did with ``chunks``: frames, partial reads, bytes held, and how it
    failed."""
    decoder = frames.FrameDecoder(**options)
    log: list[Any] = []
    arrived = b""  # the partial reads of the frame in progress
    try:
        for chunk in chunks:
            decoder.feed(kind(chunk))
            for frame in decoder:
                assert len(frame.payload) <= options["max_frame_size"]
                assert frame.payload.startswith(arrived)
                arrived = b""
                log.append(frame_key(frame))
            if partial and (read := decoder.read_partial()) is not None:
                _, offset, data = read
                assert offset == len(arrived)
                arrived += data
                log.append(read)
            log.append(decoder.buffered)
    except ProtocolError as exc:
        assert exc.code in (1002, 1009)
        log.append((exc.code, exc.reason, decoder.buffered))
    return log


@FAST
@given(
    data=st.data(),
    points=cut_points,
    kind=feed_kinds,
    max_frame_size=st.sampled_from([0, 125, 126, 65535, 2**63 - 1, 2**64]) | st.integers(0, 300),
    require_mask=st.booleans(),
    allowed_rsv=st.sampled_from([0, 0x40, 0x70]),
    partial=st.booleans(),
)
def test_decoder_twins_agree(
    data: st.DataObject,
    points: list[int],
    kind: Callable[[bytes], Any],
    max_frame_size: int,
    require_mask: bool,
    allowed_rsv: int,
    partial: bool,
) -> None:
    stream = data.draw(streams(require_mask))
    options = {
        "max_frame_size": max_frame_size,
        "require_mask": require_mask,
        "allowed_rsv": allowed_rsv,
    }
    chunks = cut(stream, points)
    expected = decode_log(PURE_FRAMES, chunks, kind, partial, **options)
    for frames in FRAMES.values():
        assert decode_log(frames, chunks, kind, partial, **options) == expected


# The handshake

REQUEST_LINES = [
    b"GET /chat HTTP/1.1",
    b"GET /chat HTTP/1.1",
    b"GET /a%0D%0Ab?x HTTP/1.1",
    b"POST / HTTP/1.0",
    b"GET  /",
]
VALID_HEADERS = [
    b"Host: example.com",
    b"Upgrade: websocket",
    b"Connection: keep-alive, Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
]
OTHER_HEADERS = [
    b"Sec-WebSocket-Protocol: chat, super chat",
    b"Sec-WebSocket-Protocol: chat, superchat",
    b'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; x="1\\5"',
    b"Sec-WebSocket-Extensions: a;b=",
    b"X-Odd:\t v\xe9 ",
    b"Bad Name: x",
]
header_lists = st.builds(
    lambda valid, extra, junk: (VALID_HEADERS if valid else []) + extra + junk,
    st.booleans(),
    st.lists(st.sampled_from(VALID_HEADERS + OTHER_HEADERS), max_size=3),
    st.lists(st.binary(max_size=12), max_size=1),
)
requests = st.builds(
    lambda line, headers, ending, junk: b"\r\n".join([line, *headers]) + ending + junk,
    st.sampled_from(REQUEST_LINES),
    header_lists.flatmap(st.permutations),
    st.sampled_from([b"\r\n\r\n", b"\r\n\r\n", b"\n\n", b"\r\n"]),
    st.binary(max_size=4),
)
REQUEST_FIELDS = ("method", "target", "path", "query", "http_version", "headers", "head_size")
VALIDATION_FIELDS = ("ok", "status", "reason", "key", "accept", "subprotocols", "extensions")


def outcome(function: Callable[..., Any], *args: Any) -> Any:
    """A handshake call's result as plain data, or the details of an allowed exception."""
    try:
        result = function(*args)
    except HandshakeError as exc:
        return ("HandshakeError", exc.status, exc.reason)
    except ValueError as exc:
        return ("ValueError", str(exc))
    for fields in (REQUEST_FIELDS, VALIDATION_FIELDS):
        if hasattr(result, fields[-1]):
            return [getattr(result, name) for name in fields]
    return result


def handshake_log(handshake: ModuleType, data: bytes) -> list[Any]:
    """Parse, validate and answer one request; the outcome of each step."""
    parsed = outcome(handshake.parse_request, data)
    if not isinstance(parsed, list):
        return [parsed]
    method, _, path, query, version, headers, _ = parsed
    verdict = handshake.validate_request(method, version, headers)
    extra = [*headers, (b"X-Path", path.encode())]
    subprotocol = verdict.subprotocols[0] if verdict.subprotocols else None
    return [
        parsed,
        outcome(handshake.validate_request, method, version, headers),
        outcome(handshake.build_response, verdict.accept, subprotocol, path, extra),
        outcome(handshake.build_rejection, verdict.status, verdict.reason, extra, query),
    ]


@FAST
@given(data=requests)
def test_handshake_twins_agree(data: bytes) -> None:
    expected = handshake_log(HANDSHAKES["python"], data)
    for handshake in HANDSHAKES.values():
        assert handshake_log(handshake, data) == expected


# The connection


def connection_log(
    connection_type: Any,
    frames: ModuleType,
    chunks: list[bytes],
    frame_mode: bool,
    max_message_size: int,
    defer_failure: bool = False,
) -> list[Any]:
    """The events and sent frames of a server connection fed ``chunks``, checked as they come.

    With ``defer_failure`` the connection is failed at the ``ERROR`` event, logged as the close
    event it stands for.
    """
    conn = connection_type(
        frames=frames, max_message_size=max_message_size, defer_failure=defer_failure
    )
    conn.frame_mode = frame_mode
    log: list[Any] = []
    for chunk in chunks:
        for kind, value in conn.receive_data(chunk):
            if kind == ERROR:
                assert defer_failure and value[0] in (1002, 1007, 1009)
                conn.fail(*value)
                kind = OP_CLOSE
            if kind == OP_CLOSE:
                assert value[0] in VALID_CLOSE_CODES | {1005}
                assert conn.state == CLOSED
            elif kind == FRAME:
                value = frame_key(value)
            else:
                assert len(value.encode() if kind == OP_TEXT else value) <= max_message_size
            log.append((kind, value))
    sent = PURE_FRAMES.FrameDecoder(require_mask=False)
    sent.feed(b"".join(conn.data_to_send()))
    for frame in sent:
        if frame.opcode == OP_CLOSE:
            assert parse_close(frame.payload)[0] in VALID_CLOSE_CODES
        log.append(("sent", frame_key(frame)))
    assert sent.buffered == 0
    return log


@FAST
@given(
    stream=st.lists(raw_frames(masked=True) | st.binary(max_size=3), max_size=8).map(b"".join),
    points=cut_points,
    frame_mode=st.booleans(),
    max_message_size=st.sampled_from([1, 10, 125, 1000, 65536]),
)
def test_connection_never_raises_and_closes_validly(
    stream: bytes, points: list[int], frame_mode: bool, max_message_size: int
) -> None:
    chunks = cut(stream, points)
    pure = CONNECTIONS["python"]
    expected = connection_log(pure, PURE_FRAMES, chunks, frame_mode, max_message_size)
    for connection_type, frames in itertools.product(CONNECTIONS.values(), FRAMES.values()):
        log = connection_log(connection_type, frames, chunks, frame_mode, max_message_size)
        assert log == expected
        log = connection_log(connection_type, frames, chunks, frame_mode, max_message_size, True)
        assert log == expected
