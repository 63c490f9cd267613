"""The sans-I/O connection against RFC 6455, section by section: every connection backend on
every frames backend."""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest

from haske import _backends
from haske.connection import (
    CLOSED,
    CLOSING,
    ERROR,
    FRAME,
    LARGE_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    Connection,
)
from haske.exceptions import ConnectionClosed

KEY = b"\x0f\xa1\x37\x5c"


@pytest.fixture
def frames(frames_impl: ModuleType) -> ModuleType:
    return frames_impl


@pytest.fixture
def connection_type(connection_impl: ModuleType) -> type[Connection]:
    return connection_impl.Connection  # type: ignore[no-any-return]


@pytest.fixture
def conn(frames: ModuleType, connection_type: type[Connection]) -> Connection:
    return connection_type(frames=frames)


def client(frames: ModuleType, opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as a client sends it: masked."""
    return frames.encode_frame(opcode, payload, fin=fin, mask=KEY)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def sent(conn: Connection) -> bytes:
    return b"".join(conn.data_to_send())


def failure_code(conn: Connection, events: list[tuple[int, Any]], frames: ModuleType) -> int:
    """The code of the close frame the connection sent after failing, checked against its event."""
    assert conn.state == CLOSED
    assert events and events[-1][0] == OP_CLOSE
    decoder = frames.FrameDecoder(require_mask=False)
    decoder.feed(sent(conn))
    replies = list(decoder)
    assert replies[-1].opcode == OP_CLOSE
    code = int.from_bytes(replies[-1].payload[:2], "big")
    assert events[-1][1][0] == code
    return code


# §5.4 Fragmentation


def test_fragmented_text_is_reassembled(conn: Connection, frames: ModuleType) -> None:
    """§5.4: a message split into a text frame and continuations arrives whole."""
    data = (
        client(frames, OP_TEXT, b"Hel", fin=False)
        + client(frames, OP_CONTINUATION, b"", fin=False)
        + client(frames, OP_CONTINUATION, b"lo")
    )
    assert conn.receive_data(data) == [(OP_TEXT, "Hello")]


def test_fragmented_binary_fed_byte_by_byte(conn: Connection, frames: ModuleType) -> None:
    """§5.4: fragments may be cut anywhere by TCP; the message is the concatenation."""
    data = client(frames, OP_BINARY, b"\x00\x01", fin=False) + client(
        frames, OP_CONTINUATION, b"\xff"
    )
    events = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    assert events == [(OP_BINARY, b"\x00\x01\xff")]


def test_control_frames_interleaved_with_fragments(conn: Connection, frames: ModuleType) -> None:
    """§5.4: control frames may be injected in the middle of a fragmented message."""
    data = (
        client(frames, OP_TEXT, b"a", fin=False)
        + client(frames, OP_PING, b"mid")
        + client(frames, OP_PONG, b"p")
        + client(frames, OP_CONTINUATION, b"b")
    )
    assert conn.receive_data(data) == [(OP_PING, b"mid"), (OP_PONG, b"p"), (OP_TEXT, "ab")]
    assert sent(conn) == frames.encode_frame(OP_PONG, b"mid")


def test_continuation_without_message_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.4: a continuation frame with no message in progress is a protocol error."""
    events = conn.receive_data(client(frames, OP_CONTINUATION, b"x"))
    assert failure_code(conn, events, frames) == 1002


def test_new_message_inside_fragmented_message_fails_1002(
    conn: Connection, frames: ModuleType
) -> None:
    """§5.4: the fragments of one message must not be interleaved with another data frame."""
    data = client(frames, OP_TEXT, b"a", fin=False) + client(frames, OP_BINARY, b"b")
    events = conn.receive_data(data)
    assert failure_code(conn, events, frames) == 1002


def test_frame_mode_delivers_frames_without_reassembly(
    conn: Connection, frames: ModuleType
) -> None:
    """§5.4: in frame mode each data frame is an event; the fragmentation rules still hold."""
    conn.frame_mode = True
    data = client(frames, OP_TEXT, b"ab", fin=False) + client(frames, OP_CONTINUATION, b"c")
    events = conn.receive_data(data)
    assert [(kind, f.opcode, f.payload, f.fin) for kind, f in events] == [
        (FRAME, OP_TEXT, b"ab", False),
        (FRAME, OP_CONTINUATION, b"c", True),
    ]
    events = conn.receive_data(client(frames, OP_CONTINUATION, b"x"))
    assert failure_code(conn, events, frames) == 1002


def test_frame_mode_starts_at_the_next_message(conn: Connection, frames: ModuleType) -> None:
    """§5.4: switching to frame mode mid-message finishes that message as a message."""
    assert conn.receive_data(client(frames, OP_BINARY, b"a", fin=False)) == []
    conn.frame_mode = True
    assert conn.receive_data(client(frames, OP_CONTINUATION, b"b")) == [(OP_BINARY, b"ab")]
    ((kind, frame),) = conn.receive_data(client(frames, OP_BINARY, b"c"))
    assert (kind, frame.payload) == (FRAME, b"c")


# §5.5 Control frames


def test_ping_is_answered_with_pong_echoing_payload(conn: Connection, frames: ModuleType) -> None:
    """§5.5.2/5.5.3: a pong answers a ping with the same application data."""
    assert conn.receive_data(client(frames, OP_PING, b"\x00payload")) == [(OP_PING, b"\x00payload")]
    assert sent(conn) == frames.encode_frame(OP_PONG, b"\x00payload")


def test_pong_is_reported_and_not_answered(conn: Connection, frames: ModuleType) -> None:
    """§5.5.3: an unsolicited pong needs no response."""
    assert conn.receive_data(client(frames, OP_PONG, b"hb")) == [(OP_PONG, b"hb")]
    assert conn.data_to_send() == []


def test_control_payload_over_125_bytes_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.5: control frames carry at most 125 bytes of payload."""
    header = bytes((0x89, 0x80 | 126)) + (126).to_bytes(2, "big") + KEY
    events = conn.receive_data(header + frames.apply_mask(b"x" * 126, KEY))
    assert failure_code(conn, events, frames) == 1002


def test_fragmented_control_frame_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.5: control frames must not be fragmented."""
    events = conn.receive_data(bytes((0x09, 0x80)) + KEY)
    assert failure_code(conn, events, frames) == 1002


def test_send_control_payload_limit(conn: Connection) -> None:
    """§5.5: we never send a control frame over 125 bytes."""
    with pytest.raises(ValueError, match="125"):
        conn.send_ping(b"x" * 126)
    conn.send_ping(b"x" * 125)


# §5.5.1 Close


def test_peer_close_is_echoed(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: the endpoint answers a close with a close carrying the same status code."""
    events = conn.receive_data(client(frames, OP_CLOSE, close_payload(1001, "bye")))
    assert events == [(OP_CLOSE, (1001, "bye"))]
    assert sent(conn) == frames.encode_frame(OP_CLOSE, close_payload(1001))
    assert conn.state == CLOSED
    assert (conn.close_code, conn.close_reason) == (1001, "bye")


def test_peer_close_without_code_is_answered_1000(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1/§7.1.5: an empty close means 1005 (no status); we answer 1000."""
    assert conn.receive_data(client(frames, OP_CLOSE)) == [(OP_CLOSE, (1005, ""))]
    assert sent(conn) == frames.encode_frame(OP_CLOSE, close_payload(1000))


def test_data_after_our_close_is_ignored(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: after sending close we send nothing else and ignore data until the reply."""
    conn.send_close(1000, "done")
    assert conn.state == CLOSING
    assert sent(conn) == frames.encode_frame(OP_CLOSE, close_payload(1000, "done"))
    data = (
        client(frames, OP_TEXT, b"late")
        + client(frames, OP_BINARY, b"a", fin=False)
        + client(frames, OP_CONTINUATION, b"b")
        + client(frames, OP_PING, b"no pong")
    )
    assert conn.receive_data(data) == [(OP_PING, b"no pong")]
    assert conn.data_to_send() == []
    assert conn.receive_data(client(frames, OP_CLOSE, close_payload(1000))) == [
        (OP_CLOSE, (1000, ""))
    ]
    assert conn.state == CLOSED
    assert conn.data_to_send() == []


def test_nothing_is_processed_after_closed(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: the close frame is the last frame; bytes after it are discarded."""
    data = client(frames, OP_CLOSE, close_payload(1000)) + client(frames, OP_TEXT, b"after")
    assert conn.receive_data(data) == [(OP_CLOSE, (1000, ""))]
    assert conn.receive_data(client(frames, OP_TEXT, b"later")) == []


def test_sending_after_close_raises_connection_closed(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: no data frames after a close frame; the caller gets the close code."""
    conn.receive_data(client(frames, OP_CLOSE, close_payload(4001, "gone")))
    with pytest.raises(ConnectionClosed) as info:
        conn.send_text("x")
    assert (info.value.code, info.value.reason) == (4001, "gone")
    with pytest.raises(ConnectionClosed):
        conn.send_encoded(frames.encode_frame(OP_TEXT, b"x"))


def test_eof_without_close_is_1006(conn: Connection) -> None:
    """§7.1.5: a connection closed without a close frame reports 1006."""
    conn.receive_eof()
    assert conn.state == CLOSED
    assert conn.close_code == 1006


# §5.6 Data frames and UTF-8 (§8.1)


def test_unfragmented_invalid_utf8_fails_1007(conn: Connection, frames: ModuleType) -> None:
    """§8.1: a text message that is not valid UTF-8 fails the connection with 1007."""
    events = conn.receive_data(client(frames, OP_TEXT, b"ok \xff"))
    assert failure_code(conn, events, frames) == 1007


def test_invalid_utf8_fails_fast_before_the_message_ends(
    conn: Connection, frames: ModuleType
) -> None:
    """§8.1: validation is incremental; the first invalid fragment fails, not the last one."""
    events = conn.receive_data(client(frames, OP_TEXT, "κόσμε".encode(), fin=False))
    assert events == []
    events = conn.receive_data(client(frames, OP_CONTINUATION, b"\xf4\x90\x80", fin=False))
    assert failure_code(conn, events, frames) == 1007


def test_invalid_sequence_split_across_fragments(conn: Connection, frames: ModuleType) -> None:
    """§8.1: a sequence cut by a fragment boundary is checked across it."""
    conn.receive_data(client(frames, OP_TEXT, b"\xf4", fin=False))
    events = conn.receive_data(client(frames, OP_CONTINUATION, b"\x90", fin=False))
    assert failure_code(conn, events, frames) == 1007


def test_surrogate_fails_fast(conn: Connection, frames: ModuleType) -> None:
    """§8.1: ED A0-BF starts a UTF-16 surrogate, which UTF-8 forbids; fail on the second byte."""
    events = conn.receive_data(client(frames, OP_TEXT, b"a\xed\xa0", fin=False))
    assert failure_code(conn, events, frames) == 1007


def test_valid_sequence_split_across_fragments(conn: Connection, frames: ModuleType) -> None:
    """§8.1: a valid multi-byte character may be split between fragments."""
    euro = "€".encode()
    data = (
        client(frames, OP_TEXT, euro[:1], fin=False)
        + client(frames, OP_CONTINUATION, euro[1:2], fin=False)
        + client(frames, OP_CONTINUATION, euro[2:])
    )
    assert conn.receive_data(data) == [(OP_TEXT, "€")]


def test_truncated_sequence_at_message_end_fails_1007(conn: Connection, frames: ModuleType) -> None:
    """§8.1: a message may not end in the middle of a character."""
    conn.receive_data(client(frames, OP_TEXT, b"abc\xe2\x82", fin=False))
    events = conn.receive_data(client(frames, OP_CONTINUATION, b""))
    assert failure_code(conn, events, frames) == 1007


def test_binary_is_not_validated(conn: Connection, frames: ModuleType) -> None:
    """§5.6: binary data is arbitrary."""
    assert conn.receive_data(client(frames, OP_BINARY, b"\xff\xfe")) == [(OP_BINARY, b"\xff\xfe")]


def test_frames_before_a_bad_frame_are_delivered(conn: Connection, frames: ModuleType) -> None:
    """§5.6: what arrived intact before the error is still delivered, then the close."""
    data = client(frames, OP_TEXT, b"good") + bytes((0x83, 0x80)) + KEY
    events = conn.receive_data(data)
    assert events[0] == (OP_TEXT, "good")
    assert failure_code(conn, events, frames) == 1002


def test_unmasked_client_frame_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.1: a server must fail the connection on an unmasked client frame."""
    events = conn.receive_data(frames.encode_frame(OP_TEXT, b"plain"))
    assert failure_code(conn, events, frames) == 1002


def test_rsv1_without_extension_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.2: RSV1 (per-message deflate) is never negotiated, so a frame with it fails."""
    data = frames.encode_frame(OP_TEXT, b"x", rsv1=True, mask=KEY)
    events = conn.receive_data(data)
    assert failure_code(conn, events, frames) == 1002


def test_client_side_masks_and_refuses_masked_frames(
    frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§5.1: a client masks every frame and fails on a masked frame from the server."""
    conn = connection_type(client=True, frames=frames)
    conn.send_text("hi")
    decoder = frames.FrameDecoder(require_mask=True)
    decoder.feed(sent(conn))
    assert decoder.next_frame().payload == b"hi"
    assert conn.receive_data(frames.encode_frame(OP_TEXT, b"ok")) == [(OP_TEXT, "ok")]
    events = conn.receive_data(frames.encode_frame(OP_TEXT, b"x", mask=KEY))
    assert failure_code_client(conn, events, frames) == 1002


def failure_code_client(conn: Connection, events: list[tuple[int, Any]], frames: ModuleType) -> int:
    decoder = frames.FrameDecoder(require_mask=True)
    decoder.feed(sent(conn))
    close = list(decoder)[-1]
    assert close.opcode == OP_CLOSE and events[-1][0] == OP_CLOSE
    return int.from_bytes(close.payload[:2], "big")


# §8.1 Fail fast inside a frame whose payload is still arriving


def frame_in_parts(
    frames: ModuleType, opcode: int, parts: list[bytes], fin: bool = True
) -> list[bytes]:
    """One masked frame cut where ``parts`` meet: the header comes with the first part."""
    data = client(frames, opcode, b"".join(parts), fin=fin)
    tail: list[bytes] = []
    for part in reversed(parts[1:]):
        cut = len(data) - len(part)
        data, tail = data[:cut], [data[cut:], *tail]
    return [data, *tail]


KOSME = "κόσμε".encode()


@pytest.mark.parametrize(
    "parts",
    [
        [KOSME, b"\xf4\x90\x80\x80", b"edited"],  # Autobahn 6.4.3
        [KOSME + b"\xf4", b"\x90", b"\x80\x80edited"],  # 6.4.4: split at the invalid octet
        [b"a\xed", b"\xa0", b"\x80z"],  # a UTF-16 surrogate, held back by the decoder
    ],
    ids=["at-a-code-point", "at-the-invalid-octet", "surrogate"],
)
def test_invalid_utf8_fails_before_the_frame_is_complete(
    conn: Connection, frames: ModuleType, parts: list[bytes]
) -> None:
    """§8.1: a text frame fails at its first invalid byte, before the rest of it arrives."""
    first, second, _ = frame_in_parts(frames, OP_TEXT, parts)
    assert conn.receive_data(first) == []
    events = conn.receive_data(second)
    assert failure_code(conn, events, frames) == 1007


def test_invalid_utf8_in_a_continuation_in_progress_fails(
    conn: Connection, frames: ModuleType
) -> None:
    """§8.1: a continuation frame still arriving is checked from where the message stands."""
    assert conn.receive_data(client(frames, OP_TEXT, KOSME + b"\xf4", fin=False)) == []
    first, second = frame_in_parts(frames, OP_CONTINUATION, [b"", b"\x90\x80\x80"])
    assert conn.receive_data(first) == []
    events = conn.receive_data(second)
    assert failure_code(conn, events, frames) == 1007


def test_valid_text_arriving_byte_by_byte_is_delivered_once(
    conn: Connection, frames: ModuleType
) -> None:
    """§5.4, §8.1: checking the parts of a frame as they come changes nothing when they are valid."""
    text = "Hello-µ@ßöäüàá-UTF-8!! €𝄞"
    data = client(frames, OP_TEXT, text[:7].encode(), fin=False) + client(
        frames, OP_CONTINUATION, text[7:].encode()
    )
    events = [
        event for byte in range(len(data)) for event in conn.receive_data(data[byte : byte + 1])
    ]
    assert events == [(OP_TEXT, text)]
    assert conn.state == OPEN


def test_binary_in_progress_is_not_checked(conn: Connection, frames: ModuleType) -> None:
    """§5.6: a binary frame whose payload is still arriving is arbitrary data."""
    first, second = frame_in_parts(frames, OP_BINARY, [b"\xff\xfe", b"\xc0"])
    assert conn.receive_data(first) == []
    assert conn.receive_data(second) == [(OP_BINARY, b"\xff\xfe\xc0")]


def test_text_in_progress_after_our_close_is_not_checked(
    conn: Connection, frames: ModuleType
) -> None:
    """§1.4: after our close frame, data frames are discarded, valid or not."""
    conn.send_close(1000)
    first, second = frame_in_parts(frames, OP_TEXT, [b"ok", b"\xff"])
    assert conn.receive_data(first) == []
    assert conn.receive_data(second) == []
    assert conn.state == CLOSING


# §7.1.7 Failing the connection, deferred


@pytest.fixture
def deferring(frames: ModuleType, connection_type: type[Connection]) -> Connection:
    return connection_type(frames=frames, defer_failure=True)


def test_deferred_failure_reports_the_error_after_the_messages(
    deferring: Connection, frames: ModuleType
) -> None:
    """§7.1.7: with defer_failure, the messages before the error come first, then ERROR."""
    data = client(frames, OP_TEXT, b"one") + bytes((0x83, 0x80)) + KEY + client(frames, OP_PING)
    events = deferring.receive_data(data)
    assert events == [(OP_TEXT, "one"), (ERROR, (1002, "reserved opcode 0x3"))]
    assert deferring.state == OPEN
    assert sent(deferring) == b""


def test_deferred_failure_lets_replies_go_before_the_close(
    deferring: Connection, frames: ModuleType
) -> None:
    """§7.1.7: replies queued before fail() leave before its close frame; then nothing is sent."""
    events = deferring.receive_data(
        client(frames, OP_TEXT, b"hi") + client(frames, OP_TEXT, b"\xff")
    )
    assert events == [(OP_TEXT, "hi"), (ERROR, (1007, "invalid UTF-8 in a text message"))]
    deferring.send_text("hi")
    deferring.fail(1007, "invalid UTF-8 in a text message")
    decoder = frames.FrameDecoder(require_mask=False)
    decoder.feed(sent(deferring))
    replies = list(decoder)
    assert [f.opcode for f in replies] == [OP_TEXT, OP_CLOSE]
    assert replies[1].payload[:2] == (1007).to_bytes(2, "big")
    assert deferring.state == CLOSED
    with pytest.raises(ConnectionClosed):
        deferring.send_text("late")


def test_nothing_is_read_after_a_deferred_failure(
    deferring: Connection, frames: ModuleType
) -> None:
    """§7.1.7: after the error nothing more is processed, not even a valid ping."""
    events = deferring.receive_data(client(frames, OP_TEXT, b"\xc0"))
    assert [kind for kind, _ in events] == [ERROR]
    assert deferring.receive_data(client(frames, OP_PING, b"p")) == []
    assert deferring.receive_data(client(frames, OP_CLOSE, close_payload(1000))) == []
    assert sent(deferring) == b""
    assert deferring.state == OPEN


def test_deferred_failure_in_a_partial_frame(deferring: Connection, frames: ModuleType) -> None:
    """§8.1: failing fast inside a frame also reports ERROR when deferred."""
    first, second, _ = frame_in_parts(frames, OP_TEXT, [b"ok", b"\xff", b"rest"])
    assert deferring.receive_data(first) == []
    assert deferring.receive_data(second) == [(ERROR, (1007, "invalid UTF-8 in a text message"))]


# §7.4 Status codes

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_received_close_code_is_echoed(
    code: int, frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§7.4.1/7.4.2: defined and registered/private codes are accepted and echoed."""
    conn = connection_type(frames=frames)
    assert conn.receive_data(client(frames, OP_CLOSE, close_payload(code))) == [
        (OP_CLOSE, (code, ""))
    ]
    assert sent(conn) == frames.encode_frame(OP_CLOSE, close_payload(code))


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_received_close_code_fails_1002(
    code: int, frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§7.4: reserved, local-only and undefined codes on the wire are protocol errors."""
    conn = connection_type(frames=frames)
    events = conn.receive_data(client(frames, OP_CLOSE, close_payload(code)))
    assert failure_code(conn, events, frames) == 1002


def test_one_byte_close_payload_fails_1002(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: a close body, if any, starts with a 2-byte code."""
    events = conn.receive_data(client(frames, OP_CLOSE, b"\x03"))
    assert failure_code(conn, events, frames) == 1002


def test_invalid_utf8_close_reason_fails_1007(conn: Connection, frames: ModuleType) -> None:
    """§5.5.1: the close reason is UTF-8."""
    events = conn.receive_data(client(frames, OP_CLOSE, close_payload(1000) + b"\xff"))
    assert failure_code(conn, events, frames) == 1007


@pytest.mark.parametrize("code", [1005, 1006, 1015])
def test_local_only_codes_can_never_be_sent(conn: Connection, code: int) -> None:
    """§7.4.1: 1005, 1006 and 1015 must not be set as a status code in a close frame."""
    with pytest.raises(ValueError, match="reserved"):
        conn.send_close(code)
    assert conn.state == OPEN
    assert conn.data_to_send() == []


@pytest.mark.parametrize("code", [0, 999, 1004, 1016, 2999, 5000])
def test_undefined_codes_cannot_be_sent(conn: Connection, code: int) -> None:
    """§7.4: only defined (1000-1003, 1007-1014) and 3000-4999 codes may be sent."""
    with pytest.raises(ValueError, match="not valid"):
        conn.send_close(code)


def test_close_reason_limit(conn: Connection) -> None:
    """§5.5: the reason fits in a control frame: at most 123 bytes once encoded."""
    with pytest.raises(ValueError, match="123"):
        conn.send_close(1000, "é" * 62)
    conn.send_close(1000, "é" * 61 + "x")
    assert conn.state == CLOSING


# §10.4 Implementation-specific limits


def test_oversized_frame_fails_1009_from_its_header(
    frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§10.4: a frame declaring more than the limit fails before its payload arrives."""
    conn = connection_type(max_message_size=1000, frames=frames)
    header = bytes((0x82, 0x80 | 126)) + (1001).to_bytes(2, "big") + KEY
    events = conn.receive_data(header)
    assert failure_code(conn, events, frames) == 1009


def test_message_at_the_limit_passes(frames: ModuleType, connection_type: type[Connection]) -> None:
    """§10.4: the limit is inclusive."""
    conn = connection_type(max_message_size=1000, frames=frames)
    data = client(frames, OP_BINARY, b"x" * 600, fin=False) + client(
        frames, OP_CONTINUATION, b"y" * 400
    )
    assert conn.receive_data(data) == [(OP_BINARY, b"x" * 600 + b"y" * 400)]


def test_fragmented_message_over_limit_fails_early(
    frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§10.4: the size is checked as fragments arrive, not when the message is complete."""
    conn = connection_type(max_message_size=1000, frames=frames)
    assert conn.receive_data(client(frames, OP_TEXT, b"x" * 600, fin=False)) == []
    events = conn.receive_data(client(frames, OP_CONTINUATION, b"y" * 401, fin=False))
    assert failure_code(conn, events, frames) == 1009


def test_max_frame_size_is_passed_to_the_decoder(
    frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§10.4: a frame limit below the message limit applies per frame."""
    conn = connection_type(max_message_size=1000, max_frame_size=100, frames=frames)
    events = conn.receive_data(client(frames, OP_BINARY, b"x" * 101))
    assert failure_code(conn, events, frames) == 1009


# Output queue


def test_large_payload_is_queued_without_copy(conn: Connection, frames: ModuleType) -> None:
    """Large messages go out as a header plus the caller's payload object."""
    payload = b"z" * LARGE_PAYLOAD
    conn.send_binary(payload)
    header, body = conn.data_to_send()
    assert body is payload
    assert header == frames.frame_header(OP_BINARY, len(payload))


def test_drop_oldest_keeps_control_frames(conn: Connection, frames: ModuleType) -> None:
    """Only whole queued messages are dropped, oldest first; pongs and closes stay."""
    first, second = frames.encode_frame(OP_TEXT, b"first"), frames.encode_frame(OP_TEXT, b"second")
    conn.send_encoded(first)
    conn.receive_data(client(frames, OP_PING, b"p"))
    conn.send_encoded(second)
    assert conn.drop_oldest(len(first))
    assert conn.pending_bytes == len(frames.encode_frame(OP_PONG, b"p")) + len(second)
    assert sent(conn) == frames.encode_frame(OP_PONG, b"p") + second


def test_drop_oldest_frees_what_it_can(conn: Connection, frames: ModuleType) -> None:
    """Short of droppable messages, all of them go and the result says room is still short."""
    frame = frames.encode_frame(OP_BINARY, b"abc")
    conn.send_encoded(frame)
    conn.send_ping(b"x" * 100)
    conn.send_encoded(frame)
    assert not conn.drop_oldest(3 * len(frame))
    assert sent(conn) == frames.encode_frame(OP_PING, b"x" * 100)


def test_drop_oldest_drops_a_split_large_message_whole(
    conn: Connection, frames: ModuleType
) -> None:
    """A large message queued as header + payload is dropped as one unit."""
    conn.send_binary(b"L" * LARGE_PAYLOAD)
    conn.send_text("small")
    assert conn.drop_oldest(1)
    assert sent(conn) == frames.encode_frame(OP_TEXT, b"small")


def test_send_frame_refuses_rsv_bits(conn: Connection, frames: ModuleType) -> None:
    """§5.2: RSV bits mean an extension, and Haske negotiates none."""
    with pytest.raises(ValueError, match="RSV"):
        conn.send_frame(frames.Frame(OP_BINARY, b"x", rsv1=True))
    assert conn.data_to_send() == []


def test_failure_reason_is_cut_on_a_character_boundary(
    frames: ModuleType, connection_type: type[Connection]
) -> None:
    """§5.5.1: the reason of the close frame we fail with stays valid UTF-8 within 123 bytes."""
    conn = connection_type(frames=frames)
    conn.fail(1011, "é" * 100)
    decoder = frames.FrameDecoder(require_mask=False)
    decoder.feed(sent(conn))
    reason = decoder.next_frame().payload[2:]
    assert len(reason) <= 123
    assert reason.decode() == "é" * 61


def test_drop_oldest_keeps_fragments(conn: Connection, frames: ModuleType) -> None:
    """A fragment of an unfinished message is never dropped: the stream would break."""
    conn.send_frame(frames.Frame(OP_TEXT, b"part", fin=False))
    assert not conn.drop_oldest(1)


@pytest.mark.parametrize(
    "payload", [b"XX", b"\x03", b"\x03\xe8\xff"], ids=["bad-code", "one-byte", "bad-utf8"]
)
def test_send_frame_with_a_bad_close_payload_is_a_usage_error(
    conn: Connection, frames: ModuleType, payload: bytes
) -> None:
    """§7.4: the application's own malformed close frame is a ValueError, not the peer's fault."""
    with pytest.raises(ValueError, match="invalid close frame"):
        conn.send_frame(frames.Frame(frames.OP_CLOSE, payload))


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.combinations(_backends.available("connection"), 2))
)
def test_the_twins_have_the_same_public_names(first: str, second: str) -> None:
    def public(cls: type) -> list[str]:
        return sorted(name for name in dir(cls) if not name.startswith("_"))

    one = _backends.load("connection", first).Connection
    other = _backends.load("connection", second).Connection
    assert public(one) == public(other)
