"""Fuzz the frame decoder: both twins, fed the same chunks, must do exactly the same thing.

Usage: python fuzz/fuzz_frames.py [libFuzzer options] [corpus dir...]

Checked on every input: only ``ProtocolError`` with code 1002 or 1009 escapes; the twins return
the same frames, hold the same number of bytes and fail with the same code and reason; no payload
exceeds ``max_frame_size``; a failed decoder stays failed; every frame re-encodes the same on both
twins and decodes back to itself (the first few distinct frames of each input).
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

    def step(self, chunk: formats.Chunk) -> None:
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
        except ProtocolError as exc:
            assert exc.code in (1002, 1009), f"ProtocolError with code {exc.code}"
            self.error = (exc.code, exc.reason)
            self.log.append(("error", exc.code, exc.reason))
            self.check_stays_failed()

    def take(self, frame: Any) -> None:
        assert len(frame.payload) <= self.limit, (
            f"{len(frame.payload)}-byte payload over {self.limit}"
        )
        self.log.append(common.frame_key(frame))

    def check_stays_failed(self) -> None:
        for call in (lambda: self.decoder.feed(b"\x81\x80"), self.decoder.next_frame):
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


def test_one_input(raw: bytes) -> None:
    case = formats.frames_case(raw)
    runs = {name: Run(frames, case) for name, frames in BACKENDS.items()}
    for chunk in case.chunks:
        for run in runs.values():
            if run.error is None:
                run.step(chunk)
    reference = runs[REFERENCE].log
    for name, run in runs.items():
        common.same(name, run.log, REFERENCE, reference)
    frames = dict.fromkeys(entry for entry in reference if len(entry) == 6)
    for frame in list(frames)[:REENCODED]:
        check_reencoding(frame)


if __name__ == "__main__":
    print("frames backends:", common.describe(BACKENDS), flush=True)
    common.main(test_one_input, sys.argv)
