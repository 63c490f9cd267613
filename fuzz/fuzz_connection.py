"""Fuzz the sans-I/O connection with random peer bytes and application calls, on every backend.

Usage: python fuzz/fuzz_connection.py [libFuzzer options] [corpus dir...]

Every input runs twice on each connection backend with each frames backend: with
``defer_failure`` off, and on. Checked:
``receive_data`` never raises; events are only the documented kinds, none larger than
``max_message_size``, and a close event carries a code a peer may send (or 1005 for none) and
ends the connection; the application calls (``send_*``, ``drop_oldest``, ``receive_eof``,
``fail``) raise only ``ValueError`` or ``ConnectionClosed``; everything the connection sends
parses as frames of its side, with at most one close frame, last, whose code may be sent; and
every pair of backends gives the same events and sends the same frames.

With ``defer_failure`` an ``ERROR`` event is the last of its batch, carries 1002, 1007 or 1009
and leaves the connection open; nothing more is read after it; the pending failure's ``fail()``
(at once, or at the input's next ``fail`` step or its end) sends a close frame with that code
and the reason cut to fit, unless the application closed first. Failed at once, the run must
match the one without ``defer_failure`` event for event and byte for byte.
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
        ERROR,
        FRAME,
        OP_BINARY,
        OP_CLOSE,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        OPEN,
        VALID_CLOSE_CODES,
        parse_close,
    )
    from haske.exceptions import ConnectionClosed, ProtocolError

    CONNECTIONS = common.backends("connection")
    FRAMES = common.backends("frames")

#: Every connection backend on every frames backend, as ``connection/frames``.
BACKENDS = {
    f"{connection}/{frames}": (connection_module.Connection, frames_module)
    for connection, connection_module in CONNECTIONS.items()
    for frames, frames_module in FRAMES.items()
}
REFERENCE = "python/python"
NO_STATUS = 1005
PEER_CODES = VALID_CLOSE_CODES | {NO_STATUS}
#: What a peer's protocol error fails the connection with.
ERROR_CODES = {1002, 1007, 1009}
#: What ``fail`` steps without a pending failure use, like the server's keepalive timeout.
FAIL_CODE = 1011
#: The longest reason a close frame carries; a cut reason falls short by under one character.
MAX_CLOSE_REASON = 123


class Run:
    """One connection driven through a case, recording what it did in a comparable form."""

    def __init__(
        self, connection_type: Any, frames: ModuleType, case: formats.ConnectionCase, defer: bool
    ) -> None:
        self.conn = connection_type(
            client=case.client,
            max_message_size=case.max_message_size,
            max_frame_size=case.max_frame_size,
            frames=frames,
            defer_failure=defer,
        )
        self.conn.frame_mode = case.frame_mode
        self.case = case
        self.defer = defer
        # The failure an ERROR event left to us, until fail() is called.
        self.pending: tuple[int, str] | None = None
        # The close frame the next output must end with, after fail() queued it.
        self.expected_close: tuple[int, str] | None = None
        frame_limit = case.max_message_size
        if case.max_frame_size is not None:
            frame_limit = min(frame_limit, case.max_frame_size)
        self.frame_limit = frame_limit
        # What the peer receives, decoded with the reference codec: masked when we are the client.
        self.sent = FRAMES["python"].FrameDecoder(
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
            assert not (self.pending and events), "events after an ERROR event"
            for index, (kind, value) in enumerate(events):
                self.check_event(kind, value, last=index == len(events) - 1)
                if kind == ERROR:
                    self.pending = value
                    if not self.case.fail_later:
                        # Failed at once, it must look exactly as without defer_failure.
                        self.log.append((OP_CLOSE, value))
                        self.fail(*value)
                        continue
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
        elif kind == ERROR:
            code, reason = value
            assert self.defer, "an ERROR event without defer_failure"
            assert code in ERROR_CODES, f"ERROR event with code {code}"
            assert isinstance(reason, str)
            assert last and self.conn.state == OPEN, "an ERROR event that was not last or closed"
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
            elif action == 9:
                if self.pending is not None:
                    self.fail(*self.pending)
                else:
                    self.fail(FAIL_CODE, text)
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

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection; expect the close frame if it was still open."""
        conn = self.conn
        was_open = conn.state == OPEN
        pending_bytes = conn.pending_bytes
        conn.fail(code, reason)
        self.pending = None
        assert conn.state == CLOSED, "still open after fail()"
        if was_open:
            assert conn.close_sent == (code, reason), f"close_sent is {conn.close_sent}"
            self.expected_close = (code, reason)
        else:
            assert conn.pending_bytes == pending_bytes, "fail() sent something after the close"

    def check_close(self, payload: bytes) -> None:
        """The close frame that fail() queued: its code, and its reason cut to fit."""
        assert self.expected_close is not None
        code, reason = self.expected_close
        self.expected_close = None
        sent_code, sent_reason = parse_close(payload)
        assert sent_code == code, f"fail({code}) sent close code {sent_code}"
        assert reason.startswith(sent_reason), f"reason {sent_reason!r} is not {reason!r} cut"
        size = len(sent_reason.encode())
        assert size <= MAX_CLOSE_REASON, f"a {size}-byte close reason"
        assert sent_reason == reason or size > MAX_CLOSE_REASON - 4, "cut shorter than needed"

    def finish(self) -> None:
        """The end of the input: fail a pending failure, take the rest of the output."""
        if self.pending is not None:
            self.fail(*self.pending)
        self.flush()
        assert self.sent.buffered == 0, "sent a partial frame"
        assert self.expected_close is None, "fail() queued no close frame"

    def flush(self) -> None:
        pending = self.conn.pending_bytes
        out = self.conn.data_to_send()
        assert pending == sum(len(piece) for piece in out), "pending_bytes is wrong"
        if not out:
            assert self.expected_close is None, "fail() queued no close frame"
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
                if self.expected_close is not None:
                    self.check_close(frame.payload)
            self.log.append(("sent", common.frame_key(frame)))
        if not self.case.client:
            # Unmasked output is deterministic: the backends must send the very same bytes.
            self.log.append(("bytes", b"".join(out)))


def run_all(case: formats.ConnectionCase, *, defer: bool) -> list[Any]:
    """Run ``case`` on every backend; the reference log, once they all agree."""
    runs = {
        name: Run(connection_type, frames, case, defer)
        for name, (connection_type, frames) in BACKENDS.items()
    }
    for chunk in case.chunks:
        for run in runs.values():
            run.step(chunk)
    for run in runs.values():
        run.finish()
    reference = runs[REFERENCE].log
    for name, run in runs.items():
        common.same(name, run.log, REFERENCE, reference)
    return reference


def test_one_input(raw: bytes) -> None:
    case = formats.connection_case(raw)
    failing_at_once = run_all(case, defer=False)
    deferred = run_all(case, defer=True)
    if not case.fail_later:
        common.same("defer_failure", deferred, "without", failing_at_once)


if __name__ == "__main__":
    print("connection backends:", common.describe(CONNECTIONS), flush=True)
    print("frames backends:", common.describe(FRAMES), flush=True)
    common.main(test_one_input, sys.argv)
