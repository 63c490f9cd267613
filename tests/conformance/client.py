"""A raw RFC 6455 client that sends any frame, valid or not, and records what the server does.

Its state machine mirrors the Autobahn fuzzing client (autobahn 0.10.9, the testsuite's pin, with
``failByDrop=False``), because Autobahn's verdicts are defined in terms of that state: who started
the closing handshake, whether it completed, and who dropped the TCP connection.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import enum
import hashlib
import os
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
OPCODE_NAMES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_PAYLOAD = 1007

# The codes below 3000 that autobahn 0.10.9 accepts from a peer; anything else is a violation.
ALLOWED_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})

OPEN_HANDSHAKE_TIMEOUT = 5.0
CLOSE_HANDSHAKE_TIMEOUT = 1.0
SERVER_DROP_TIMEOUT = 1.0
# Autobahn writes each queued chop in its own reactor turn, this long after the previous one.
QUEUED_WRITE_DELAY = 0.00001
MAX_RESPONSE_HEAD = 65536
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LOG_HEAD, LOG_TAIL = 60, 30


class State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Handler(Protocol):
    """What the client reports to: one running case."""

    def on_open(self) -> None: ...

    def on_message(self, payload: bytes, binary: bool) -> None: ...

    def on_pong(self, payload: bytes) -> None: ...

    def on_connection_lost(self) -> None: ...


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455 §5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    # One big-integer XOR keeps 16 MiB payloads fast without a compiled helper.
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def repeat_to(payload: bytes, length: int) -> bytes:
    """``payload`` repeated and cut to ``length`` octets (Autobahn's ``payload_len``)."""
    return (payload * (length // len(payload) + 1))[:length]


def frame_header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """The header of a frame, with any opcode and RSV bits, including invalid ones."""
    b0 = (0x80 if fin else 0) | (rsv % 8) << 4 | opcode % 16
    b1 = 0x80 if mask is not None else 0
    if length <= 125:
        head = struct.pack("!BB", b0, b1 | length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", b0, b1 | 126, length)
    else:
        head = struct.pack("!BBQ", b0, b1 | 127, length)
    return head + (mask or b"")


def preview(data: bytes, limit: int = 40) -> str:
    """A short repr of ``data`` for logs and failure messages."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}...({len(data)} bytes)"


def describe_frame(opcode: int, payload: bytes, fin: bool, rsv: int) -> str:
    name = OPCODE_NAMES.get(opcode, f"opcode={opcode}")
    return f"{name} fin={int(fin)} rsv={rsv} len={len(payload)} {preview(payload)}"


@dataclass
class _IncomingFrame:
    opcode: int
    fin: bool
    rsv: int
    remaining: int
    valid: bool
    chunks: list[bytes] = field(default_factory=list)


class FuzzingClient(asyncio.Protocol):
    """One WebSocket connection driven by a case; the public flags mirror Autobahn's."""

    def __init__(self, url: str, handler: Handler) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"expected a ws://host:port/path URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.handler = handler
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None

        self.state = State.CONNECTING
        self.connection_was_open = False
        self.closed_by_me = False
        self.failed_by_me = False
        self.dropped_by_me = False
        self.was_clean = False
        self.was_not_clean_reason: str | None = None
        self.remote_close_code: int | None = None
        self.remote_close_reason: str | None = None
        self.violations: list[str] = []
        self.tx_frame_stats: Counter[int] = Counter()

        self._started = time.monotonic()
        self._log_head: list[str] = []
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._log_skipped = 0
        self._key = base64.b64encode(os.urandom(16))
        self._response = bytearray()
        self._buffer = bytearray()
        self._frame: _IncomingFrame | None = None
        self._message_opcode: int | None = None
        self._message_chunks: list[bytes] = []
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._queue: deque[bytes] = deque()
        self._sending = False
        self._pending: list[bytes] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._close_timer: asyncio.TimerHandle | None = None
        self._stream_mask = b""
        self._stream_offset = 0

    # -- log -------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Add a timestamped line to the wire log (its head and tail are kept)."""
        line = f"{(time.monotonic() - self._started) * 1000:9.1f} ms  {text}"
        if len(self._log_head) < LOG_HEAD:
            self._log_head.append(line)
            return
        if len(self._log_tail) == LOG_TAIL:
            self._log_skipped += 1
        self._log_tail.append(line)

    def wire_log(self) -> list[str]:
        skipped = [f"... {self._log_skipped} lines omitted ..."] if self._log_skipped else []
        return [*self._log_head, *skipped, *self._log_tail]

    async def open(self) -> None:
        """Connect over TCP; the handshake and the case then run from protocol callbacks."""
        await self.loop.create_connection(lambda: self, self.host, self.port)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Autobahn's request headers, including the capitalised "Upgrade: WebSocket".
        request = (
            f"GET {self.resource} HTTP/1.1\r\n"
            "User-Agent: haske-conformance\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: WebSocket\r\n"
            "Connection: Upgrade\r\n"
            "Pragma: no-cache\r\n"
            "Cache-Control: no-cache\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self._write(request.encode())
        self.call_later(OPEN_HANDSHAKE_TIMEOUT, self._on_open_handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CONNECTING:
            self._response += data
            end = self._response.find(b"\r\n\r\n")
            if end < 0:
                if len(self._response) > MAX_RESPONSE_HEAD:
                    self._handshake_failed("response head too large")
                return
            error = self._check_response(bytes(self._response[:end]).decode("latin-1"))
            if error:
                self._handshake_failed(error)
                return
            data = bytes(self._response[end + 4 :])
            self.state = State.OPEN
            self.connection_was_open = True
            self.note("opening handshake complete")
            self.handler.on_open()
        if self.state is State.CLOSED or not data:
            return
        self._buffer += data
        self._process()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
        if not self.dropped_by_me:
            self.note("TCP connection closed by the server" + (f" ({exc})" if exc else ""))
            if not self.was_clean and self.was_not_clean_reason is None:
                self.was_not_clean_reason = (
                    "peer dropped the TCP connection without previous WebSocket closing handshake"
                )
        self.handler.on_connection_lost()
        if not self.lost.done():
            self.lost.set_result(None)

    # -- sending ---------------------------------------------------------------------------

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        payload_len: int | None = None,
        chopsize: int | None = None,
        sync: bool = False,
    ) -> None:
        """Send one masked frame exactly as given; Autobahn's ``sendFrame``."""
        if payload_len is not None:
            payload = repeat_to(payload, payload_len)
        mask = os.urandom(4)
        data = frame_header(opcode, len(payload), fin=fin, rsv=rsv, mask=mask)
        self.tx_frame_stats[opcode] += 1
        how = f" chopsize={chopsize}" if chopsize else " sync" if sync else ""
        self.note(f"TX {describe_frame(opcode, payload, fin, rsv)}{how}")
        self._send_data(data + mask_payload(payload, mask), sync=sync, chopsize=chopsize)

    def send_message(self, payload: bytes, binary: bool, fragment_size: int | None = None) -> None:
        """Autobahn's ``sendMessage``, including its fragmentation loop.

        Like Autobahn, a payload that is an exact multiple of ``fragment_size`` ends with an
        empty final fragment.
        """
        if self.state is not State.OPEN:
            return
        opcode = OP_BINARY if binary else OP_TEXT
        if fragment_size is None or len(payload) <= fragment_size:
            self.send_frame(opcode, payload)
            return
        start, done, first = 0, False, True
        while not done:
            end = start + fragment_size
            if end > len(payload):
                done, end = True, len(payload)
            self.send_frame(opcode if first else OP_CONTINUATION, payload[start:end], fin=done)
            first = False
            start += fragment_size

    def begin_message_frame(self, opcode: int, length: int) -> None:
        """Send the header of a non-final frame whose payload follows in separate writes."""
        self._stream_mask = os.urandom(4)
        self._stream_offset = 0
        self.tx_frame_stats[opcode] += 1
        self.note(f"TX header of {OPCODE_NAMES.get(opcode, opcode)} fin=0 len={length}")
        self._send_data(frame_header(opcode, length, fin=False, mask=self._stream_mask))

    def send_message_frame_data(self, data: bytes) -> None:
        """Send the next part of the frame started by ``begin_message_frame``."""
        shift = self._stream_offset % 4
        key = self._stream_mask[shift:] + self._stream_mask[:shift]
        self._stream_offset += len(data)
        self.note(f"TX frame payload part {preview(data)}")
        self._send_data(mask_payload(data, key))

    def send_close(self, code: int | None = None) -> None:
        """Start the closing handshake with a valid close frame; Autobahn's ``sendClose``."""
        if code is not None and code != CLOSE_NORMAL and not 3000 <= code <= 4999:
            raise ValueError(f"invalid close code {code}")
        self.send_close_frame(code)

    def send_close_frame(
        self, code: int | None = None, reason: bytes | None = None, *, is_reply: bool = False
    ) -> None:
        """Send a close frame with any payload and enter CLOSING; ignored unless OPEN."""
        if self.state is not State.OPEN:
            self.note(f"close frame not sent: connection is {self.state.value}")
            return
        payload = (struct.pack("!H", code) if code is not None else b"") + (reason or b"")
        self.send_frame(OP_CLOSE, payload)
        self.state = State.CLOSING
        self.closed_by_me = not is_reply
        if self.closed_by_me:
            self._close_timer = self.call_later(
                CLOSE_HANDSHAKE_TIMEOUT, self._on_close_handshake_timeout
            )

    # -- timers ----------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        timer = self.loop.call_later(delay, callback)
        self._timers.append(timer)
        return timer

    def continue_later(self, delay: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` after ``delay`` seconds unless the connection is gone by then."""

        def fire() -> None:
            if self.state is not State.CLOSED:
                callback()

        self.call_later(delay, fire)

    def kill_after(self, delay: float) -> None:
        """Fail the connection after ``delay`` seconds unless it is gone by then."""

        def fire() -> None:
            if self.state is not State.CLOSED:
                self.note(f"kill timer ({delay} s) fired: failing the connection")
                self.fail_connection()

        self.call_later(delay, fire)

    def close_after(self, delay: float) -> None:
        """Start the closing handshake after ``delay`` seconds unless closing already."""

        def fire() -> None:
            if self.state is not State.CLOSED:
                self.note(f"close timer ({delay} s) fired")
                self.send_close()

        self.call_later(delay, fire)

    # -- failing and dropping --------------------------------------------------------------

    def fail_connection(self, code: int = CLOSE_GOING_AWAY, reason: str = "Going Away") -> None:
        """Autobahn's ``failConnection`` with ``failByDrop=False``."""
        if self.state is State.CLOSED:
            return
        self.failed_by_me = True
        if self.state is not State.CLOSING:
            self.send_close_frame(code, reason.encode()[:123])
        else:
            self.drop_connection(abort=False)

    def drop_connection(self, *, abort: bool) -> None:
        """Close the TCP connection from this side (``abort`` discards unsent data)."""
        if self.state is State.CLOSED or self.transport is None:
            return
        self.dropped_by_me = True
        self.state = State.CLOSED
        self.note("TCP connection dropped by the client" + (" (abort)" if abort else ""))
        if abort:
            self._pending.clear()
            self.transport.abort()
        else:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        """Tear the connection down now, whatever its state; the harness deadline's last resort."""
        if self.transport is None or self.lost.done():
            return
        if self.state is not State.CLOSED:
            self.dropped_by_me = True
            self.state = State.CLOSED
        self.note("harness deadline: TCP connection aborted by the client")
        self.transport.abort()

    def _protocol_violation(self, reason: str) -> None:
        self.violations.append(reason)
        self.note(f"PROTOCOL VIOLATION by the server: {reason}")
        self.fail_connection(CLOSE_PROTOCOL_ERROR, reason)

    def _invalid_payload(self, reason: str) -> None:
        self.violations.append(reason)
        self.note(f"INVALID PAYLOAD from the server: {reason}")
        self.fail_connection(CLOSE_INVALID_PAYLOAD, reason)

    def _handshake_failed(self, reason: str) -> None:
        self.violations.append(f"opening handshake: {reason}")
        self.note(f"opening handshake failed: {reason}")
        self.drop_connection(abort=True)

    def _on_open_handshake_timeout(self) -> None:
        if self.state is State.CONNECTING:
            self.was_not_clean_reason = "peer did not finish (in time) the opening handshake"
            self._handshake_failed(f"no response within {OPEN_HANDSHAKE_TIMEOUT} s")

    def _on_close_handshake_timeout(self) -> None:
        if self.state is not State.CLOSED:
            self.was_clean = False
            self.was_not_clean_reason = "peer did not respond (in time) in closing handshake"
            self.note(f"no close reply within {CLOSE_HANDSHAKE_TIMEOUT} s")
            self.drop_connection(abort=True)

    def _on_server_drop_timeout(self) -> None:
        if self.state is not State.CLOSED:
            self.was_clean = False
            self.was_not_clean_reason = "server did not drop TCP connection (in time)"
            self.note(f"server kept TCP open {SERVER_DROP_TIMEOUT} s after the closing handshake")
            self.drop_connection(abort=True)

    # -- writing ---------------------------------------------------------------------------

    def _send_data(self, data: bytes, *, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn's sendData: chops and sync writes go through a queue drained one item per
        # loop turn; plain writes made in one turn leave in one segment, like Twisted's buffer.
        if chopsize:
            self._queue.extend(data[i : i + chopsize] for i in range(0, len(data), chopsize))
            self._trigger()
        elif sync or self._queue:
            self._queue.append(data)
            self._trigger()
        else:
            self._write(data)

    def _trigger(self) -> None:
        if not self._sending:
            self._sending = True
            self._send_next()

    def _send_next(self) -> None:
        if not self._queue:
            self._sending = False
            return
        chunk = self._queue.popleft()
        if self.state is not State.CLOSED:
            self._write(chunk)
        self.loop.call_later(QUEUED_WRITE_DELAY, self._send_next)

    def _write(self, data: bytes) -> None:
        if not self._pending:
            self.loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._pending))
        self._pending.clear()

    # -- receiving -------------------------------------------------------------------------

    def _check_response(self, head: str) -> str | None:
        """The checks autobahn 0.10.9 makes on the server's handshake response."""
        lines = head.split("\r\n")
        status = lines[0].split()
        if len(status) < 2 or status[0] != "HTTP/1.1" or status[1] != "101":
            return f"expected 'HTTP/1.1 101', got {lines[0]!r}"
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name.strip():
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        joined = {name: ", ".join(values) for name, values in headers.items()}
        if joined.get("upgrade", "").lower() != "websocket":
            return f"bad Upgrade header {joined.get('upgrade')!r}"
        if "upgrade" not in {t.strip().lower() for t in joined.get("connection", "").split(",")}:
            return f"bad Connection header {joined.get('connection')!r}"
        accept = base64.b64encode(hashlib.sha1(self._key + WEBSOCKET_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != [accept]:
            return f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')}, want {accept}"
        for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
            if len(headers.get(name, [])) > 1:
                return f"{name} appears more than once"
            if joined.get(name, "").strip(", "):
                return f"{name}: {joined[name]!r} in the response, but none was offered"
        return None

    def _process(self) -> None:
        buf = self._buffer
        while self.state is not State.CLOSED:
            if self._frame is None:
                if not self._begin_frame():
                    return
                assert self._frame is not None
            frame = self._frame
            take = min(frame.remaining, len(buf))
            if take:
                chunk = bytes(buf[:take])
                del buf[:take]
                frame.remaining -= take
                self._frame_data(frame, chunk)
            if frame.remaining:
                return
            self._frame = None
            self._end_frame(frame)

    def _begin_frame(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        short_length = b1 & 0x7F
        masked = bool(b1 & 0x80)
        size = 2 + {126: 2, 127: 8}.get(short_length, 0) + (4 if masked else 0)
        if len(buf) < size:
            return False
        fin, rsv, opcode = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F
        violation = self._header_violation(fin, rsv, opcode, masked, short_length)
        length = short_length
        if short_length == 126:
            length = struct.unpack_from("!H", buf, 2)[0]
            if length < 126:
                violation = violation or "invalid data frame length (not minimal encoding)"
        elif short_length == 127:
            length = struct.unpack_from("!Q", buf, 2)[0]
            if length > 0x7FFFFFFFFFFFFFFF:
                violation = violation or "invalid data frame length (>2^63)"
            elif length < 65536:
                violation = violation or "invalid data frame length (not minimal encoding)"
        del buf[:size]
        if violation:
            self._protocol_violation(violation)
        elif opcode in (OP_TEXT, OP_BINARY):
            self._message_opcode = opcode
            self._message_chunks = []
            self._utf8.reset()
        self._frame = _IncomingFrame(opcode, fin, rsv, length, valid=violation is None)
        return True

    def _header_violation(
        self, fin: bool, rsv: int, opcode: int, masked: bool, short_length: int
    ) -> str | None:
        inside = self._message_opcode is not None
        checks = [
            (rsv != 0, f"RSV = {rsv} and no extension negotiated"),
            (masked, "masked server-to-client frame"),
        ]
        if opcode > 7:
            checks += [
                (not fin, "fragmented control frame"),
                (short_length > 125, "control frame with payload length > 125 octets"),
                (opcode not in (OP_CLOSE, OP_PING, OP_PONG), f"reserved control opcode {opcode}"),
                (opcode == OP_CLOSE and short_length == 1, "close frame with payload length 1"),
            ]
        else:
            checks += [
                (opcode not in (0, 1, 2), f"reserved data opcode {opcode}"),
                (not inside and opcode == 0, "continuation frame outside a fragmented message"),
                (inside and opcode != 0, "new data frame inside a fragmented message"),
            ]
        return next((reason for failed, reason in checks if failed), None)

    def _frame_data(self, frame: _IncomingFrame, chunk: bytes) -> None:
        frame.chunks.append(chunk)
        if frame.valid and frame.opcode < 8 and self._message_opcode == OP_TEXT:
            try:
                self._utf8.decode(chunk)
            except UnicodeDecodeError as exc:
                frame.valid = False
                self._invalid_payload(f"invalid UTF-8 in a text message from the server: {exc}")

    def _end_frame(self, frame: _IncomingFrame) -> None:
        payload = b"".join(frame.chunks)
        self.note(f"RX {describe_frame(frame.opcode, payload, frame.fin, frame.rsv)}")
        if not frame.valid:
            return
        if frame.opcode == OP_CLOSE:
            self._on_close_frame(payload)
        elif frame.opcode == OP_PING:
            if self.state is State.OPEN:
                self.send_frame(OP_PONG, payload)
        elif frame.opcode == OP_PONG:
            self.handler.on_pong(payload)
        else:
            self._message_chunks.append(payload)
            if frame.fin:
                self._end_message()

    def _end_message(self) -> None:
        binary = self._message_opcode == OP_BINARY
        message = b"".join(self._message_chunks)
        self._message_opcode, self._message_chunks = None, []
        if not binary:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                self._invalid_payload(f"text message from the server ends mid code point: {exc}")
                return
        self.handler.on_message(message, binary)

    def _on_close_frame(self, payload: bytes) -> None:
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        self.remote_close_code = code
        if code is not None and (
            code < 1000 or (code <= 2999 and code not in ALLOWED_CLOSE_CODES) or code >= 5000
        ):
            self._protocol_violation(f"close frame with invalid close code {code}")
        try:
            self.remote_close_reason = payload[2:].decode() if len(payload) > 2 else None
        except UnicodeDecodeError:
            self._invalid_payload("close reason is not valid UTF-8")
        if self.state is State.CLOSING:
            if self._close_timer is not None:
                self._close_timer.cancel()
            self.was_clean = True
            # The server must drop TCP now; Autobahn gives it this long.
            self.call_later(SERVER_DROP_TIMEOUT, self._on_server_drop_timeout)
        elif self.state is State.OPEN:
            self.was_clean = True
            self.send_close_frame(CLOSE_NORMAL, is_reply=True)
        else:
            self.was_clean = False
