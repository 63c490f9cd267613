"""Autobahn|Testsuite fuzzing-client cases of categories 1-7, 9 and 10, with their real parameters.

Each case is what the testsuite's ``CaseX_Y_Z.onOpen`` does, written as data (frames to send,
expected events, expected close) where it can be and as a small function where it needs timers.
Categories 12 and 13 (permessage-deflate) are left out: the server declines the extension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .client import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FuzzingClient,
    State,
    repeat_to,
)
from .runner import (
    FAILED,
    INFORMATIONAL,
    NON_STRICT,
    OK,
    WRONG_CODE,
    Case,
    CaseRun,
    Event,
    ExpectedClose,
)

NORMAL_CLOSE = ExpectedClose(closed_by_me=True, codes=(CLOSE_NORMAL,), require_clean=True)
SERVER_FAILS = ExpectedClose(closed_by_me=False, codes=(CLOSE_PROTOCOL_ERROR,), require_clean=False)
SERVER_REJECTS_UTF8 = ExpectedClose(
    closed_by_me=False,
    codes=(CLOSE_INVALID_PAYLOAD,),
    require_clean=False,
    wrong_endpoint_fatal=True,
)
FAILS_IMMEDIATELY = "The connection is failed immediately."
ECHO_THEN_FAIL = (
    "Echo for first message is received, but then connection is failed immediately. "
    "A Pong is not received."
)
# How a case's frames reach the wire: all at once, one frame per write, or one octet per write.
CHOPPINGS: tuple[tuple[str, bool, int | None], ...] = (
    ("", False, None),
    (", in frame-wise chops", True, None),
    (", in octet-wise chops", False, 1),
)
# Category 9 keeps the testsuite's waits, but the harness gives up on a case after this long.
MAX_WAIT = 90.0


@dataclass(frozen=True)
class Frame:
    """One ``sendFrame`` call, with its chopping or sync point."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    chopsize: int | None = None
    sync: bool = False


@dataclass(frozen=True)
class Message:
    """One ``sendMessage`` call, optionally fragmented."""

    payload: bytes
    binary: bool = False
    fragment_size: int | None = None


@dataclass(frozen=True)
class Close:
    """``sendCloseFrame``: the client starts the closing handshake with this raw payload."""

    code: int | None = None
    reason: bytes | None = None


Step = Frame | Message | Close


def perform(client: FuzzingClient, step: Step) -> None:
    if isinstance(step, Frame):
        client.send_frame(
            step.opcode,
            step.payload,
            fin=step.fin,
            rsv=step.rsv,
            chopsize=step.chopsize,
            sync=step.sync,
        )
    elif isinstance(step, Message):
        client.send_message(step.payload, step.binary, step.fragment_size)
    else:
        client.send_close_frame(step.code, step.reason)


def message(payload: bytes, binary: bool = False) -> Event:
    return ("message", payload, binary)


def pong(payload: bytes) -> Event:
    return ("pong", payload)


def scripted(
    case_id: str,
    description: str,
    expectation: str,
    steps: Sequence[Step],
    *,
    ok: Sequence[Event],
    close: ExpectedClose,
    non_strict: Sequence[Event] | None = None,
    kill_after: float | None = None,
    close_after: float | None = None,
    suppress_close: bool = False,
    conclude: Callable[[CaseRun], None] | None = None,
) -> Case:
    """A case that sends ``steps`` at once, then lets a kill or close timer bound it."""

    def start(run: CaseRun) -> None:
        run.expected[OK] = list(ok)
        if non_strict is not None:
            run.expected[NON_STRICT] = list(non_strict)
        run.expected_close = close
        for step in steps:
            perform(run.client, step)
        if kill_after is not None:
            run.client.kill_after(kill_after)
        if close_after is not None:
            run.client.close_after(close_after)

    return Case(
        case_id,
        description,
        expectation,
        start,
        conclude=conclude,
        suppress_close=suppress_close,
    )


# -- 1 Framing ------------------------------------------------------------------------------


def framing() -> Iterator[Case]:
    sizes = [0, 125, 126, 127, 128, 65535, 65536]
    for sub, opcode, fill, kind in ((1, OP_TEXT, b"*", "text"), (2, OP_BINARY, b"\xfe", "binary")):
        binary = opcode == OP_BINARY
        for number, size in enumerate(sizes, 1):
            payload = fill * size
            yield scripted(
                f"1.{sub}.{number}",
                f"Send {kind} message with payload of length {size}.",
                f"Receive echo'ed {kind} message. Clean close with normal code.",
                [Frame(opcode, payload)],
                ok=[message(payload, binary)],
                close=NORMAL_CLOSE,
                kill_after=1 if size < 65535 else 10,
            )
        payload = fill * 65536
        yield scripted(
            f"1.{sub}.8",
            f"Send {kind} message with payload of length 65536, in chops of 997 octets.",
            f"Receive echo'ed {kind} message. Clean close with normal code.",
            [Frame(opcode, payload, chopsize=997)],
            ok=[message(payload, binary)],
            close=NORMAL_CLOSE,
            kill_after=10,
        )


# -- 2 Pings/Pongs --------------------------------------------------------------------------


def pings() -> Iterator[Case]:
    pong_back = "Pong with payload echo'ed is sent in reply to Ping. Clean close with normal code."
    for number, description, payload, chopsize in (
        (1, "Send ping without payload.", b"", None),
        (2, "Send ping with small text payload.", b"Hello, world!", None),
        (
            3,
            "Send ping with small binary (non UTF-8) payload.",
            b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff",
            None,
        ),
        (4, "Send ping with binary payload of 125 octets.", b"\xfe" * 125, None),
        (6, "Send ping with binary payload of 125 octets, in octet-wise chops.", b"\xfe" * 125, 1),
    ):
        yield scripted(
            f"2.{number}",
            description,
            pong_back,
            [Frame(OP_PING, payload, chopsize=chopsize)],
            ok=[pong(payload)],
            close=NORMAL_CLOSE,
            close_after=2 if chopsize else 1,
        )
    yield scripted(
        "2.5",
        "Send ping with binary payload of 126 octets.",
        "Connection is failed immediately (1002/Protocol Error): control payloads are <= 125.",
        [Frame(OP_PING, b"\xfe" * 126)],
        ok=[],
        close=SERVER_FAILS,
        kill_after=1,
    )
    for number, payload in ((7, b""), (8, b"unsolicited pong payload")):
        yield scripted(
            f"2.{number}",
            f"Send unsolicited pong {'with' if payload else 'without'} payload, then close.",
            "Nothing is received. Clean close with normal code.",
            [Frame(OP_PONG, payload), Close(CLOSE_NORMAL)],
            ok=[],
            close=NORMAL_CLOSE,
            close_after=1,
        )
    yield scripted(
        "2.9",
        "Send unsolicited pong with payload. Send ping with payload.",
        "Nothing in reply to own Pong, but Pong with payload echo'ed in reply to Ping.",
        [Frame(OP_PONG, b"unsolicited pong payload"), Frame(OP_PING, b"ping payload")],
        ok=[pong(b"ping payload")],
        close=NORMAL_CLOSE,
        close_after=1,
    )
    payloads = [f"payload-{i}".encode() for i in range(10)]
    for number, chopsize in ((10, None), (11, 1)):
        yield scripted(
            f"2.{number}",
            "Send 10 Pings with payload" + (", in octet-wise chops." if chopsize else "."),
            "Pongs for our Pings with all the payloads. Clean close with normal code.",
            [Frame(OP_PING, p, chopsize=chopsize) for p in payloads],
            ok=[pong(p) for p in payloads],
            close=NORMAL_CLOSE,
            close_after=3,
        )


# -- 3 Reserved Bits ------------------------------------------------------------------------


def reserved_bits() -> Iterator[Case]:
    hello = b"Hello, world!"
    yield scripted(
        "3.1",
        "Send small text message with RSV = 1.",
        FAILS_IMMEDIATELY,
        [Frame(OP_TEXT, hello, rsv=1)],
        ok=[],
        close=SERVER_FAILS,
        kill_after=1,
    )
    for number, (how, sync, chopsize) in enumerate(CHOPPINGS, 2):
        rsv = number
        yield scripted(
            f"3.{number}",
            f"Send small text message, then again with RSV = {rsv}, then send Ping{how}.",
            ECHO_THEN_FAIL,
            [
                Frame(OP_TEXT, hello, sync=sync, chopsize=chopsize),
                Frame(OP_TEXT, hello, rsv=rsv, sync=sync, chopsize=chopsize),
                Frame(OP_PING, sync=sync, chopsize=chopsize),
            ],
            ok=[message(hello)],
            non_strict=[],
            close=SERVER_FAILS,
            kill_after=1,
        )
    for number, rsv, frame in (
        (5, 5, Frame(OP_BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5)),
        (6, 6, Frame(OP_BINARY, hello, rsv=6)),
        (7, 7, Frame(OP_CLOSE, rsv=7)),
    ):
        kind = {OP_BINARY: "binary message", OP_CLOSE: "Close"}[frame.opcode]
        yield scripted(
            f"3.{number}",
            f"Send small {kind} with RSV = {rsv}.",
            FAILS_IMMEDIATELY,
            [frame],
            ok=[],
            close=SERVER_FAILS,
            kill_after=1,
        )


# -- 4 Opcodes ------------------------------------------------------------------------------


def opcodes() -> Iterator[Case]:
    hello = b"Hello, world!"
    reserved = b"reserved opcode payload"
    for sub, kind, ops in (
        (1, "non-control", (3, 4, 5, 6, 7)),
        (2, "control", (11, 12, 13, 14, 15)),
    ):
        first, second, third, fourth, fifth = ops
        yield scripted(
            f"4.{sub}.1",
            f"Send frame with reserved {kind} Opcode = {first}.",
            FAILS_IMMEDIATELY,
            [Frame(first)],
            ok=[],
            close=SERVER_FAILS,
            kill_after=1,
        )
        yield scripted(
            f"4.{sub}.2",
            f"Send frame with reserved {kind} Opcode = {second} and non-empty payload.",
            FAILS_IMMEDIATELY,
            [Frame(second, reserved)],
            ok=[],
            close=SERVER_FAILS,
            kill_after=1,
        )
        for number, opcode, payload, chopsize in (
            (3, third, b"", None),
            (4, fourth, hello, None),
            (5, fifth, hello, 1),
        ):
            yield scripted(
                f"4.{sub}.{number}",
                f"Send small text message, then frame with reserved {kind} Opcode = {opcode}"
                + (" and non-empty payload" if payload else "")
                + ", then send Ping"
                + (", in octet-wise chops." if chopsize else "."),
                ECHO_THEN_FAIL,
                [
                    Frame(OP_TEXT, hello, chopsize=chopsize),
                    Frame(opcode, payload, chopsize=chopsize),
                    Frame(OP_PING, chopsize=chopsize),
                ],
                ok=[message(hello)],
                non_strict=[],
                close=SERVER_FAILS,
                kill_after=1,
            )


# -- 5 Fragmentation ------------------------------------------------------------------------


def fragmentation() -> Iterator[Case]:
    yield from _fragmented_control()
    yield from _fragmented_text()
    yield from _nothing_to_continue()
    yield from _broken_sequences()
    yield _fragments_with_pings("5.19", sync=False)
    yield _fragments_with_pings("5.20", sync=True)


def _fragmented_control() -> Iterator[Case]:
    for number, opcode, kind in ((1, OP_PING, "Ping"), (2, OP_PONG, "Pong")):
        yield scripted(
            f"5.{number}",
            f"Send {kind} fragmented into 2 fragments.",
            "Connection is failed immediately, since control message MUST NOT be fragmented.",
            [Frame(opcode, b"fragment1", fin=False), Frame(OP_CONTINUATION, b"fragment2")],
            ok=[],
            close=SERVER_FAILS,
            kill_after=1,
        )


def _fragmented_text() -> Iterator[Case]:
    for number, (how, sync, chopsize) in enumerate(CHOPPINGS, 3):
        yield scripted(
            f"5.{number}",
            f"Send text Message fragmented into 2 fragments{how}.",
            "Message is processed and echo'ed back to us.",
            [
                Frame(OP_TEXT, b"fragment1", fin=False, sync=sync, chopsize=chopsize),
                Frame(OP_CONTINUATION, b"fragment2", sync=sync, chopsize=chopsize),
            ],
            ok=[message(b"fragment1fragment2")],
            close=NORMAL_CLOSE,
            close_after=1,
        )
    for number, (how, sync, chopsize) in enumerate(CHOPPINGS, 6):
        yield scripted(
            f"5.{number}",
            f"Send text Message fragmented into 2 fragments, one ping in-between{how}.",
            "A pong is received, then the message is echo'ed back to us.",
            [
                Frame(OP_TEXT, b"fragment1", fin=False, sync=sync, chopsize=chopsize),
                Frame(OP_PING, b"ping payload", sync=sync, chopsize=chopsize),
                Frame(OP_CONTINUATION, b"fragment2", sync=sync, chopsize=chopsize),
            ],
            ok=[pong(b"ping payload"), message(b"fragment1fragment2")],
            close=NORMAL_CLOSE,
            close_after=1,
        )


def _nothing_to_continue() -> Iterator[Case]:
    number = 9
    for fin in (True, False):
        for how, sync, chopsize in CHOPPINGS:
            yield scripted(
                f"5.{number}",
                f"Send unfragmented Text Message after Continuation Frame with FIN = "
                f"{str(fin).lower()}, where there is nothing to continue{how or ', in one chop'}.",
                "The connection is failed immediately, since there is no message to continue.",
                [
                    Frame(
                        OP_CONTINUATION,
                        b"non-continuation payload",
                        fin=fin,
                        sync=sync,
                        chopsize=chopsize,
                    ),
                    Frame(OP_TEXT, b"Hello, world!", sync=sync, chopsize=chopsize),
                ],
                ok=[],
                close=SERVER_FAILS,
                kill_after=1,
            )
            number += 1


def _broken_sequences() -> Iterator[Case]:
    yield scripted(
        "5.15",
        "Send text Message fragmented into 2 fragments, then Continuation Frame with FIN = false "
        "where there is nothing to continue, then unfragmented Text Message.",
        "The connection is failed immediately, since there is no message to continue.",
        [
            Frame(OP_TEXT, b"fragment1", fin=False),
            Frame(OP_CONTINUATION, b"fragment2"),
            Frame(OP_CONTINUATION, b"fragment3", fin=False),
            Frame(OP_TEXT, b"fragment4"),
        ],
        ok=[message(b"fragment1fragment2")],
        non_strict=[],
        close=SERVER_FAILS,
        kill_after=1,
    )
    for number, fin in ((16, False), (17, True)):
        sequence = [
            Frame(OP_CONTINUATION, b"fragment1", fin=fin),
            Frame(OP_TEXT, b"fragment2", fin=False),
            Frame(OP_CONTINUATION, b"fragment3"),
        ]
        yield scripted(
            f"5.{number}",
            f"Repeated 2x: Continuation Frame with FIN = {str(fin).lower()} (where there is "
            "nothing to continue), then text Message fragmented into 2 fragments.",
            "The connection is failed immediately, since there is no message to continue.",
            sequence * 2,
            ok=[],
            close=SERVER_FAILS,
            kill_after=1,
        )
    yield scripted(
        "5.18",
        "Send text Message fragmented into 2 fragments, with both frame opcodes set to text.",
        "The connection is failed immediately: data frames after the first must have opcode 0.",
        [Frame(OP_TEXT, b"fragment1", fin=False), Frame(OP_TEXT, b"fragment2")],
        ok=[],
        close=SERVER_FAILS,
        kill_after=1,
    )


def _fragments_with_pings(case_id: str, *, sync: bool) -> Case:
    fragments = [f"fragment{i}".encode() for i in range(1, 6)]
    pings = [b"pongme 1!", b"pongme 2!"]

    def start(run: CaseRun) -> None:
        run.expected[OK] = [pong(pings[0]), pong(pings[1]), message(b"".join(fragments))]
        run.expected_close = NORMAL_CLOSE
        client = run.client
        client.send_frame(OP_TEXT, fragments[0], fin=False, sync=sync)
        client.send_frame(OP_CONTINUATION, fragments[1], fin=False, sync=sync)
        client.send_frame(OP_PING, pings[0], sync=sync)
        client.continue_later(1, lambda: part2(client))

    def part2(client: FuzzingClient) -> None:
        client.send_frame(OP_CONTINUATION, fragments[2], fin=False, sync=sync)
        client.send_frame(OP_CONTINUATION, fragments[3], fin=False, sync=sync)
        client.send_frame(OP_PING, pings[1], sync=sync)
        client.send_frame(OP_CONTINUATION, fragments[4], sync=sync)
        client.close_after(1)

    return Case(
        case_id,
        "A fragmented text message is sent in 5 frames; a Ping after the 2nd, then 1 s wait, "
        "2 more fragments, another Ping and the final fragment"
        + (", all with SYNC = True." if sync else "."),
        "The peer answers each Ping at once and echoes the whole message.",
        start,
    )


# -- 6 UTF-8 Handling -----------------------------------------------------------------------

HELLO_UTF8 = "Hello-µ@ßöäüàá-UTF-8!!".encode()
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
INVALID_AT_12 = KOSME + b"\xed\xa0\x80" + b"edited"
FAIL_FAST_PAYLOAD = KOSME + b"\xf4\x90\x80\x80" + b"edited"


def is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _valid_utf8(case_id: str, description: str, payload: bytes, steps: Sequence[Step]) -> Case:
    return scripted(
        case_id,
        f"Send a valid UTF-8 text message {description}.",
        "The message is echo'ed back to us.",
        steps,
        ok=[message(payload)],
        close=NORMAL_CLOSE,
        close_after=1,
    )


def utf8_handling() -> Iterator[Case]:
    yield scripted(
        "6.1.1",
        "Send text message of length 0.",
        "A message is echo'ed back to us (with empty payload).",
        [Frame(OP_TEXT)],
        ok=[message(b"")],
        close=NORMAL_CLOSE,
        close_after=1,
    )
    for number, middle in ((2, b""), (3, b"middle frame payload")):
        yield scripted(
            f"6.1.{number}",
            "Send fragmented text message, 3 fragments, "
            + ("each of length 0." if not middle else "first and last of length 0."),
            "A message is echo'ed back to us.",
            [
                Frame(OP_TEXT, fin=False),
                Frame(OP_CONTINUATION, middle, fin=False),
                Frame(OP_CONTINUATION),
            ],
            ok=[message(middle)],
            close=NORMAL_CLOSE,
            close_after=1,
        )
    split = len("Hello-µ@ßöä".encode())
    for number, description, steps, payload in (
        (1, "in one fragment", [Message(HELLO_UTF8)], HELLO_UTF8),
        (
            2,
            "in two fragments, split on a code point boundary",
            [
                Frame(OP_TEXT, HELLO_UTF8[:split], fin=False),
                Frame(OP_CONTINUATION, HELLO_UTF8[split:]),
            ],
            HELLO_UTF8,
        ),
        (3, "in fragments of 1 octet", [Message(HELLO_UTF8, fragment_size=1)], HELLO_UTF8),
        (4, "in fragments of 1 octet", [Message(KOSME, fragment_size=1)], KOSME),
    ):
        yield _valid_utf8(f"6.2.{number}", description, payload, steps)
    for number, steps in (
        (1, [Message(INVALID_AT_12)]),
        (2, [Message(INVALID_AT_12, fragment_size=1)]),
    ):
        yield scripted(
            f"6.3.{number}",
            "Send invalid UTF-8 text message "
            + ("unfragmented." if number == 1 else "in fragments of 1 octet."),
            "The connection is failed immediately, since the payload is not valid UTF-8.",
            steps,
            ok=[],
            close=SERVER_REJECTS_UTF8,
            kill_after=1,
        )
    parts_at_code_point = (KOSME, b"\xf4\x90\x80\x80", b"edited")
    parts_at_octet = (FAIL_FAST_PAYLOAD[:12], FAIL_FAST_PAYLOAD[12:13], FAIL_FAST_PAYLOAD[13:])
    yield _fail_fast("6.4.1", "in 3 frames", parts_at_code_point, one_frame=False)
    yield _fail_fast(
        "6.4.2", "in 3 frames, split at the invalid octet", parts_at_octet, one_frame=False
    )
    yield _fail_fast("6.4.3", "in 3 chops of one frame", parts_at_code_point, one_frame=True)
    yield _fail_fast(
        "6.4.4",
        "in 3 chops of one frame, split at the invalid octet",
        parts_at_octet,
        one_frame=True,
    )
    for group, (title, sequences) in enumerate(utf8_test_sequences(), 5):
        for number, (valid, payload) in enumerate(sequences, 1):
            yield _single_utf8_message(f"6.{group}.{number}", title, valid, payload)


def _fail_fast(
    case_id: str, how: str, parts: tuple[bytes, bytes, bytes], *, one_frame: bool
) -> Case:
    """6.4.x: the server must fail at the invalid part, before the last part is sent."""

    def start(run: CaseRun) -> None:
        run.expected[OK] = [("timeout", "A")]
        run.expected[NON_STRICT] = [("timeout", "A"), ("timeout", "B")]
        run.expected_close = SERVER_REJECTS_UTF8
        client = run.client
        if one_frame:
            client.begin_message_frame(OP_TEXT, sum(map(len, parts)))
            client.send_message_frame_data(parts[0])
        else:
            client.send_frame(OP_TEXT, parts[0], fin=False)
        client.continue_later(1, lambda: part2(run))

    def part2(run: CaseRun) -> None:
        if run.client.state is State.OPEN:
            run.received.append(("timeout", "A"))
            if one_frame:
                run.client.send_message_frame_data(parts[1])
            else:
                run.client.send_frame(OP_CONTINUATION, parts[1], fin=False)
            run.client.continue_later(1, lambda: part3(run))

    def part3(run: CaseRun) -> None:
        if run.client.state is State.OPEN:
            run.received.append(("timeout", "B"))
            if one_frame:
                run.client.send_message_frame_data(parts[2])
                run.client.send_frame(OP_CONTINUATION)
            else:
                run.client.send_frame(OP_CONTINUATION, parts[2])
            run.client.kill_after(1)

    return Case(
        case_id,
        f"Send invalid UTF-8 text message {how}, waiting 1 s after each part: "
        + " | ".join(part.hex() for part in parts),
        "The 2nd part is rejected at once (fail fast on UTF-8); failing only after the "
        "3rd part is NON-STRICT.",
        start,
    )


def _single_utf8_message(case_id: str, title: str, valid: bool, payload: bytes) -> Case:
    return scripted(
        case_id,
        f"{title}: send a text message with payload 0x{payload.hex()} "
        f"({'valid' if valid else 'not valid'} UTF-8) in one fragment.",
        "The message is echo'ed back to us."
        if valid
        else "The connection is failed immediately, since the payload is not valid UTF-8.",
        [Message(payload)],
        ok=[message(payload)] if valid else [],
        close=NORMAL_CLOSE if valid else SERVER_REJECTS_UTF8,
        kill_after=0.5,
    )


def utf8_test_sequences() -> list[tuple[str, list[tuple[bool, bytes]]]]:
    """The testsuite's ``createUtf8TestSequences`` (from Markus Kuhn's UTF-8 decoder test)."""
    groups: list[tuple[str, list[tuple[bool, bytes]]]] = []
    groups.append(
        (
            "Some valid UTF-8 sequences",
            [
                (True, b"hello\x24world"),
                (True, b"hello\xc2\xa2world"),
                (True, b"hello\xe2\x82\xacworld"),
                (True, b"hello\xf0\xa4\xad\xa2world"),
                (True, KOSME),
            ],
        )
    )
    groups.append(
        (
            "All prefixes of a valid UTF-8 string that contains multi-byte code points",
            [(is_valid_utf8(KOSME[:i]), KOSME[:i]) for i in range(1, len(KOSME) + 1)],
        )
    )
    groups.append(
        (
            "First possible sequence of a certain length",
            [
                (True, b"\x00"),
                (True, b"\xc2\x80"),
                (True, b"\xe0\xa0\x80"),
                (True, b"\xf0\x90\x80\x80"),
            ],
        )
    )
    groups.append(
        (
            "First possible sequence length 5/6 (invalid codepoints)",
            [
                (False, b"\xf8\x88\x80\x80\x80"),
                (False, b"\xfc\x84\x80\x80\x80\x80"),
            ],
        )
    )
    groups.append(
        (
            "Last possible sequence of a certain length",
            [
                (True, b"\x7f"),
                (True, b"\xdf\xbf"),
                (True, b"\xef\xbf\xbf"),
                (True, b"\xf4\x8f\xbf\xbf"),
            ],
        )
    )
    groups.append(
        (
            "Last possible sequence length 4/5/6 (invalid codepoints)",
            [
                (False, b"\xf7\xbf\xbf\xbf"),
                (False, b"\xfb\xbf\xbf\xbf\xbf"),
                (False, b"\xfd\xbf\xbf\xbf\xbf\xbf"),
            ],
        )
    )
    groups.append(
        (
            "Other boundary conditions",
            [
                (True, b"\xed\x9f\xbf"),
                (True, b"\xee\x80\x80"),
                (True, b"\xef\xbf\xbd"),
                (True, b"\xf4\x8f\xbf\xbf"),
                (False, b"\xf4\x90\x80\x80"),
            ],
        )
    )
    groups.append(
        (
            "Unexpected continuation bytes",
            [
                (False, b"\x80"),
                (False, b"\xbf"),
                (False, b"\x80\xbf"),
                (False, b"\x80\xbf\x80"),
                (False, b"\x80\xbf\x80\xbf"),
                (False, b"\x80\xbf\x80\xbf\x80"),
                (False, b"\x80\xbf\x80\xbf\x80\xbf"),
                (False, bytes(range(0x80, 0xBF))),
            ],
        )
    )
    # Each start byte followed by a space; the upper bounds are exclusive, as in the testsuite.
    starts = [(0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD)]
    groups.append(
        (
            "Lonely start characters",
            [(False, b"".join(bytes([i, 0x20]) for i in range(low, high))) for low, high in starts],
        )
    )
    truncated = [
        b"\xc0",
        b"\xe0\x80",
        b"\xf0\x80\x80",
        b"\xf8\x80\x80\x80",
        b"\xfc\x80\x80\x80\x80",
        b"\xdf",
        b"\xef\xbf",
        b"\xf7\xbf\xbf",
        b"\xfb\xbf\xbf\xbf",
        b"\xfd\xbf\xbf\xbf\xbf",
    ]
    groups.append(
        ("Sequences with last continuation byte missing", [(False, t) for t in truncated])
    )
    groups.append(("Concatenation of incomplete sequences", [(False, b"".join(truncated))]))
    groups.append(
        (
            "Impossible bytes",
            [
                (False, b"\xfe"),
                (False, b"\xff"),
                (False, b"\xfe\xfe\xff\xff"),
            ],
        )
    )
    groups.append(
        (
            "Examples of an overlong ASCII character",
            [
                (False, b"\xc0\xaf"),
                (False, b"\xe0\x80\xaf"),
                (False, b"\xf0\x80\x80\xaf"),
                (False, b"\xf8\x80\x80\x80\xaf"),
                (False, b"\xfc\x80\x80\x80\x80\xaf"),
            ],
        )
    )
    groups.append(
        (
            "Maximum overlong sequences",
            [
                (False, b"\xc1\xbf"),
                (False, b"\xe0\x9f\xbf"),
                (False, b"\xf0\x8f\xbf\xbf"),
                (False, b"\xf8\x87\xbf\xbf\xbf"),
                (False, b"\xfc\x83\xbf\xbf\xbf\xbf"),
            ],
        )
    )
    groups.append(
        (
            "Overlong representation of the NUL character",
            [
                (False, b"\xc0\x80"),
                (False, b"\xe0\x80\x80"),
                (False, b"\xf0\x80\x80\x80"),
                (False, b"\xf8\x80\x80\x80\x80"),
                (False, b"\xfc\x80\x80\x80\x80\x80"),
            ],
        )
    )
    surrogates = [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf"]
    groups.append(
        (
            "Single UTF-16 surrogates",
            [(False, s) for s in [*surrogates, b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf"]],
        )
    )
    groups.append(
        (
            "Paired UTF-16 surrogates",
            [
                (False, high + low)
                for high in surrogates
                for low in (b"\xed\xb0\x80", b"\xed\xbf\xbf")
            ],
        )
    )
    noncharacters = [b"\xef\xbf\xbe", b"\xef\xbf\xbf"]
    for lead in b"\xf0\xf1\xf2\xf3\xf4":
        # F4 only with 8F: the others encode code points above U+10FFFF.
        for second in b"\x8f\x9f\xaf\xbf" if lead != 0xF4 else b"\x8f":
            for last in b"\xbe\xbf":
                candidate = bytes([lead, second, 0xBF, last])
                if candidate not in (b"\xf0\x8f\xbf\xbe", b"\xf0\x8f\xbf\xbf"):  # overlong
                    noncharacters.append(candidate)
    groups.append(("Non-character code points (valid UTF-8)", [(True, n) for n in noncharacters]))
    groups.append(
        (
            "Unicode specials (i.e. replacement char)",
            [(True, bytes([0xEF, 0xBF, last])) for last in range(0xB9, 0xC0)],
        )
    )
    return groups


# -- 7 Close Handling -----------------------------------------------------------------------


def wrong_code_fails(run: CaseRun) -> None:
    """Category 7 turns a wrong close code into a failed case."""
    if run.behavior_close == WRONG_CODE:
        run.behavior = FAILED
        run.result = run.result_close


def informational(run: CaseRun) -> None:
    run.behavior = INFORMATIONAL
    run.behavior_close = INFORMATIONAL
    run.result = "Actual events are undefined by the spec."


def close_handling() -> Iterator[Case]:
    yield from _basic_close()
    yield from _close_payloads()
    yield from _close_codes()


def _basic_close() -> Iterator[Case]:
    hello = b"Hello World!"
    yield scripted(
        "7.1.1",
        "Send a message followed by a close frame.",
        "Echoed message followed by clean close with normal code.",
        [Frame(OP_TEXT, hello)],
        ok=[message(hello)],
        close=NORMAL_CLOSE,
        kill_after=1,
        conclude=wrong_code_fails,
    )
    after_close: list[tuple[int, str, str, list[Step]]] = [
        (
            2,
            "Send two close frames.",
            "Clean close with normal code. Second close ignored.",
            [Close(CLOSE_NORMAL), Frame(OP_CLOSE)],
        ),
        (
            3,
            "Send a ping after close message.",
            "Clean close with normal code, no pong.",
            [Close(CLOSE_NORMAL), Frame(OP_PING)],
        ),
        (
            4,
            "Send text message after sending a close frame.",
            "Clean close with normal code. Text message ignored.",
            [Close(CLOSE_NORMAL), Frame(OP_TEXT, hello)],
        ),
        (
            5,
            "Send message fragment1 followed by close then fragment.",
            "Clean close with normal code.",
            [
                Frame(OP_TEXT, b"fragment1", fin=False),
                Close(CLOSE_NORMAL),
                Frame(OP_CONTINUATION, b"fragment2"),
            ],
        ),
    ]
    for number, description, expectation, steps in after_close:
        yield scripted(
            f"7.1.{number}",
            description,
            expectation,
            steps,
            ok=[],
            close=NORMAL_CLOSE,
            kill_after=1,
            suppress_close=True,
            conclude=wrong_code_fails,
        )
    yield scripted(
        "7.1.6",
        "Send 256K message followed by close then a ping.",
        "Informational: depends on whether the close overtakes the echo of the big message.",
        [
            Frame(OP_TEXT, repeat_to(b"BAsd7&jh23", 256 * 2**10)),
            Frame(OP_TEXT, hello),
            Close(CLOSE_NORMAL),
            Frame(OP_PING),
        ],
        ok=[message(hello)],
        non_strict=[],
        close=NORMAL_CLOSE,
        kill_after=1,
        suppress_close=True,
        conclude=_processing_order,
    )


def _processing_order(run: CaseRun) -> None:
    if run.behavior == OK:
        run.result = "Text message was processed before close."
    elif run.behavior == NON_STRICT:
        run.result = "Close was processed before text message could be returned."
    run.behavior = INFORMATIONAL
    run.behavior_close = INFORMATIONAL


TOO_LONG_REASON = (
    "Send a close frame with close code and close reason which is too long (124) - "
    "total frame payload 126 octets."
)


def _close_payloads() -> Iterator[Case]:
    normal = "Clean close with normal code."
    protocol_error = ExpectedClose(True, (CLOSE_PROTOCOL_ERROR,), False)
    for number, description, expectation, close_step, close in (
        (
            1,
            "Send a close frame with payload length 0 (no close code, no close reason).",
            normal,
            Close(),
            NORMAL_CLOSE,
        ),
        (
            2,
            "Send a close frame with payload length 1.",
            "Clean close with protocol error or drop TCP.",
            Close(reason=b"a"),
            protocol_error,
        ),
        (
            3,
            "Send a close frame with payload length 2 (regular close with a code).",
            normal,
            Close(CLOSE_NORMAL),
            NORMAL_CLOSE,
        ),
        (
            4,
            "Send a close frame with close code and close reason.",
            normal,
            Close(CLOSE_NORMAL, b"Hello World!"),
            NORMAL_CLOSE,
        ),
        (
            5,
            "Send a close frame with close code and close reason of maximum length (123).",
            normal,
            Close(CLOSE_NORMAL, b"*" * 123),
            NORMAL_CLOSE,
        ),
        (
            6,
            TOO_LONG_REASON,
            "Clean close with protocol error code or dropped TCP connection.",
            Close(CLOSE_NORMAL, b"*" * 124),
            protocol_error,
        ),
    ):
        yield scripted(
            f"7.3.{number}",
            description,
            expectation,
            [close_step],
            ok=[],
            close=close,
            kill_after=1,
            suppress_close=True,
            conclude=wrong_code_fails,
        )
    yield scripted(
        "7.5.1",
        "Send a close frame with invalid UTF8 payload.",
        "Clean close with protocol error or invalid utf8 code or dropped TCP.",
        [Close(CLOSE_NORMAL, INVALID_AT_12)],
        ok=[],
        close=ExpectedClose(True, (CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_PAYLOAD), False),
        kill_after=1,
        suppress_close=True,
        conclude=wrong_code_fails,
    )


def _close_codes() -> Iterator[Case]:
    valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
    for number, code in enumerate(valid, 1):
        yield scripted(
            f"7.7.{number}",
            f"Send close with valid close code {code}.",
            "Clean close with normal or echoed code.",
            [Close(code)],
            ok=[],
            close=ExpectedClose(True, (CLOSE_NORMAL, code), True),
            kill_after=1,
            conclude=wrong_code_fails,
        )
    invalid = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999]
    for number, code in enumerate(invalid, 1):
        yield scripted(
            f"7.9.{number}",
            f"Send close with invalid close code {code}.",
            "Clean close with protocol error code or drop TCP.",
            [Close(code)],
            ok=[],
            close=ExpectedClose(True, (CLOSE_PROTOCOL_ERROR,), False),
            kill_after=1,
            conclude=wrong_code_fails,
        )
    for number, code in ((1, 5000), (2, 65535)):
        yield scripted(
            f"7.13.{number}",
            f"Send close with close code {code}.",
            "Actual events are undefined by the spec.",
            [Close(code)],
            ok=[],
            close=ExpectedClose(True, (CLOSE_NORMAL, code, CLOSE_PROTOCOL_ERROR), False),
            kill_after=1,
            suppress_close=True,
            conclude=informational,
        )


# -- 9 Limits/Performance -------------------------------------------------------------------

TEXT_FILL = b"BAsd7&jh23"
BINARY_FILL = b"\x00\xfe\x23\xfa\xf0"


def limits() -> Iterator[Case]:
    sizes = [64 * 2**10, 256 * 2**10, 2**20, 4 * 2**20, 8 * 2**20, 16 * 2**20]
    text_waits = [10, 10, 100, 100, 100, 100]
    binary_waits = [10, 10, 10, 10, 100, 100]
    for number, (size, wait) in enumerate(zip(sizes, text_waits), 1):
        yield _large_echo(f"9.1.{number}", False, repeat_to(TEXT_FILL, size), wait)
    for number, (size, wait) in enumerate(zip(sizes, binary_waits), 1):
        yield _large_echo(f"9.2.{number}", True, repeat_to(BINARY_FILL, size), wait)
    fragment_sizes = [
        64,
        256,
        2**10,
        4 * 2**10,
        16 * 2**10,
        64 * 2**10,
        256 * 2**10,
        2**20,
        4 * 2**20,
    ]
    for sub, binary in ((3, False), (4, True)):
        for number, fragment_size in enumerate(fragment_sizes, 1):
            # The testsuite fills 9.4.1 with 0xFE and the other 9.4.x with "*".
            fill = b"\xfe" if binary and number == 1 else b"*"
            yield _large_echo(
                f"9.{sub}.{number}", binary, fill * 4 * 2**20, 100, fragment_size=fragment_size
            )
    for sub, binary, fill in ((5, False, TEXT_FILL), (6, True, BINARY_FILL)):
        for number, chopsize in enumerate([64, 128, 256, 512, 1024, 2048], 1):
            yield _large_echo(
                f"9.{sub}.{number}", binary, repeat_to(fill, 2**20), 1000, chopsize=chopsize
            )
    round_trips = [(0, 60), (16, 60), (64, 60), (256, 120), (1024, 240), (4096, 480)]
    for sub, binary in ((7, False), (8, True)):
        for number, (size, wait) in enumerate(round_trips, 1):
            yield _round_trips(f"9.{sub}.{number}", binary, size, 1000, wait)


def _large_echo(
    case_id: str,
    binary: bool,
    payload: bytes,
    wait: float,
    *,
    fragment_size: int | None = None,
    chopsize: int | None = None,
) -> Case:
    kind = "binary" if binary else "text"
    how = (
        f" in fragments of {fragment_size}"
        if fragment_size
        else f" in chops of {chopsize} octets"
        if chopsize
        else ""
    )

    def start(run: CaseRun) -> None:
        run.behavior = FAILED
        run.result = f"Did not receive message within {wait:g} seconds."
        run.expected_close = NORMAL_CLOSE
        if fragment_size is not None:
            run.client.send_message(payload, binary, fragment_size)
        else:
            run.client.send_frame(OP_BINARY if binary else OP_TEXT, payload, chopsize=chopsize)
        run.client.close_after(wait)

    def on_message(run: CaseRun, received: bytes, is_binary: bool) -> None:
        if is_binary != binary:
            run.result = f"Expected {kind} message, but got {'binary' if is_binary else 'text'}."
        elif len(received) != len(payload):
            run.result = (
                f"Expected {kind} message with payload of length {len(payload)}, "
                f"but got {len(received)}."
            )
        elif received != payload:
            # Stricter than the testsuite, which only compares lengths.
            run.result = f"Echoed {kind} message has the right length but different content."
        else:
            run.behavior = OK
            run.result = f"Received {kind} message of length {len(received)}."
        run.client.send_close(CLOSE_NORMAL)

    return Case(
        case_id,
        f"Send {kind} message with payload of length {len(payload)}{how}.",
        f"Receive echo'ed {kind} message (with payload as sent) within {wait:g} s.",
        start,
        on_message=on_message,
        deadline=min(wait, MAX_WAIT) + 5,
        slow=True,
    )


def _round_trips(case_id: str, binary: bool, size: int, count: int, wait: float) -> Case:
    kind = "binary" if binary else "text"

    def send_one(run: CaseRun) -> None:
        if binary:
            run.client.send_frame(OP_BINARY, b"\xfe", payload_len=size)
        else:
            run.client.send_frame(OP_TEXT, b"*", payload_len=size)
        run.count += 1

    def start(run: CaseRun) -> None:
        run.behavior = FAILED
        run.result = f"Case did not finish within {wait:g} seconds."
        run.expected_close = NORMAL_CLOSE
        run.client.close_after(wait)
        send_one(run)

    def on_message(run: CaseRun, received: bytes, is_binary: bool) -> None:
        if is_binary != binary or len(received) != size:
            run.behavior = FAILED
            run.result = (
                "Echo'ed message type or length differs from what I sent "
                f"(got binary = {is_binary}, payload length = {len(received)})."
            )
            run.client.send_close(CLOSE_NORMAL)
        elif run.count < count:
            send_one(run)
        else:
            run.behavior = OK
            run.result = "Ok, received all echo'ed messages in time."
            run.client.send_close(CLOSE_NORMAL)

    return Case(
        case_id,
        f"Send {count} {kind} messages of payload size {size}, one after another's echo.",
        f"Receive echo'ed {kind} messages (with payload as sent) within {wait:g} s.",
        start,
        on_message=on_message,
        deadline=min(wait, MAX_WAIT) + 5,
        slow=True,
    )


# -- 10 Misc --------------------------------------------------------------------------------

AUTO_FRAGMENT_SIZE = 1300


def misc() -> Iterator[Case]:
    payload = b"*" * 65536

    def start(run: CaseRun) -> None:
        run.expected[OK] = [message(payload)]
        run.expected_close = NORMAL_CLOSE
        run.client.send_message(payload, False, AUTO_FRAGMENT_SIZE)
        run.client.kill_after(10)

    def conclude(run: CaseRun) -> None:
        expected = {0: len(payload) // AUTO_FRAGMENT_SIZE, 1: 1}
        sent = {0: run.client.tx_frame_stats[0], 1: run.client.tx_frame_stats[1]}
        if run.client.connection_was_open and sent != expected:
            run.behavior = FAILED
            run.result = f"Frames transmitted {sent} does not match what we expected {expected}."

    yield Case(
        "10.1.1",
        f"Send text message with payload of length 65536 auto-fragmented with "
        f"autoFragmentSize = {AUTO_FRAGMENT_SIZE}.",
        "Receive echo'ed text message. Clean close with normal code.",
        start,
        conclude=conclude,
    )


CATEGORIES: dict[int, tuple[str, Callable[[], Iterator[Case]]]] = {
    1: ("Framing", framing),
    2: ("Pings/Pongs", pings),
    3: ("Reserved Bits", reserved_bits),
    4: ("Opcodes", opcodes),
    5: ("Fragmentation", fragmentation),
    6: ("UTF-8 Handling", utf8_handling),
    7: ("Close Handling", close_handling),
    9: ("Limits/Performance", limits),
    10: ("Misc", misc),
}

CASES: list[Case] = sorted(
    (case for _, build in CATEGORIES.values() for case in build()),
    key=lambda case: case.sort_key,
)
