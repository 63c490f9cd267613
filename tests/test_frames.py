"""The frame codec against RFC 6455 §5, on every built backend (``frames_impl``).

The property tests at the end split random frame streams at random points: each backend must
agree with the ``websockets`` library's sans-I/O parser, and each compiled backend must agree
exactly with the pure-Python twin.
"""

from __future__ import annotations

import copy
import itertools
import pickle
import random
import tracemalloc
from collections.abc import Generator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WebsocketsProtocolError
from websockets.frames import Frame as WebsocketsFrame
from websockets.streams import StreamReader
from websockets.utils import apply_mask as reference_mask

from haske import _backends
from haske.exceptions import ProtocolError

KEY = b"\x37\xfa\x21\x3d"
OPCODES = [0, 1, 2, 8, 9, 10]
CONTROL_OPCODES = [8, 9, 10]
RESERVED_OPCODES = [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = KEY,
    width: int | None = None,
    declared: int | None = None,
) -> bytes:
    """Build a frame by hand, independently of the codec under test.

    ``width`` forces the length field (0, 2 or 8 extra bytes); ``declared`` lies about the length.
    """
    length = len(payload) if declared is None else declared
    if width is None:
        width = 0 if length < 126 else 2 if length < 65536 else 8
    head = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if key is not None else 0
    if width == 0:
        header = bytes((head, mask_bit | length))
    elif width == 2:
        header = bytes((head, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((head, mask_bit | 127)) + length.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + reference_mask(payload, key)


def fields(frame: object) -> tuple[object, ...]:
    return tuple(
        getattr(frame, name) for name in ("opcode", "payload", "fin", "rsv1", "rsv2", "rsv3")
    )


def decode(
    impl: ModuleType, data: bytes, chunk_size: int | None = None, **options: object
) -> list[Any]:
    decoder = impl.FrameDecoder(**options)
    frames = []
    step = chunk_size or max(len(data), 1)
    for start in range(0, len(data), step):
        decoder.feed(data[start : start + step])
        frames.extend(decoder)
    assert decoder.buffered == 0
    return frames


def protocol_error(impl: ModuleType, data: bytes, **options: object) -> ProtocolError:
    decoder = impl.FrameDecoder(**options)
    decoder.feed(data)
    with pytest.raises(ProtocolError) as info:
        list(decoder)
    return info.value


def test_exports_the_contract(frames_impl: ModuleType) -> None:
    """Every backend exposes the names and opcode values of docs/architecture.md."""
    opcodes = {
        "OP_CONTINUATION": 0,
        "OP_TEXT": 1,
        "OP_BINARY": 2,
        "OP_CLOSE": 8,
        "OP_PING": 9,
        "OP_PONG": 10,
    }
    assert {name: getattr(frames_impl, name) for name in opcodes} == opcodes
    for name in ("Frame", "FrameDecoder", "encode_frame", "frame_header", "apply_mask"):
        assert callable(getattr(frames_impl, name))


class TestExamples:
    """RFC 6455 §5.7: the worked examples, byte for byte."""

    HELLO = b"\x81\x05\x48\x65\x6c\x6c\x6f"
    MASKED_HELLO = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    FRAGMENTS = b"\x01\x03\x48\x65\x6c" + b"\x80\x02\x6c\x6f"
    PING = b"\x89\x05\x48\x65\x6c\x6c\x6f"
    MASKED_PONG = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"

    def test_unmasked_text(self, frames_impl: ModuleType) -> None:
        """A single-frame unmasked text message."""
        assert decode(frames_impl, self.HELLO, require_mask=False) == [
            frames_impl.Frame(1, b"Hello")
        ]
        assert frames_impl.encode_frame(frames_impl.OP_TEXT, b"Hello") == self.HELLO

    def test_masked_text(self, frames_impl: ModuleType) -> None:
        """A single-frame masked text message."""
        assert decode(frames_impl, self.MASKED_HELLO) == [frames_impl.Frame(1, b"Hello")]
        assert frames_impl.encode_frame(1, b"Hello", mask=KEY) == self.MASKED_HELLO

    def test_fragmented_unmasked_text(self, frames_impl: ModuleType) -> None:
        """A fragmented unmasked text message: "Hel" then a continuation "lo"."""
        frames = decode(frames_impl, self.FRAGMENTS, require_mask=False)
        assert [fields(f) for f in frames] == [
            (1, b"Hel", False, False, False, False),
            (0, b"lo", True, False, False, False),
        ]
        encoded = frames_impl.encode_frame(1, b"Hel", fin=False) + frames_impl.encode_frame(
            0, b"lo"
        )
        assert encoded == self.FRAGMENTS

    def test_ping_and_masked_pong(self, frames_impl: ModuleType) -> None:
        """An unmasked Ping and a masked Pong, both carrying "Hello"."""
        assert decode(frames_impl, self.PING, require_mask=False) == [
            frames_impl.Frame(9, b"Hello")
        ]
        assert decode(frames_impl, self.MASKED_PONG) == [frames_impl.Frame(10, b"Hello")]
        assert frames_impl.encode_frame(frames_impl.OP_PING, b"Hello") == self.PING

    @pytest.mark.parametrize(
        ("size", "header"),
        [(256, b"\x82\x7e\x01\x00"), (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")],
    )
    def test_extended_lengths(self, frames_impl: ModuleType, size: int, header: bytes) -> None:
        """256 bytes use the 16-bit length; 64 KiB uses the 64-bit length."""
        payload = random.Random(size).randbytes(size)
        assert frames_impl.encode_frame(2, payload) == header + payload
        assert frames_impl.frame_header(2, size) == header
        assert decode(frames_impl, header + payload, require_mask=False) == [
            frames_impl.Frame(2, payload)
        ]


class TestBaseFraming:
    """RFC 6455 §5.2: the header fields and the three length encodings."""

    @pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 3 * 1024 * 1024 + 7])
    @pytest.mark.parametrize("masked", [True, False], ids=["client", "server"])
    def test_round_trip_every_length_class(
        self, frames_impl: ModuleType, size: int, masked: bool
    ) -> None:
        """7-bit, 16-bit and 64-bit lengths, at and around each boundary."""
        payload = random.Random(size).randbytes(size)
        data = frames_impl.encode_frame(2, payload, mask=KEY if masked else None)
        assert data == raw_frame(2, payload, key=KEY if masked else None)
        assert decode(frames_impl, data, require_mask=masked) == [frames_impl.Frame(2, payload)]

    @pytest.mark.parametrize("opcode", OPCODES)
    def test_every_opcode(self, frames_impl: ModuleType, opcode: int) -> None:
        """Each defined opcode survives a round trip."""
        data = frames_impl.encode_frame(opcode, b"abc", fin=True, mask=True)
        [frame] = decode(frames_impl, data)
        assert (frame.opcode, frame.payload) == (opcode, b"abc")

    @pytest.mark.parametrize("fin", [True, False])
    @pytest.mark.parametrize("rsv", [0x00, 0x40, 0x20, 0x10, 0x70])
    def test_fin_and_allowed_rsv_bits(self, frames_impl: ModuleType, fin: bool, rsv: int) -> None:
        """FIN and any RSV bits that ``allowed_rsv`` permits are reported as sent."""
        [frame] = decode(frames_impl, raw_frame(1, b"x", fin=fin, rsv=rsv), allowed_rsv=rsv)
        assert fields(frame) == (1, b"x", fin, bool(rsv & 0x40), bool(rsv & 0x20), bool(rsv & 0x10))

    def test_rsv1_encoding(self, frames_impl: ModuleType) -> None:
        """``encode_frame(rsv1=True)`` sets bit 0x40 of the first byte."""
        assert frames_impl.encode_frame(2, b"", rsv1=True)[0] == 0xC2
        assert frames_impl.frame_header(2, 0, rsv1=True, fin=False) == b"\x42\x00"

    def test_non_minimal_length_is_accepted(self, frames_impl: ModuleType) -> None:
        """A short payload behind a 16- or 64-bit length field still decodes."""
        data = raw_frame(2, b"ab", width=2) + raw_frame(2, b"cd", width=8)
        assert [f.payload for f in decode(frames_impl, data)] == [b"ab", b"cd"]

    @pytest.mark.parametrize("opcode", RESERVED_OPCODES)
    def test_reserved_opcode(self, frames_impl: ModuleType, opcode: int) -> None:
        """Opcodes 3-7 and 11-15 are reserved: 1002."""
        error = protocol_error(frames_impl, raw_frame(opcode, b"x"))
        assert (error.code, error.reason) == (1002, f"reserved opcode {opcode:#x}")

    @pytest.mark.parametrize(
        ("rsv", "allowed"), [(0x40, 0), (0x20, 0x40), (0x10, 0x60), (0x70, 0x40)]
    )
    def test_rsv_bits_not_negotiated(self, frames_impl: ModuleType, rsv: int, allowed: int) -> None:
        """RSV bits outside ``allowed_rsv`` are 1002, naming the offending bits."""
        error = protocol_error(frames_impl, raw_frame(2, b"x", rsv=rsv), allowed_rsv=allowed)
        assert (error.code, error.reason) == (
            1002,
            f"reserved bits {rsv & ~allowed:#x} set without a negotiated extension",
        )

    def test_64_bit_length_with_top_bit_set(self, frames_impl: ModuleType) -> None:
        """The most significant bit of a 64-bit length must be 0: 1002 from the header alone."""
        header = raw_frame(2, declared=2**63, width=8)[:10]
        error = protocol_error(frames_impl, header, max_frame_size=2**64)
        assert (error.code, error.reason) == (
            1002,
            "64-bit payload length has its most significant bit set",
        )

    def test_several_frames_in_one_chunk(self, frames_impl: ModuleType) -> None:
        """Every complete frame of a chunk comes out, in order; a partial one waits."""
        frames = [raw_frame(1, b"one"), raw_frame(2, b"two" * 100), raw_frame(9, b"")]
        last = raw_frame(2, b"four" * 50)
        decoder = frames_impl.FrameDecoder()
        decoder.feed(b"".join(frames) + last[:20])
        assert [f.payload for f in decoder] == [b"one", b"two" * 100, b""]
        assert decoder.buffered == 20
        assert decoder.next_frame() is None
        decoder.feed(last[20:])
        assert decoder.next_frame() == frames_impl.Frame(2, b"four" * 50)
        assert decoder.next_frame() is None
        assert decoder.buffered == 0


STREAM_PAYLOADS = [b"", b"a", b"b" * 125, b"c" * 126, b"d" * 300, b"e" * 65536, b"f" * 70000]


class TestIncremental:
    """RFC 6455 §5.2 framing over a byte stream: frames split at any point."""

    def stream(self) -> bytes:
        return b"".join(raw_frame(2, payload) for payload in STREAM_PAYLOADS)

    def test_one_byte_at_a_time(self, frames_impl: ModuleType) -> None:
        """Feeding single bytes yields the same frames as feeding everything at once."""
        frames = decode(frames_impl, self.stream(), chunk_size=1)
        assert [f.payload for f in frames] == STREAM_PAYLOADS

    @pytest.mark.parametrize("seed", range(5))
    def test_random_splits(self, frames_impl: ModuleType, seed: int) -> None:
        """Chunks of random sizes, from one byte to many frames."""
        data = self.stream()
        rng = random.Random(seed)
        decoder = frames_impl.FrameDecoder()
        frames, position, fed = [], 0, 0
        while position < len(data):
            size = rng.choice([1, 2, 3, 7, 64, 1000, 70000, 200000])
            decoder.feed(data[position : position + size])
            fed += len(data[position : position + size])
            position += size
            frames.extend(decoder)
            returned = sum(len(raw_frame(2, f.payload)) for f in frames)
            assert decoder.buffered == fed - returned
        assert [f.payload for f in frames] == STREAM_PAYLOADS

    @pytest.mark.parametrize("seed", range(4))
    def test_large_frames_over_mixed_reads(self, frames_impl: ModuleType, seed: int) -> None:
        """Frames spanning many reads of every size and buffer type, read eagerly or lazily."""
        rng = random.Random(seed)
        payloads = [rng.randbytes(n) for n in (300_000, 5000, (1 << 20) + 1, 10, 70_000)]
        data = b"".join(raw_frame(2, p, key=rng.randbytes(4)) for p in payloads)
        decoder = frames_impl.FrameDecoder()
        frames, position = [], 0
        while position < len(data):
            size = rng.choice([1, 13, 4095, 4096, 5000, 65536, 100_000])
            chunk = data[position : position + size]
            position += size
            decoder.feed(rng.choice([bytes, bytearray, memoryview])(chunk))
            if rng.random() < 0.8:
                frames.extend(decoder)
        frames.extend(decoder)
        assert [f.payload for f in frames] == payloads
        assert decoder.buffered == 0

    def test_fed_twice_before_reading(self, frames_impl: ModuleType) -> None:
        """Several feeds in a row, then one read, lose nothing."""
        data = self.stream()
        decoder = frames_impl.FrameDecoder()
        for start in range(0, len(data), 999):
            decoder.feed(data[start : start + 999])
        assert [f.payload for f in decoder] == STREAM_PAYLOADS

    @pytest.mark.parametrize("kind", [bytearray, memoryview])
    def test_mutable_input_is_copied(self, frames_impl: ModuleType, kind: type) -> None:
        """A bytearray or memoryview may be reused by the caller right after ``feed``."""
        data = bytearray(raw_frame(1, b"hello") + raw_frame(1, b"world")[:4])
        decoder = frames_impl.FrameDecoder()
        decoder.feed(kind(data))
        data[:] = b"\x00" * len(data)
        assert [f.payload for f in decoder] == [b"hello"]
        decoder.feed(kind(bytearray(raw_frame(1, b"world")[4:])))
        assert [f.payload for f in decoder] == [b"world"]

    def test_empty_feed(self, frames_impl: ModuleType) -> None:
        """Feeding nothing changes nothing."""
        decoder = frames_impl.FrameDecoder()
        decoder.feed(b"")
        assert decoder.next_frame() is None
        assert decoder.buffered == 0

    def test_feed_rejects_text(self, frames_impl: ModuleType) -> None:
        """Only bytes-like input is accepted."""
        with pytest.raises(TypeError, match="data must be a bytes-like object, not 'str'"):
            frames_impl.FrameDecoder().feed("text")


class TestMasking:
    """RFC 6455 §5.1 and §5.3: clients mask every frame, servers never do."""

    def test_server_refuses_unmasked_client_frame(self, frames_impl: ModuleType) -> None:
        error = protocol_error(frames_impl, raw_frame(1, b"hi", key=None))
        assert (error.code, error.reason) == (1002, "client frame is not masked")

    def test_client_refuses_masked_server_frame(self, frames_impl: ModuleType) -> None:
        error = protocol_error(frames_impl, raw_frame(1, b"hi"), require_mask=False)
        assert (error.code, error.reason) == (1002, "server frame is masked")

    @pytest.mark.parametrize("offset", range(8))
    def test_unmasking_at_every_alignment(self, frames_impl: ModuleType, offset: int) -> None:
        """The key cycles correctly whatever the payload's position and length."""
        payloads = [bytes(range(n)) for n in range(1, 40)]
        data = b"\x00" * offset + b"".join(
            raw_frame(2, p, key=bytes((n, 7, 99, 250))) for n, p in enumerate(payloads)
        )
        decoder = frames_impl.FrameDecoder()
        decoder.feed(memoryview(data)[offset:])
        assert [f.payload for f in decoder] == payloads

    def test_random_mask_key(self, frames_impl: ModuleType) -> None:
        """``mask=True`` draws a fresh key per frame; the frame still decodes."""
        first = frames_impl.encode_frame(2, b"payload", mask=True)
        second = frames_impl.encode_frame(2, b"payload", mask=True)
        assert first[2:6] != second[2:6]
        assert [f.payload for f in decode(frames_impl, first + second)] == [b"payload"] * 2

    @pytest.mark.parametrize("size", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 1000, 65537])
    def test_apply_mask(self, frames_impl: ModuleType, size: int) -> None:
        """``apply_mask`` matches the XOR definition and is its own inverse."""
        data = random.Random(size).randbytes(size)
        masked = frames_impl.apply_mask(data, KEY)
        assert masked == reference_mask(data, KEY)
        assert frames_impl.apply_mask(bytearray(masked), memoryview(KEY)) == data

    def test_apply_mask_key_length(self, frames_impl: ModuleType) -> None:
        with pytest.raises(ValueError, match="mask must be 4 bytes, got 3"):
            frames_impl.apply_mask(b"data", b"abc")


class TestControlFrames:
    """RFC 6455 §5.5: control frames are short and never fragmented."""

    @pytest.mark.parametrize("opcode", CONTROL_OPCODES)
    def test_fragmented_control_frame(self, frames_impl: ModuleType, opcode: int) -> None:
        error = protocol_error(frames_impl, raw_frame(opcode, b"x", fin=False))
        assert (error.code, error.reason) == (1002, "fragmented control frame")

    @pytest.mark.parametrize("opcode", CONTROL_OPCODES)
    def test_control_payload_over_125(self, frames_impl: ModuleType, opcode: int) -> None:
        """Refused from the header, before the payload arrives."""
        error = protocol_error(frames_impl, raw_frame(opcode, b"x" * 126)[:4])
        assert (error.code, error.reason) == (1002, "control frame payload longer than 125 bytes")

    @pytest.mark.parametrize("width", [2, 8])
    def test_short_control_payload_behind_a_long_length_field(
        self, frames_impl: ModuleType, width: int
    ) -> None:
        """The limit applies to the length, however many bytes encode it."""
        data = raw_frame(9, b"ping", width=width)
        assert decode(frames_impl, data) == [frames_impl.Frame(9, b"ping")]

    def test_control_payload_of_125(self, frames_impl: ModuleType) -> None:
        assert decode(frames_impl, raw_frame(9, b"p" * 125)) == [frames_impl.Frame(9, b"p" * 125)]

    def test_control_frame_between_fragments(self, frames_impl: ModuleType) -> None:
        """§5.4: a control frame may arrive in the middle of a fragmented message."""
        data = raw_frame(1, b"Hel", fin=False) + raw_frame(9, b"ping") + raw_frame(0, b"lo")
        assert [(f.opcode, f.payload, f.fin) for f in decode(frames_impl, data, chunk_size=3)] == [
            (1, b"Hel", False),
            (9, b"ping", True),
            (0, b"lo", True),
        ]

    @pytest.mark.parametrize("opcode", CONTROL_OPCODES)
    def test_encoder_refuses_invalid_control_frames(
        self, frames_impl: ModuleType, opcode: int
    ) -> None:
        with pytest.raises(
            ValueError, match="control frame payload of 126 bytes exceeds 125 bytes"
        ):
            frames_impl.encode_frame(opcode, b"x" * 126)
        with pytest.raises(ValueError, match="control frames cannot be fragmented"):
            frames_impl.encode_frame(opcode, b"", fin=False)
        with pytest.raises(ValueError, match="control frame payload of 200 bytes"):
            frames_impl.frame_header(opcode, 200)


class TestSizeLimit:
    """RFC 6455 §10.4: a size limit, enforced before memory is committed."""

    def test_exactly_max_frame_size_is_accepted(self, frames_impl: ModuleType) -> None:
        payload = b"m" * 1000
        assert decode(frames_impl, raw_frame(2, payload), chunk_size=7, max_frame_size=1000) == [
            frames_impl.Frame(2, payload)
        ]

    def test_one_byte_over_is_1009_from_the_header(self, frames_impl: ModuleType) -> None:
        """The 4-byte header of a 1001-byte frame is enough to refuse it."""
        error = protocol_error(frames_impl, raw_frame(2, b"m" * 1001)[:4], max_frame_size=1000)
        assert (error.code, error.reason) == (
            1009,
            "frame payload of 1001 bytes exceeds max_frame_size 1000",
        )

    def test_huge_declared_length_allocates_nothing(self, frames_impl: ModuleType) -> None:
        """A 2**62-byte frame is refused from its 10 header bytes alone."""
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(2, declared=2**62, width=8)[:10])
        with pytest.raises(ProtocolError) as info:
            decoder.next_frame()
        assert info.value.code == 1009
        assert decoder.buffered == 0

    def test_declared_length_does_not_reserve_memory(self, frames_impl: ModuleType) -> None:
        """A header announcing 16 MiB with 1 KiB behind it costs kilobytes, not megabytes."""
        size = 16 * 1024 * 1024
        data = raw_frame(2, declared=size)[:14] + b"\x00" * 1024
        decoder = frames_impl.FrameDecoder(max_frame_size=size)
        tracemalloc.start()
        try:
            for start in range(0, len(data), 100):
                decoder.feed(data[start : start + 100])
                assert decoder.next_frame() is None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 1024
        assert decoder.buffered == len(data)

    def test_memory_follows_what_arrives(self, frames_impl: ModuleType) -> None:
        """Half a MiB into a frame declared as 16 MiB, memory stays near half a MiB."""
        size = 16 * 1024 * 1024
        received = 512 * 1024
        data = raw_frame(2, declared=size)[:14] + b"\x00" * received
        decoder = frames_impl.FrameDecoder(max_frame_size=size)
        tracemalloc.start()
        try:
            for start in range(0, len(data), 8192):
                decoder.feed(data[start : start + 8192])
                assert decoder.next_frame() is None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2 * received + 256 * 1024

    def test_zero_limit_allows_only_empty_frames(self, frames_impl: ModuleType) -> None:
        assert decode(frames_impl, raw_frame(9, b""), max_frame_size=0) == [frames_impl.Frame(9)]
        assert protocol_error(frames_impl, raw_frame(9, b"x"), max_frame_size=0).code == 1009


class TestFailure:
    """RFC 6455 §7.1.7: after a protocol error the connection is failed, for good."""

    def test_frames_before_the_bad_one_come_first(self, frames_impl: ModuleType) -> None:
        decoder = frames_impl.FrameDecoder()
        decoder.feed(
            raw_frame(1, b"a") + raw_frame(2, b"b") + raw_frame(3, b"bad") + raw_frame(1, b"c")
        )
        assert decoder.next_frame() == frames_impl.Frame(1, b"a")
        assert decoder.next_frame() == frames_impl.Frame(2, b"b")
        with pytest.raises(ProtocolError, match="reserved opcode 0x3"):
            decoder.next_frame()

    def test_decoder_stays_failed(self, frames_impl: ModuleType) -> None:
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(1, b"x", key=None))
        for _ in range(2):
            with pytest.raises(ProtocolError, match="client frame is not masked") as info:
                list(decoder)
            assert info.value.code == 1002
        with pytest.raises(ProtocolError, match="client frame is not masked"):
            decoder.feed(raw_frame(1, b"fine"))
        assert decoder.buffered == 0

    def test_error_from_a_partial_header_across_feeds(self, frames_impl: ModuleType) -> None:
        """The first two header bytes decide most rules, even when they arrive one at a time."""
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(1, b"ok") + b"\x0b")
        assert decoder.next_frame() == frames_impl.Frame(1, b"ok")
        assert decoder.next_frame() is None
        decoder.feed(b"\x80")
        with pytest.raises(ProtocolError, match="reserved opcode 0xb"):
            decoder.next_frame()


class TestPartial:
    """RFC 6455 §5.2 and §8.1: the payload of a frame still arriving, unmasked, as it comes."""

    def partials(self, impl: ModuleType, data: bytes, step: int, **options: object) -> list[Any]:
        decoder = impl.FrameDecoder(**options)
        seen: list[Any] = []
        for start in range(0, len(data), step):
            decoder.feed(data[start : start + step])
            seen.extend(("frame", f.payload) for f in decoder)
            seen.append(decoder.read_partial())
        return seen

    @pytest.mark.parametrize("masked", [True, False])
    def test_payload_as_it_arrives(self, frames_impl: ModuleType, masked: bool) -> None:
        """Offsets follow what was returned; the parts add up to the payload."""
        payload = bytes(range(256)) * 40
        data = raw_frame(1, payload, key=KEY if masked else None)
        seen = self.partials(frames_impl, data, 1000, require_mask=masked)
        parts = seen[:-2]
        assert len(parts) == len(data) // 1000
        joined = b""
        for opcode, offset, chunk in parts:
            assert (opcode, offset) == (1, len(joined))
            joined += chunk
        assert joined == payload[: len(data) // 1000 * 1000 - (len(data) - len(payload))]
        assert seen[-2:] == [("frame", payload), None]

    def test_the_next_frame_starts_at_offset_zero(self, frames_impl: ModuleType) -> None:
        data = raw_frame(2, b"first") + raw_frame(0, b"second", fin=False)
        decoder = frames_impl.FrameDecoder()
        decoder.feed(data[:9])
        assert decoder.read_partial() == (2, 0, b"fir")
        decoder.feed(data[9:-2])
        assert decoder.next_frame().payload == b"first"
        assert decoder.read_partial() == (0, 0, b"seco")
        assert decoder.read_partial() == (0, 4, b"")

    def test_read_before_the_frames_are_taken(self, frames_impl: ModuleType) -> None:
        """Right after ``feed``: a complete frame waiting comes first, so there is nothing."""
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(1, b"whole") + raw_frame(1, b"partial")[:-3])
        assert decoder.read_partial() is None
        assert decoder.next_frame().payload == b"whole"
        assert decoder.read_partial() == (1, 0, b"part")
        assert decoder.next_frame() is None

    def test_read_straight_after_feed(self, frames_impl: ModuleType) -> None:
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(1, b"partial")[:-3])
        assert decoder.read_partial() == (1, 0, b"part")
        decoder.feed(raw_frame(1, b"partial")[-3:])
        assert decoder.read_partial() is None
        assert decoder.next_frame().payload == b"partial"

    @pytest.mark.parametrize("cut", [0, 1, 5])
    def test_nothing_before_the_header_is_in(self, frames_impl: ModuleType, cut: int) -> None:
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(1, b"abc")[:cut])
        assert decoder.read_partial() is None

    def test_bad_header_raises_as_next_frame_does(self, frames_impl: ModuleType) -> None:
        decoder = frames_impl.FrameDecoder()
        decoder.feed(raw_frame(3, b"bad")[:4])
        with pytest.raises(ProtocolError, match="reserved opcode 0x3"):
            decoder.read_partial()
        with pytest.raises(ProtocolError, match="reserved opcode 0x3"):
            decoder.next_frame()

    def test_huge_declared_length_reserves_nothing(self, frames_impl: ModuleType) -> None:
        """Reading the part of a frame declared as 16 MiB costs what arrived, not 16 MiB."""
        size = 16 * 1024 * 1024
        data = raw_frame(1, declared=size)[:14] + b"\x00" * 4096
        decoder = frames_impl.FrameDecoder(max_frame_size=size)
        tracemalloc.start()
        try:
            for start in range(0, len(data), 100):
                decoder.feed(data[start : start + 100])
                assert decoder.next_frame() is None
                assert decoder.read_partial() is not None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 1024


class TestEncoder:
    """Serializing frames for the wire."""

    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_payload_types(self, frames_impl: ModuleType, kind: type) -> None:
        payload = b"payload" * 40
        assert frames_impl.encode_frame(2, kind(payload)) == raw_frame(2, payload, key=None)
        assert frames_impl.encode_frame(2, kind(payload), mask=KEY) == raw_frame(2, payload)

    def test_non_contiguous_memoryview(self, frames_impl: ModuleType) -> None:
        view = memoryview(b"abcdefgh")[::2]
        assert frames_impl.encode_frame(2, view) == raw_frame(2, b"aceg", key=None)

    @pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 20])
    def test_header_then_payload_equals_frame(self, frames_impl: ModuleType, size: int) -> None:
        """``frame_header`` + payload is exactly ``encode_frame`` (for writelines)."""
        payload = b"z" * size
        assert frames_impl.frame_header(2, size) + payload == frames_impl.encode_frame(2, payload)

    @pytest.mark.parametrize("opcode", [-1, 3, 7, 11, 16, 255])
    def test_invalid_opcode(self, frames_impl: ModuleType, opcode: int) -> None:
        message = f"invalid opcode {opcode}: expected one of 0, 1, 2, 8, 9, 10"
        with pytest.raises(ValueError, match=message):
            frames_impl.encode_frame(opcode, b"")
        with pytest.raises(ValueError, match=message):
            frames_impl.frame_header(opcode, 0)
        with pytest.raises(ValueError, match=message):
            frames_impl.Frame(opcode)

    @pytest.mark.parametrize(
        ("mask", "error", "message"),
        [
            (b"abc", ValueError, "mask must be 4 bytes, got 3"),
            (b"abcde", ValueError, "mask must be 4 bytes, got 5"),
            ("abcd", TypeError, "mask must be None, a bool or 4 bytes, not 'str'"),
            (1, TypeError, "mask must be None, a bool or 4 bytes, not 'int'"),
        ],
    )
    def test_bad_mask(
        self, frames_impl: ModuleType, mask: object, error: type, message: str
    ) -> None:
        with pytest.raises(error, match=message):
            frames_impl.encode_frame(2, b"x", mask=mask)

    def test_mask_false_means_unmasked(self, frames_impl: ModuleType) -> None:
        assert frames_impl.encode_frame(2, b"x", mask=False) == b"\x82\x01x"

    @pytest.mark.parametrize("payload", ["text", 5, None])
    def test_payload_must_be_bytes_like(self, frames_impl: ModuleType, payload: object) -> None:
        with pytest.raises(TypeError, match="payload must be a bytes-like object"):
            frames_impl.encode_frame(2, payload)

    @pytest.mark.parametrize("length", [-1, 2**63, 1.5, "1"])
    def test_frame_header_length(self, frames_impl: ModuleType, length: object) -> None:
        with pytest.raises(ValueError, match="length must be an int between 0 and 2\\*\\*63 - 1"):
            frames_impl.frame_header(2, length)

    def test_largest_header(self, frames_impl: ModuleType) -> None:
        assert frames_impl.frame_header(2, 2**63 - 1) == b"\x82\x7f" + b"\x7f" + b"\xff" * 7


class TestFrameValue:
    """``Frame`` is an immutable, comparable, hashable value."""

    def test_defaults_and_fields(self, frames_impl: ModuleType) -> None:
        frame = frames_impl.Frame(frames_impl.OP_BINARY)
        assert fields(frame) == (2, b"", True, False, False, False)
        frame = frames_impl.Frame(0, bytearray(b"ab"), False, True, True, True)
        assert fields(frame) == (0, b"ab", False, True, True, True)
        assert type(frame.payload) is bytes

    def test_immutable(self, frames_impl: ModuleType) -> None:
        frame = frames_impl.Frame(1, b"x")
        with pytest.raises(AttributeError):
            frame.payload = b"y"
        with pytest.raises(AttributeError):
            frame.fin = False

    def test_equality_and_hash(self, frames_impl: ModuleType) -> None:
        frame = frames_impl.Frame(1, b"x")
        assert frame == frames_impl.Frame(1, b"x")
        assert frame != frames_impl.Frame(1, b"x", fin=False)
        assert frame != frames_impl.Frame(1, b"y")
        assert frame != (1, b"x")
        assert len({frame, frames_impl.Frame(1, b"x"), frames_impl.Frame(2, b"x")}) == 2

    def test_repr(self, frames_impl: ModuleType) -> None:
        assert repr(frames_impl.Frame(1, b"hi")) == "Frame(OP_TEXT, b'hi')"
        assert (
            repr(frames_impl.Frame(0, b"x" * 65, fin=False, rsv1=True))
            == "Frame(OP_CONTINUATION, <65 bytes>, fin=False, rsv1=True)"
        )

    def test_copy_and_pickle(self, frames_impl: ModuleType) -> None:
        frame = frames_impl.Frame(10, b"pong", rsv3=True)
        assert copy.copy(frame) == frame
        assert pickle.loads(pickle.dumps(frame)) == frame

    def test_payload_must_be_bytes_like(self, frames_impl: ModuleType) -> None:
        with pytest.raises(TypeError, match="payload must be a bytes-like object, not 'str'"):
            frames_impl.Frame(1, "text")


class TestDecoderOptions:
    """Constructor arguments are checked."""

    @pytest.mark.parametrize("value", [-1, 1.0, "16"])
    def test_max_frame_size(self, frames_impl: ModuleType, value: object) -> None:
        with pytest.raises(ValueError, match="max_frame_size must be an int >= 0"):
            frames_impl.FrameDecoder(max_frame_size=value)

    @pytest.mark.parametrize("value", [0x80, 0x01, -1, "0x40"])
    def test_allowed_rsv(self, frames_impl: ModuleType, value: object) -> None:
        with pytest.raises(ValueError, match="allowed_rsv must combine"):
            frames_impl.FrameDecoder(allowed_rsv=value)


BAD_INPUTS = {
    "rsv": raw_frame(1, b"x", rsv=0x40),
    "opcode": raw_frame(5, b"x"),
    "fragmented control": raw_frame(8, b"", fin=False),
    "long control": raw_frame(10, b"x" * 200),
    "unmasked": raw_frame(1, b"x", key=None),
    "top bit": raw_frame(2, declared=2**64 - 1, width=8)[:10],
    "too big": raw_frame(2, declared=2**40, width=8)[:10],
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_twins_report_identical_errors(frames_impl: ModuleType, name: str) -> None:
    """Every backend fails with the pure-Python twin's close code and reason, byte by byte."""
    reference = _backends.load("frames", "python")
    data = raw_frame(1, b"before") + BAD_INPUTS[name]
    outcomes = []
    for impl in (reference, frames_impl):
        decoder = impl.FrameDecoder()
        for byte in range(len(data)):
            decoder.feed(data[byte : byte + 1])
            try:
                frames = [fields(f) for f in decoder]
            except ProtocolError as error:
                outcomes.append((byte, error.code, error.reason))
                break
            assert frames in ([], [(1, b"before", True, False, False, False)])
    assert len(outcomes) == 2
    assert outcomes[0] == outcomes[1]


# Property tests.

PROPERTY_MAX_FRAME_SIZE = 600
TOP_BIT_REASON = "64-bit payload length has its most significant bit set"

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Fields = tuple[object, ...]
Outcome = tuple[list[Fields], tuple[int, str] | None, list[int]]


@st.composite
def valid_frame(draw: st.DrawFn, masked: bool) -> bytes:
    """One frame that obeys §5.2 and §5.5, with any length encoding its payload fits in."""
    opcode = draw(st.sampled_from(OPCODES))
    control = opcode in CONTROL_OPCODES
    size = draw(st.integers(0, 125 if control else PROPERTY_MAX_FRAME_SIZE))
    return raw_frame(
        opcode,
        draw(st.binary(min_size=size, max_size=size)),
        fin=True if control else draw(st.booleans()),
        key=draw(st.binary(min_size=4, max_size=4)) if masked else None,
        width=0 if control else draw(st.sampled_from([0, 2, 8] if size < 126 else [2, 8])),
    )


@st.composite
def bad_frame(draw: st.DrawFn, masked: bool) -> bytes:
    """One complete frame that breaks exactly one rule."""
    key = b"\x01\x02\x03\x04" if masked else None
    defect = draw(
        st.sampled_from(
            ["rsv", "opcode", "fragmented", "long control", "masking", "top bit", "too big"]
        )
    )
    if defect == "rsv":
        return raw_frame(2, b"r", rsv=draw(st.sampled_from([0x40, 0x20, 0x10])), key=key)
    if defect == "opcode":
        return raw_frame(draw(st.sampled_from(RESERVED_OPCODES)), b"o", key=key)
    if defect == "fragmented":
        return raw_frame(draw(st.sampled_from(CONTROL_OPCODES)), b"f", fin=False, key=key)
    if defect == "long control":
        size = draw(st.integers(126, 300))
        return raw_frame(draw(st.sampled_from(CONTROL_OPCODES)), b"c" * size, key=key)
    if defect == "masking":
        return raw_frame(1, b"m", key=None if masked else b"\x05\x06\x07\x08")
    if defect == "top bit":
        return raw_frame(2, declared=draw(st.integers(2**63, 2**64 - 1)), width=8, key=key)
    size = draw(st.integers(PROPERTY_MAX_FRAME_SIZE + 1, PROPERTY_MAX_FRAME_SIZE + 50))
    return raw_frame(2, b"b" * size, key=key)


@st.composite
def frame_stream(draw: st.DrawFn) -> tuple[str, bool, bytes, list[int]]:
    """A server- or client-side stream: valid, cut short, with one bad frame, or bit-flipped."""
    masked = draw(st.booleans())
    frames = draw(st.lists(valid_frame(masked), max_size=6))
    kind = draw(st.sampled_from(["valid", "truncated", "bad frame", "flipped bits"]))
    if kind == "bad frame":
        frames.insert(draw(st.integers(0, len(frames))), draw(bad_frame(masked)))
    data = bytearray(b"".join(frames))
    if kind == "truncated" and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    if kind == "flipped bits" and data:
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    splits = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return kind, masked, bytes(data), splits


def chunks(data: bytes, splits: list[int]) -> list[bytes]:
    bounds = [0, *splits, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def run_haske(impl: ModuleType, masked: bool, data: bytes, splits: list[int]) -> Outcome:
    """Frames, the error (code, reason) if any, and ``buffered`` after each chunk."""
    decoder = impl.FrameDecoder(max_frame_size=PROPERTY_MAX_FRAME_SIZE, require_mask=masked)
    frames: list[Fields] = []
    buffered = []
    try:
        for chunk in chunks(data, splits):
            decoder.feed(chunk)
            frames.extend(fields(frame) for frame in decoder)
            buffered.append(decoder.buffered)
    except ProtocolError as error:
        return frames, (error.code, error.reason), buffered
    return frames, None, buffered


def run_websockets(masked: bool, data: bytes, splits: list[int]) -> tuple[list[Fields], int | None]:
    """Drive ``websockets.frames.Frame.parse`` the way its sans-I/O protocol does."""
    reader = StreamReader()
    frames: list[Fields] = []

    def parse_forever() -> Generator[None, None, None]:
        while True:
            frame = yield from WebsocketsFrame.parse(
                reader.read_exact, mask=masked, max_size=PROPERTY_MAX_FRAME_SIZE
            )
            frames.append(
                (
                    frame.opcode.value,
                    bytes(frame.data),
                    frame.fin,
                    frame.rsv1,
                    frame.rsv2,
                    frame.rsv3,
                )
            )

    parser = parse_forever()
    next(parser)
    try:
        for chunk in chunks(data, splits):
            reader.feed_data(chunk)
            next(parser)
    except WebsocketsProtocolError:
        return frames, 1002
    except PayloadTooBig:
        return frames, 1009
    return frames, None


@PROPERTY_SETTINGS
@given(case=frame_stream())
def test_agrees_with_websockets(
    frames_impl: ModuleType, case: tuple[str, bool, bytes, list[int]]
) -> None:
    """The same frames as ``websockets``; whatever it refuses, Haske refuses too.

    Haske applies every rule from the header, ``websockets`` some only once the payload is in,
    so on a bad frame cut short Haske may refuse while ``websockets`` still waits; never the
    other way round. When several rules are broken at once the two may name different ones,
    so close codes are compared for single defects only.
    """
    kind, masked, data, splits = case
    frames, error, _ = run_haske(frames_impl, masked, data, splits)
    expected_frames, expected_code = run_websockets(masked, data, splits)
    assert frames == expected_frames
    if error is None:
        assert expected_code is None
    elif kind == "bad frame":
        code, reason = error
        # websockets calls a length with the top bit set too big for max_size.
        assert expected_code == (1009 if reason == TOP_BIT_REASON else code)


@PROPERTY_SETTINGS
@given(case=frame_stream())
def test_one_byte_at_a_time_agrees(
    frames_impl: ModuleType, case: tuple[str, bool, bytes, list[int]]
) -> None:
    """Feeding single bytes changes neither the frames nor the error."""
    _, masked, data, splits = case
    whole = run_haske(frames_impl, masked, data, splits)
    single = run_haske(frames_impl, masked, data, list(range(1, len(data))))
    assert single[:2] == whole[:2]


COMPILED = [name for name in _backends.available("frames") if name != "python"]


@pytest.mark.parametrize("backend", COMPILED)
@PROPERTY_SETTINGS
@given(case=frame_stream())
def test_compiled_decoder_agrees_exactly(
    backend: str, case: tuple[str, bool, bytes, list[int]]
) -> None:
    """Identical frames, close code and reason, and ``buffered`` after every chunk."""
    _, masked, data, splits = case
    compiled = run_haske(_backends.load("frames", backend), masked, data, splits)
    reference = run_haske(_backends.load("frames", "python"), masked, data, splits)
    assert compiled == reference


def run_partial(impl: ModuleType, masked: bool, data: bytes, splits: list[int]) -> list[Any]:
    """What ``read_partial`` returns after each chunk, between the frames and the error."""
    decoder = impl.FrameDecoder(max_frame_size=PROPERTY_MAX_FRAME_SIZE, require_mask=masked)
    seen: list[Any] = []
    try:
        for number, chunk in enumerate(chunks(data, splits)):
            decoder.feed(chunk)
            if number % 2:
                seen.append(decoder.read_partial())
            seen.extend(fields(frame) for frame in decoder)
            seen.append(decoder.read_partial())
            seen.append(decoder.buffered)
    except ProtocolError as error:
        seen.append((error.code, error.reason))
    return seen


@pytest.mark.parametrize("backend", COMPILED)
@PROPERTY_SETTINGS
@given(case=frame_stream())
def test_compiled_read_partial_agrees_exactly(
    backend: str, case: tuple[str, bool, bytes, list[int]]
) -> None:
    """The same partial payloads, frames and errors, whether read before or after the frames."""
    _, masked, data, splits = case
    compiled = run_partial(_backends.load("frames", backend), masked, data, splits)
    assert compiled == run_partial(_backends.load("frames", "python"), masked, data, splits)


@pytest.mark.parametrize("backend", COMPILED)
@PROPERTY_SETTINGS
@given(
    opcode=st.sampled_from(OPCODES),
    payload=st.binary(max_size=300),
    fin=st.booleans(),
    rsv1=st.booleans(),
    key=st.none() | st.binary(min_size=4, max_size=4),
)
def test_compiled_encoder_agrees_exactly(
    backend: str, opcode: int, payload: bytes, fin: bool, rsv1: bool, key: bytes | None
) -> None:
    """Byte-identical frames, or the same ValueError."""
    outcomes = []
    for impl in (_backends.load("frames", backend), _backends.load("frames", "python")):
        try:
            outcomes.append(impl.encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=key))
        except ValueError as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]
