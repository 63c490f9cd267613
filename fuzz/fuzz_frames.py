"""Fuzz the frame decoder: both twins, fed the same chunks, must do exactly the same thing.

Usage: python fuzz/fuzz_frames.py [libFuzzer options] [corpus dir...]

Checked on every input: only ``ProtocolError`` with code 1002 or 1009 escapes; the twins return
the same frames, hold the same number of bytes and fail with the same code and reason; no payload
exceeds ``max_frame_size``; a failed decoder stays failed; every frame re-encodes the same on both
twins and decodes back to itself (the first few distinct frames of each input).

Where the input calls ``read_partial()`` between feeds, the twins also return the same partial
reads; each read starts where the previous ones ended, takes no byte out of the decoder, and the
reads of a frame are the start of its payload once it completes; and the decoder returns the
same frames and fails with the same error as one that is never asked.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import common
import formats

with common.instrumented():
    from haske.exceptions import ProtocolError

    BACKENDS = common.backends("frames")

REFERENCE = "python"
KEY = b"\x37\xfa\x21\x3d"
#: Distinct frames re-encoded per input: enough to cover the encoder, cheap on long streams.
REENCODED = 8


class Run:
    """One decoder driven through a case, recording every observable outcome."""

    def __init__(self, frames: ModuleType, case: formats.FramesCase) -> None:
        self.decoder = frames.FrameDecoder(
            max_frame_size=case.max_frame_size,
            require_mask=case.require_mask,
            allowed_rsv=case.allowed_rsv,
        )
        self.limit = case.max_frame_size
        self.log: list[Any] = []
        self.error: tuple[int, str] | None = None
        # The frame in progress as read_partial() returned it: opcode and payload so far.
        self.partial_opcode: int | None = None
        self.partial_payload = bytearray()

    def step(self, chunk: formats.Chunk, *, partial: bool) -> None:
        try:
            self.decoder.feed(formats.as_fed(chunk.data, chunk.kind))
            self.log.append(("buffered", self.decoder.buffered))
            if chunk.reads < 0:
                for frame in self.decoder:
                    self.take(frame)
            else:
                for _ in range(chunk.reads):
                    frame = self.decoder.next_frame()
                    if frame is None:
                        break
                    self.take(frame)
            self.log.append(("buffered", self.decoder.buffered))
            if partial and chunk.partial:
                self.read_partial()
        except ProtocolError as exc:
            assert exc.code in (1002, 1009), f"ProtocolError with code {exc.code}"
            self.error = (exc.code, exc.reason)
            self.log.append(("error", exc.code, exc.reason))
            self.check_stays_failed()

    def take(self, frame: Any) -> None:
        assert len(frame.payload) <= self.limit, (
            f"{len(frame.payload)}-byte payload over {self.limit}"
        )
        if self.partial_opcode is not None:
            assert frame.opcode == self.partial_opcode, "read_partial() gave another opcode"
            assert frame.payload.startswith(self.partial_payload), (
                "the partial reads are not the start of the frame's payload"
            )
            self.partial_opcode = None
            self.partial_payload.clear()
        self.log.append(common.frame_key(frame))

    def read_partial(self) -> None:
        buffered = self.decoder.buffered
        partial = self.decoder.read_partial()
        assert self.decoder.buffered == buffered, "read_partial() changed buffered"
        self.log.append(("partial", partial))
        if partial is None:
            return
        opcode, offset, data = partial
        assert buffered > 0, "a partial frame with nothing buffered"
        if self.partial_opcode is not None:
            assert opcode == self.partial_opcode, "read_partial() changed opcode mid-frame"
        assert offset == len(self.partial_payload), (
            f"read_partial() offset {offset} after {len(self.partial_payload)} bytes read"
        )
        self.partial_opcode = opcode
        self.partial_payload += data
        # Short of its whole payload, which max_frame_size bounds.
        assert len(self.partial_payload) < self.limit, (
            f"{len(self.partial_payload)} bytes of a partial frame, max_frame_size {self.limit}"
        )

    def check_stays_failed(self) -> None:
        calls = (lambda: self.decoder.feed(b"\x81\x80"), self.decoder.next_frame)
        for call in (*calls, self.decoder.read_partial):
            try:
                call()
            except ProtocolError as exc:
                assert (exc.code, exc.reason) == self.error, "a later call failed differently"
            else:
                raise AssertionError("a failed decoder accepted a later call")
        assert self.decoder.buffered == 0, "a failed decoder still holds bytes"


def check_reencoding(frame: tuple[int, bytes, bool, bool, bool, bool]) -> None:
    """Encoding a decoded data frame is the same on both twins and decodes back to it."""
    opcode, payload, fin, rsv1, _, _ = frame
    encoded = {
        name: frames.encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=KEY)
        for name, frames in BACKENDS.items()
    }
    assert len(set(encoded.values())) == 1, f"encode_frame differs: {encoded}"
    decoder = BACKENDS[REFERENCE].FrameDecoder(max_frame_size=len(payload), allowed_rsv=0x40)
    decoder.feed(encoded[REFERENCE])
    assert common.frame_key(decoder.next_frame()) == (opcode, payload, fin, rsv1, False, False)


def run_case(frames: ModuleType, case: formats.FramesCase, *, partial: bool = True) -> Run:
    """Feed every chunk of ``case`` to a new decoder; ``partial=False`` skips read_partial()."""
    run = Run(frames, case)
    for chunk in case.chunks:
        if run.error is None:
            run.step(chunk, partial=partial)
    return run


def outcome(log: list[Any]) -> list[Any]:
    """The frames and the error of a run's log."""
    return [entry for entry in log if entry[0] not in ("buffered", "partial")]


def test_one_input(raw: bytes) -> None:
    case = formats.frames_case(raw)
    runs = {name: run_case(frames, case) for name, frames in BACKENDS.items()}
    reference = runs[REFERENCE].log
    for name, run in runs.items():
        common.same(name, run.log, REFERENCE, reference)
    if any(chunk.partial for chunk in case.chunks):
        # Reading partial frames must not change the frames or the error; read_partial() may
        # find a bad header before a read would.
        unasked = outcome(run_case(BACKENDS[REFERENCE], case, partial=False).log)
        common.same("with read_partial()", outcome(reference), "without", unasked)
    frames = dict.fromkeys(entry for entry in reference if len(entry) == 6)
    for frame in list(frames)[:REENCODED]:
        check_reencoding(frame)


if __name__ == "__main__":
    print("frames backends:", common.describe(BACKENDS), flush=True)
    common.main(test_one_input, sys.argv)
