"""Write the seed corpus: valid frames, requests and conversations, plus a few near misses.

Usage: python fuzz/make_corpus.py [output dir, default fuzz/corpus]

Writes ``<dir>/frames/``, ``<dir>/handshake/`` and ``<dir>/connection/``, a few dozen small files
in all; large payloads come from the input format's repeat counts, not from large files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import formats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Imported once the checkout is on the path.
from haske._pure.frames import encode_frame

KEY = b"\x37\xfa\x21\x3d"
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def client(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=KEY)


def server(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin)


def close(code: int, reason: bytes = b"") -> bytes:
    return client(CLOSE, code.to_bytes(2, "big") + reason)


def mode(kind: int = formats.BYTES, reads: int = 0, repeat: int = 0, partial: bool = False) -> int:
    """A frames record's mode byte; ``reads`` 0 all, 1 none, 2 one, 3 two frames."""
    return kind | reads << 2 | repeat << 4 | (0x80 if partial else 0)


CONVERSATION = [
    client(TEXT, b"Hel", fin=False),
    client(PING, b"are you there"),
    client(0, b"lo", fin=False),
    client(0, "·wörld".encode(), fin=True),
    client(BINARY, bytes(range(200))),
    close(1000, b"bye"),
]
# 65536 bytes of payload: a 512-byte piece repeated 2**7 times.
LARGE_HEADER = bytes([0x82, 0xFF]) + (65536).to_bytes(8, "big") + KEY
# A text frame to read as it arrives, cut inside its header, its key and a character.
ARRIVING = client(TEXT, "ünïcode arriving ".encode() * 12)
INVALID_ARRIVING = client(TEXT, b"valid start, then \xc0\xaf" + b"x" * 200)
ARRIVING_CUTS = [ARRIVING[:3], ARRIVING[3:6], ARRIVING[6:9], ARRIVING[9:40], ARRIVING[40:150]]


def frames_seeds() -> dict[str, bytes]:
    pack = formats.pack_frames
    stream = b"".join(CONVERSATION)
    return {
        "rfc-masked-hello": pack([client(TEXT, b"Hello")]),
        "conversation": pack([stream]),
        "conversation-byte-by-byte": pack([stream[i : i + 1] for i in range(14)] + [stream[14:]]),
        "conversation-split-reads": pack(CONVERSATION, mode=mode(formats.MEMORYVIEW, reads=2)),
        "conversation-bytearray-unread": pack(CONVERSATION, mode=mode(formats.BYTEARRAY, 1)),
        "strided-views": pack([stream[:3], stream[3:40], stream[40:]], mode=mode(formats.STRIDED)),
        "server-frames": pack(
            [server(TEXT, b"hi") + server(BINARY, b"x" * 300) + server(PONG)], require_mask=False
        ),
        "length-126": pack([client(BINARY, b"a" * 126)[:5], client(BINARY, b"a" * 126)[5:]]),
        "length-64k": pack(
            [LARGE_HEADER, bytes(range(256)) * 2, b""],
            max_frame_size=1 << 20,
            mode=[0, mode(repeat=7)],
        ),
        "rsv-bits-allowed": pack([client(TEXT, b"z", rsv1=True)], allowed_rsv=0x70),
        "error-reserved-opcode": pack([client(TEXT, b"ok") + bytes([0x83, 0x80]) + KEY]),
        "error-unmasked": pack([server(TEXT, b"plain")]),
        "error-masked-server-frame": pack([client(TEXT, b"m")], require_mask=False),
        "error-too-big": pack([client(BINARY, b"b" * 126)], max_frame_size=125),
        "error-top-bit-length": pack([bytes([0x82, 0xFF, 0x80]) + bytes(7) + KEY]),
        "error-long-ping": pack([bytes([0x89, 0xFE, 0, 126]) + KEY]),
        "partial-unread": pack(
            [*ARRIVING_CUTS, ARRIVING[150:]], mode=mode(reads=1, partial=True), partial_last=True
        ),
        "partial-behind-frames": pack(
            [stream + ARRIVING[:50], ARRIVING[50:51], ARRIVING[51:]],
            mode=[mode(formats.BYTEARRAY, partial=True), mode(formats.STRIDED, partial=True)],
        ),
        "partial-large": pack(
            [LARGE_HEADER, bytes(range(256)), bytes(range(256)) * 8, b""],
            max_frame_size=1 << 20,
            mode=[mode(partial=True), mode(repeat=5, partial=True), mode(repeat=3, partial=True)],
            partial_last=True,
        ),
        "partial-server-frames": pack(
            [server(BINARY, b"s" * 300)[:100], server(BINARY, b"s" * 300)[100:]],
            require_mask=False,
            mode=mode(reads=2, partial=True),
        ),
        "partial-error-header": pack(
            [client(TEXT, b"ok") + bytes([0x83]), bytes([0x80]) + KEY],
            mode=mode(reads=1, partial=True),
            partial_last=True,
        ),
    }


RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def handshake_seeds() -> dict[str, bytes]:
    def variant(old: bytes, new: bytes) -> bytes:
        return RFC_REQUEST.replace(old, new)

    extensions = (
        b'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x; y="1\\5", '
        b"permessage-deflate;server_no_context_takeover\r\n"
    )
    return {
        "rfc-request": RFC_REQUEST,
        "extensions": variant(b"Origin:", extensions + b"Origin:"),
        "bare-lf": RFC_REQUEST.replace(b"\r\n", b"\n"),
        "leading-blank-lines": b"\r\n\n" + RFC_REQUEST,
        "percent-path": variant(b"/chat", b"/caf%C3%A9/a%0D%0Ab%00?room=1&x=%20"),
        "http-1.0": variant(b"HTTP/1.1", b"HTTP/1.0"),
        "version-8": variant(b"Version: 13", b"Version: 8"),
        "bad-key": variant(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ"),
        "no-upgrade": variant(b"Upgrade: websocket\r\n", b""),
        "post": variant(b"GET", b"POST"),
        "tab-and-obs-text": variant(b"Origin: http://example.com", b"X-Odd:\t v\xe9 \t"),
        "incomplete": RFC_REQUEST[:-3],
        "odd-extension-lists": variant(
            b"Origin:", b"Sec-WebSocket-Extensions: , a,, b ;c\r\nOrigin:"
        ),
        "101-headers": variant(b"Origin:", b"X: y\r\n" * 94 + b"Origin:"),
        # One byte over the 16 KiB limit: the only large seed.
        "head-too-large": variant(b"Origin: ", b"Origin: " + b"o" * (16385 - len(RFC_REQUEST))),
        "malformed-header": variant(b"Origin:", b"Origin :"),
    }


def connection_seeds() -> dict[str, bytes]:
    pack = formats.pack_connection
    steps = [(0, frame) for frame in CONVERSATION]
    return {
        "conversation": pack(steps),
        "conversation-frame-mode": pack(steps, frame_mode=True),
        "client-side": pack(
            [(0, server(TEXT, b"hi")), (3, b"ping"), (0, server(CLOSE, b"\x03\xe8"))], client=True
        ),
        "app-sends-then-drops": pack(
            [
                (1, "héllo".encode()),
                (2, b"x" * 300),
                (6, b"\x00\x01\x00"),
                (0, client(TEXT, b"a")),
            ],
            flush=False,
        ),
        "app-closes": pack([(5, b"\x03\xe8going away"), (0, close(1000))]),
        "invalid-utf8": pack([(0, client(TEXT, b"\xce\xba\xe1\xbd\xb9\xed\xa0\x80"))]),
        "utf8-across-fragments": pack(
            [(0, client(TEXT, b"\xce", fin=False)), (0, client(0, b"\xba"))]
        ),
        "surrogate-in-fragment": pack(
            [(0, client(TEXT, b"a\xed\xa0", fin=False)), (0, client(0, b"\x80"))]
        ),
        "bad-close-code": pack([(0, close(1005))]),
        "app-sends-reserved-close-code": pack([(5, b"\x03\xed"), (0, b"")]),
        "message-over-limit": pack(
            [(0, client(TEXT, b"12345", fin=False)), (0, client(0, b"67890"))], max_message_size=8
        ),
        "frame-limit": pack([(0, client(BINARY, b"q" * 130))], max_frame_size=126),
        "eof": pack([(7, b""), (0, client(TEXT, b"late"))]),
        "deferred-error-answered": pack(
            [
                (0, client(TEXT, b"question") + bytes([0x83, 0x80]) + KEY),
                (1, b"answer"),
                (0, client(TEXT, b"ignored")),
                (9, b""),
                (0, b""),
            ],
            fail_later=True,
        ),
        "deferred-error-at-once": pack([(0, client(TEXT, b"question")), (0, client(0, b"orphan"))]),
        "deferred-error-then-close": pack(
            [(0, client(BINARY, b"x" * 20)), (5, b"\x03\xe8bye"), (0, close(1000))],
            max_message_size=10,
            fail_later=True,
        ),
        "deferred-error-eof": pack(
            [(0, client(TEXT, b"\xff")), (7, b""), (9, b""), (0, b"")], fail_later=True
        ),
        "arriving-invalid-utf8": pack(
            [(0, INVALID_ARRIVING[:10]), (0, INVALID_ARRIVING[10:30]), (0, INVALID_ARRIVING[30:])],
            fail_later=True,
        ),
        "arriving-surrogate-in-continuation": pack(
            [
                (0, client(TEXT, b"ab\xed", fin=False)),
                (0, client(0, b"\xa0\x80 and more")[:9]),
                (0, b""),
            ]
        ),
        "fail-long-reason": pack([(9, "é".encode() * 70), (0, client(TEXT, b"late"))]),
        "app-sends-frames": pack(
            [
                (8, b"\x01frag"),
                (8, b"\x89ping"),
                (8, b"\x80ment"),
                (8, b"\x88\x03\xe8bye"),
                (0, b""),
            ]
        ),
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fuzz" / "corpus"
    for target, seeds in (
        ("frames", frames_seeds()),
        ("handshake", handshake_seeds()),
        ("connection", connection_seeds()),
    ):
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
