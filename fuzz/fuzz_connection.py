"""Fuzz the sans-I/O connection with random peer bytes and application calls, on every codec.

Usage: python fuzz/fuzz_connection.py [libFuzzer options] [corpus dir...]

Checked on every input: ``receive_data`` never raises; events are only the documented kinds,
none larger than ``max_message_size``, and a close event carries a code a peer may send (or
1005 for none) and ends the connection; the application calls (``send_*``, ``drop_oldest``,
``receive_eof``) raise only ``ValueError`` or ``ConnectionClosed``; everything the connection sends parses as frames of its side, with at
most one close frame, last, whose code may be sent; and every frames backend gives the same
events and sends the same frames.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import common
import formats

with common.instrumented():
    from haske.connection import (
        CLOSED,
        FRAME,
        OP_BINARY,
        OP_CLOSE,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        OPEN,
        VALID_CLOSE_CODES,
        Connection,
        parse_close,
    )
    from haske.exceptions import ConnectionClosed, ProtocolError

    BACKENDS = common.backends("frames")

REFERENCE = "python"
NO_STATUS = 1005
PEER_CODES = VALID_CLOSE_CODES | {NO_STATUS}


class Run:
    """One connection driven through a case, recording what it did in a comparable form."""

    def __init__(self, frames: ModuleType, case: formats.ConnectionCase) -> None:
        self.conn = Connection(
            client=case.client,
            max_message_size=case.max_message_size,
            max_frame_size=case.max_frame_size,
            frames=frames,
        )
        self.conn.frame_mode = case.frame_mode
        self.case = case
        frame_limit = case.max_message_size
        if case.max_frame_size is not None:
            frame_limit = min(frame_limit, case.max_frame_size)
        self.frame_limit = frame_limit
        # What the peer receives, decoded with the reference codec: masked when we are the client.
        self.sent = BACKENDS[REFERENCE].FrameDecoder(
            max_frame_size=2**63 - 1, require_mask=case.client
        )
        self.sent_close = False
        self.log: list[Any] = []

    def step(self, chunk: formats.Chunk) -> None:
        if chunk.action:
            self.log.append(("call", chunk.action, self.call(chunk.action, chunk.data)))
        else:
            was_closed = self.conn.state == CLOSED
            events = self.conn.receive_data(formats.as_fed(chunk.data, chunk.kind))
            assert not (was_closed and events), "events after the connection closed"
            for index, (kind, value) in enumerate(events):
                self.check_event(kind, value, last=index == len(events) - 1)
                self.log.append((kind, common.frame_key(value) if kind == FRAME else value))
        if chunk.flush:
            self.flush()

    def check_event(self, kind: int, value: Any, *, last: bool) -> None:
        if kind == OP_TEXT:
            assert isinstance(value, str) and len(value.encode()) <= self.case.max_message_size
        elif kind == OP_BINARY:
            assert isinstance(value, bytes) and len(value) <= self.case.max_message_size
        elif kind in (OP_PING, OP_PONG):
            assert isinstance(value, bytes) and len(value) <= 125
        elif kind == FRAME:
            assert self.case.frame_mode, "a FRAME event outside frame mode"
            assert value.opcode in (0, 1, 2), f"a FRAME event for opcode {value.opcode}"
            assert len(value.payload) <= self.frame_limit
        elif kind == OP_CLOSE:
            code, reason = value
            assert code in PEER_CODES, f"close event with code {code}"
            assert isinstance(reason, str)
            assert last and self.conn.state == CLOSED, "a close event that did not end it"
        else:
            raise AssertionError(f"unknown event kind {kind!r}")

    def call(self, action: int, data: bytes) -> Any:
        """An application call with ``data`` as its argument; what it returned or raised."""
        conn = self.conn
        text = data.decode("utf-8", "replace")
        try:
            if action == 1:
                conn.send_text(text)
            elif action == 2:
                conn.send_binary(data)
            elif action == 3:
                conn.send_ping(data)
            elif action == 4:
                conn.send_pong(data)
            elif action == 5:
                conn.send_close(int.from_bytes(data[:2], "big"), text[2:])
            elif action == 6:
                return conn.drop_oldest(int.from_bytes(data[:3], "big"))
            elif action == 7:
                conn.receive_eof()
            else:
                # Frame-level access: the first byte gives FIN and the opcode, as on the wire.
                head = data[0] if data else 0x81
                conn.send_frame(conn.frames.Frame(head & 0x0F, data[1:], fin=bool(head & 0x80)))
        except ConnectionClosed as exc:
            assert conn.state != OPEN, "ConnectionClosed while open"
            return ("ConnectionClosed", exc.code)
        except ValueError as exc:
            return ("ValueError", str(exc))
        return None

    def flush(self) -> None:
        pending = self.conn.pending_bytes
        out = self.conn.data_to_send()
        assert pending == sum(len(piece) for piece in out), "pending_bytes is wrong"
        if not out:
            return
        try:
            self.sent.feed(b"".join(out))
            frames = list(self.sent)
        except ProtocolError as exc:
            raise AssertionError(f"sent an invalid frame: {exc}") from None
        for frame in frames:
            assert not self.sent_close, "a frame after the close frame"
            if frame.opcode == OP_CLOSE:
                self.sent_close = True
                try:
                    code, _ = parse_close(frame.payload)
                except ProtocolError as exc:
                    raise AssertionError(f"sent a bad close frame: {exc}") from None
                assert code in VALID_CLOSE_CODES, f"sent close code {code}"
            self.log.append(("sent", common.frame_key(frame)))
        if not self.case.client:
            # Unmasked output is deterministic: the backends must send the very same bytes.
            self.log.append(("bytes", b"".join(out)))


def test_one_input(raw: bytes) -> None:
    case = formats.connection_case(raw)
    runs = {name: Run(frames, case) for name, frames in BACKENDS.items()}
    for chunk in case.chunks:
        for run in runs.values():
            run.step(chunk)
    for run in runs.values():
        run.flush()
        assert run.sent.buffered == 0, "sent a partial frame"
    reference = runs[REFERENCE].log
    for name, run in runs.items():
        common.same(name, run.log, REFERENCE, reference)


if __name__ == "__main__":
    print("frames backends:", common.describe(BACKENDS), flush=True)
    common.main(test_one_input, sys.argv)
