"""How a fuzz input becomes a test case, and back: shared by the targets and make_corpus.py.

The frame and connection targets read a few settings, then a list of chunk records, then the
stream the peer sends. Each record takes the next ``length`` bytes of the stream (fewer where
it runs out); what the records leave is fed last, in one piece. So a seed is a readable stream
behind a short prefix, and mutating the prefix moves the split points.

Frames input::

    flags:1  limit:2  count:1  count * (mode:1 length:2)  stream

    flags: bit 0 require_mask, bit 1 read_partial() after the last feed, bits 4-6 allowed_rsv
    mode:  bits 0-1 feed kind, bits 2-3 frames read after the feed (all, none, one, two),
           bits 4-6 repeat the chunk 2**n times, bit 7 read_partial() after the reads

Connection input::

    flags:1  message_limit:2  frame_limit:2  count:1  count * (mode:1 action:1 length:2)  stream

    flags:  bit 0 client side, bit 1 frame mode, bit 2 frame_limit applies, bit 3 the deferred
            failure waits for a fail() call (else it is failed at once)
    mode:   bits 0-1 feed kind, bit 2 take the output after the step, bits 3-5 repeat 2**n times
    action: modulo 10, 0 feeds the chunk, 1-9 an application call with it (fuzz_connection.py)

A limit below 0x8000 is the value itself; from 0x8000 on it picks from :data:`LIMITS`.
"""

from __future__ import annotations

from typing import NamedTuple

#: What a limit selector from 0x8000 on picks from.
LIMITS = (0, 1, 125, 126, 4096, 65535, 65536, 1 << 20, 2**63 - 1, 2**64)
#: Repeating a chunk (up to 128 times) makes large payloads from small inputs; this caps the
#: bytes of one case, to keep each run fast.
MAX_FED = 1 << 20
MAX_RECORDS = 15

#: Connection steps: 0 feeds the chunk, the others are application calls.
ACTIONS = 10

#: Feed kinds: the decoder keeps ``bytes`` by reference and copies the others.
BYTES, BYTEARRAY, MEMORYVIEW, STRIDED = range(4)


class Chunk(NamedTuple):
    data: bytes
    kind: int  # BYTES, BYTEARRAY, MEMORYVIEW or STRIDED
    reads: int  # frames to read after this feed: -1 all, else at most that many
    action: int = 0  # connection only: 0 feeds ``data``, else an application call (1-9)
    flush: bool = True  # connection only: take the output after this step
    partial: bool = False  # frames only: call read_partial() after the reads


class FramesCase(NamedTuple):
    require_mask: bool
    allowed_rsv: int
    max_frame_size: int
    chunks: list[Chunk]


class ConnectionCase(NamedTuple):
    client: bool
    frame_mode: bool
    max_message_size: int
    max_frame_size: int | None
    #: With ``defer_failure``, leave the failure pending until a fail() step or the end.
    fail_later: bool
    chunks: list[Chunk]


def limit(selector: int) -> int:
    """The limit a 16-bit selector stands for."""
    return LIMITS[(selector & 0x7FFF) % len(LIMITS)] if selector & 0x8000 else selector


def selector(value: int) -> int:
    """The 16-bit selector :func:`limit` maps to ``value``."""
    if value < 0x8000:
        return value
    return 0x8000 | LIMITS.index(value)


def as_fed(data: bytes, kind: int) -> bytes | bytearray | memoryview:
    """``data`` in the form a transport might hand it over."""
    if kind == BYTEARRAY:
        return bytearray(data)
    if kind == MEMORYVIEW:
        return memoryview(data)
    if kind == STRIDED:
        spread = bytearray(2 * len(data))
        spread[::2] = data
        return memoryview(bytes(spread))[::2]
    return data


def _repeated(data: bytes, exponent: int, budget: int) -> bytes:
    times = min(1 << exponent, max(1, budget // max(1, len(data))))
    return data * times


def _chunks(records: list[tuple[bytes, bytes]], exponent_shift: int) -> list[bytes]:
    """The data of each record, repeated as its mode says, within :data:`MAX_FED` in all."""
    budget = MAX_FED
    out = []
    for head, data in records:
        data = _repeated(data, (head[0] >> exponent_shift) & 7, budget)
        budget = max(0, budget - len(data))
        out.append(data)
    return out


def _split(raw: bytes, pos: int, record_size: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The records (each with its slice of the stream) and what the last one left over."""
    count = min(raw[pos] if pos < len(raw) else 0, MAX_RECORDS)
    pos += 1
    heads = []
    for _ in range(count):
        if pos + record_size > len(raw):
            break
        heads.append(raw[pos : pos + record_size])
        pos += record_size
    stream = raw[pos:]
    records = []
    for head in heads:
        length = int.from_bytes(head[-2:], "big")
        records.append((head, stream[:length]))
        stream = stream[length:]
    return records, stream


def _u16(raw: bytes, pos: int) -> int:
    return int.from_bytes(raw[pos : pos + 2].ljust(2, b"\0"), "big")


def frames_case(raw: bytes) -> FramesCase:
    flags = raw[0] if raw else 0
    records, rest = _split(raw, 3, 3)
    chunks = [
        Chunk(data, head[0] & 3, (-1, 0, 1, 2)[(head[0] >> 2) & 3], partial=bool(head[0] & 0x80))
        for (head, _), data in zip(records, _chunks(records, 4))
    ]
    chunks.append(Chunk(rest, BYTES, -1, partial=bool(flags & 2)))
    return FramesCase(bool(flags & 1), flags & 0x70, limit(_u16(raw, 1)), chunks)


def connection_case(raw: bytes) -> ConnectionCase:
    flags = raw[0] if raw else 0
    records, rest = _split(raw, 5, 4)
    chunks = [
        Chunk(data, head[0] & 3, -1, head[1] % ACTIONS, bool(head[0] & 4))
        for (head, _), data in zip(records, _chunks(records, 3))
    ]
    chunks.append(Chunk(rest, BYTES, -1))
    return ConnectionCase(
        client=bool(flags & 1),
        frame_mode=bool(flags & 2),
        max_message_size=max(1, limit(_u16(raw, 1))),
        max_frame_size=limit(_u16(raw, 3)) if flags & 4 else None,
        fail_later=bool(flags & 8),
        chunks=chunks,
    )


def pack_frames(
    stream: list[bytes],
    *,
    require_mask: bool = True,
    allowed_rsv: int = 0,
    max_frame_size: int = 65535,
    mode: int | list[int] = 0,
    partial_last: bool = False,
) -> bytes:
    """A frames input feeding each piece of ``stream`` as one chunk; ``mode`` per record or all."""
    modes = mode if isinstance(mode, list) else [mode] * (len(stream) - 1)
    flags = (1 if require_mask else 0) | (2 if partial_last else 0) | allowed_rsv
    head = bytes([flags]) + selector(max_frame_size).to_bytes(2, "big") + bytes([len(stream) - 1])
    records = b"".join(
        bytes([record_mode]) + len(piece).to_bytes(2, "big")
        for record_mode, piece in zip(modes, stream[:-1])
    )
    return head + records + b"".join(stream)


def pack_connection(
    steps: list[tuple[int, bytes]],
    *,
    client: bool = False,
    frame_mode: bool = False,
    max_message_size: int = 65535,
    max_frame_size: int | None = None,
    fail_later: bool = False,
    flush: bool = True,
) -> bytes:
    """A connection input: ``(action, data)`` steps, the last one a feed of its data.

    With ``flush`` the output is taken after every step, else only at the end.
    """
    flags = (
        (1 if client else 0)
        | (2 if frame_mode else 0)
        | (4 if max_frame_size is not None else 0)
        | (8 if fail_later else 0)
    )
    head = (
        bytes([flags])
        + selector(max_message_size).to_bytes(2, "big")
        + selector(max_frame_size or 0).to_bytes(2, "big")
        + bytes([len(steps) - 1])
    )
    records = b"".join(
        bytes([4 if flush else 0, action]) + len(data).to_bytes(2, "big")
        for action, data in steps[:-1]
    )
    return head + records + b"".join(data for _, data in steps)
