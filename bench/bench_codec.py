"""Frame codec throughput: Haske against websockets, wsproto, aiohttp and picows.

    python bench/bench_codec.py [--quick] [--sizes 16,1024] [--only picows,aiohttp]

Decode: masked client frames, back to back, fed to each parser in 64 KiB chunks that are copied
out of the stream inside the timed loop, as a socket read would; every frame is counted by
Python code (a loop or a callback). Encode: unmasked server frames, each written to a transport
that drops it; like aiohttp and picows, Haske sends payloads over 16 KiB as a separate buffer
(``frame_header`` + ``writelines``) instead of copying them.

Prints frames/s per library and the ratio Haske-Cython / that library: above 1.00 means Haske
is faster. Each figure is the best of several timed runs, which filters out brief noise from
other processes but not a loaded machine; compare figures from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from haske import _backends

CHUNK = 64 * 1024
STREAM_BYTES = 4 * 1024 * 1024
SIZES = {"16 B": 16, "125 B": 125, "1 KiB": 1024, "64 KiB": 65536, "1 MiB": 1 << 20}
MAX_SIZE = 16 * 1024 * 1024
ZERO_COPY_ABOVE = 16 * 1024

Decode = Callable[[bytes, list[tuple[int, int]]], int]
Encode = Callable[[bytes, int], None]


class NullTransport:
    """An asyncio transport stand-in that drops everything written to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()

    def write(self, data: object) -> None:
        pass

    def writelines(self, data: object) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        # Non-zero keeps picows from writing to the (unconnected) socket directly.
        return 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {
            "socket": self.sock,
            "peername": ("127.0.0.1", 1),
            "sockname": ("127.0.0.1", 2),
        }.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


def client_stream(size: int) -> tuple[bytes, int]:
    """Masked binary frames of ``size`` bytes filling about STREAM_BYTES, and their number."""
    frames = _backends.load("frames", "python")
    frame = frames.encode_frame(frames.OP_BINARY, os.urandom(size), mask=os.urandom(4))
    count = max(8, STREAM_BYTES // len(frame))
    return frame * count, count


# Decoders: each takes the stream and the chunk bounds and returns the number of frames seen.


def haske_decoder(backend: str) -> Decode:
    module = _backends.load("frames", backend)

    def run(data: bytes, bounds: list[tuple[int, int]]) -> int:
        decoder = module.FrameDecoder(max_frame_size=MAX_SIZE)
        feed = decoder.feed
        count = 0
        for start, end in bounds:
            feed(data[start:end])
            for _ in decoder:
                count += 1
        return count

    return run


def websockets_decoder() -> Decode:
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    def run(data: bytes, bounds: list[tuple[int, int]]) -> int:
        reader = StreamReader()
        count = 0

        def parse() -> Any:
            nonlocal count
            while True:
                yield from Frame.parse(reader.read_exact, mask=True, max_size=MAX_SIZE)
                count += 1

        parser = parse()
        next(parser)
        for start, end in bounds:
            reader.feed_data(data[start:end])
            next(parser)
        return count

    return run


def wsproto_decoder() -> Decode:
    from wsproto.frame_protocol import FrameProtocol

    def run(data: bytes, bounds: list[tuple[int, int]]) -> int:
        protocol = FrameProtocol(client=False, extensions=[])
        count = 0
        for start, end in bounds:
            protocol.receive_bytes(data[start:end])
            # wsproto hands out a frame's payload piecemeal as it arrives.
            for frame in protocol.received_frames():
                count += frame.frame_finished
        return count

    return run


def aiohttp_decoder() -> Decode:
    from aiohttp._websocket.reader_c import WebSocketDataQueue, WebSocketReader

    class Protocol:
        _reading_paused = False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    class CountingQueue(WebSocketDataQueue):  # type: ignore[misc]
        """The reader's message sink; counting here replaces ``await ws.receive()``."""

        count = 0

        def feed_data(self, data: object, size: int) -> None:
            self.count += 1

    def run(data: bytes, bounds: list[tuple[int, int]]) -> int:
        loop = asyncio.new_event_loop()
        try:
            queue = CountingQueue(Protocol(), 2**20, loop=loop)
            reader = WebSocketReader(queue, MAX_SIZE, compress=False, decode_text=False)
            for start, end in bounds:
                reader.feed_data(data[start:end])
            return queue.count
        finally:
            loop.close()

    return run


PICOWS_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def picows_server(listener: Any) -> tuple[Any, NullTransport]:
    """A picows server-side protocol past its handshake, on a transport that drops output."""
    from picows import WSAutoPingStrategy
    from picows.picows import WSProtocol  # type: ignore[attr-defined]

    logger = logging.getLogger("bench.picows")
    logger.setLevel(logging.WARNING)
    protocol = WSProtocol(
        None,
        None,
        False,
        lambda request: listener,
        logger,
        False,
        None,
        False,
        10.0,
        10.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        False,
        MAX_SIZE,
        None,
        16 * 1024,
    )
    transport = NullTransport()
    protocol.connection_made(transport)
    picows_feed(protocol, PICOWS_UPGRADE)
    return protocol, transport


def picows_feed(protocol: Any, chunk: bytes) -> None:
    """What uvloop does with a BufferedProtocol: read into its buffer, then report the size."""
    view = memoryview(chunk)
    while view:
        target = protocol.get_buffer(-1)
        size = min(len(target), len(view))
        target[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


def picows_decoder() -> Decode:
    from picows import WSListener

    class Counter(WSListener):
        count = 0

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            self.count += 1

    def run(data: bytes, bounds: list[tuple[int, int]]) -> int:
        async def main() -> int:
            listener = Counter()
            protocol, transport = picows_server(listener)
            get_buffer, buffer_updated = protocol.get_buffer, protocol.buffer_updated
            for start, end in bounds:
                target = get_buffer(-1)
                if len(target) >= end - start:
                    # The common case, inlined: the whole chunk fits in picows' buffer.
                    target[: end - start] = data[start:end]
                    buffer_updated(end - start)
                else:
                    picows_feed(protocol, data[start:end])
            transport.close()
            return listener.count

        return asyncio.run(main())

    return run


# Encoders: each writes ``count`` unmasked binary frames carrying ``payload``.


def haske_encoder(backend: str) -> Encode:
    module = _backends.load("frames", backend)
    encode, header, opcode = module.encode_frame, module.frame_header, module.OP_BINARY

    def run(payload: bytes, count: int) -> None:
        transport = NullTransport()
        write, writelines = transport.write, transport.writelines
        for _ in range(count):
            if len(payload) > ZERO_COPY_ABOVE:
                writelines([header(opcode, len(payload)), payload])
            else:
                write(encode(opcode, payload))

    return run


def websockets_encoder() -> Encode:
    from websockets.frames import Frame, Opcode

    def run(payload: bytes, count: int) -> None:
        write = NullTransport().write
        for _ in range(count):
            write(Frame(Opcode.BINARY, payload).serialize(mask=False))

    return run


def wsproto_encoder() -> Encode:
    from wsproto.frame_protocol import FrameProtocol

    def run(payload: bytes, count: int) -> None:
        protocol = FrameProtocol(client=False, extensions=[])
        write = NullTransport().write
        for _ in range(count):
            write(protocol.send_data(payload, fin=True))

    return run


def aiohttp_encoder() -> Encode:
    from aiohttp._websocket.writer import WebSocketWriter

    def run(payload: bytes, count: int) -> None:
        writer = WebSocketWriter(None, NullTransport(), use_mask=False)  # type: ignore[arg-type]
        write_frame = writer._write_websocket_frame
        for _ in range(count):
            write_frame(payload, 2, 0)

    return run


def picows_encoder() -> Encode:
    from picows import WSListener, WSMsgType

    def run(payload: bytes, count: int) -> None:
        async def main() -> None:
            protocol, transport = picows_server(WSListener())
            send, binary = protocol.transport.send, WSMsgType.BINARY
            for _ in range(count):
                send(binary, payload)
            transport.close()

        asyncio.run(main())

    return run


def contenders() -> tuple[dict[str, Decode], dict[str, Encode]]:
    decoders: dict[str, Decode] = {}
    encoders: dict[str, Encode] = {}
    for backend in _backends.available("frames"):
        name = f"haske-{backend}"
        decoders[name], encoders[name] = haske_decoder(backend), haske_encoder(backend)
    for name, make_decoder, make_encoder in [
        ("websockets", websockets_decoder, websockets_encoder),
        ("wsproto", wsproto_decoder, wsproto_encoder),
        ("aiohttp", aiohttp_decoder, aiohttp_encoder),
        ("picows", picows_decoder, picows_encoder),
    ]:
        try:
            decoders[name], encoders[name] = make_decoder(), make_encoder()
        except ImportError as error:
            print(f"skipping {name}: {error}", file=sys.stderr)
    return decoders, encoders


def decode_work(decode: Decode, size: int) -> Callable[[], int]:
    """One timed unit: decode the whole stream of ``size``-byte frames, checking the count."""
    data, count = client_stream(size)
    bounds = [(start, min(start + CHUNK, len(data))) for start in range(0, len(data), CHUNK)]
    seen = decode(data, bounds)
    if seen != count:
        raise RuntimeError(f"{decode.__qualname__}: {seen} frames of {size} bytes, not {count}")
    return lambda: decode(data, bounds)


def encode_work(encode: Encode, size: int) -> Callable[[], int]:
    """One timed unit: about 1 MiB of ``size``-byte frames, and never fewer than 64."""
    payload = os.urandom(size)
    count = max(64, (1 << 20) // (size + 14))

    def work() -> int:
        encode(payload, count)
        return count

    return work


def best_rates(
    works: dict[str, Callable[[], int]], duration: float, repeats: int
) -> dict[str, float]:
    """Items per second for each, the best of ``repeats`` timings of at least ``duration``.

    The contenders take turns, so a burst of load from elsewhere hits them alike.
    """
    best = dict.fromkeys(works, 0.0)
    for _ in range(repeats):
        for name, work in works.items():
            items, elapsed = 0, 0.0
            while elapsed < duration:
                started = time.perf_counter()
                items += work()
                elapsed += time.perf_counter() - started
            best[name] = max(best[name], items / elapsed)
    return best


def format_rate(rate: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f}{unit}"
    return f"{rate:.1f}"


def print_table(title: str, rates: dict[str, dict[str, float]], sizes: list[str]) -> None:
    names = list(next(iter(rates.values())))
    reference = "haske-cython" if "haske-cython" in names else names[0]
    print(f"\n{title} (frames/s; x = {reference} / library)")
    header = ["size", *names]
    rows = [header]
    for size in sizes:
        row = [size]
        for name in names:
            rate = rates[size][name]
            cell = format_rate(rate)
            if name != reference:
                cell += f" ({rates[size][reference] / rate:.2f}x)"
            row.append(cell)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    parser.add_argument("--sizes", help="comma-separated payload sizes in bytes (default: all)")
    parser.add_argument("--only", help="comma-separated libraries to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    duration, repeats = (0.05, 3) if args.quick else (0.3, 5)
    sizes = {f"{int(s)} B": int(s) for s in args.sizes.split(",")} if args.sizes else SIZES
    decoders, encoders = contenders()
    if args.only:
        keep = set(args.only.split(",")) | {"haske-cython"}
        decoders = {k: v for k, v in decoders.items() if k in keep}
        encoders = {k: v for k, v in encoders.items() if k in keep}
    print(
        f"Python {sys.version.split()[0]}, frames backends built: {_backends.available('frames')}"
    )
    decode_rates = {
        label: best_rates(
            {name: decode_work(run, size) for name, run in decoders.items()}, duration, repeats
        )
        for label, size in sizes.items()
    }
    print_table("Decode masked client frames, 64 KiB reads", decode_rates, list(sizes))
    encode_rates = {
        label: best_rates(
            {name: encode_work(run, size) for name, run in encoders.items()}, duration, repeats
        )
        for label, size in sizes.items()
    }
    print_table("Encode server frames, written to a transport", encode_rates, list(sizes))
    if args.json:
        figures = {"sizes": sizes, "decode": decode_rates, "encode": encode_rates}
        args.json.write_text(json.dumps({"unit": "frames/s", **figures}, indent=1))


if __name__ == "__main__":
    main()
