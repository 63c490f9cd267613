"""Opening handshake throughput: Haske's Rust and Python twins against the websockets library.

    python bench/bench_handshake.py [--quick]

One handshake is what a server does with a browser's upgrade request: parse the request head,
validate it (RFC 6455 §4.2.1, subprotocol and extension offers included) and build the
``101 Switching Protocols`` response bytes. For websockets that is ``ServerProtocol`` fed the
request bytes, then ``accept()``, ``send_response()`` and ``data_to_send()``.

Prints handshakes/s per implementation and the ratio Haske-Rust / that implementation: above
1.00 means Rust is faster. Each figure is the best of several timed runs, which filters out
brief noise from other processes but not a loaded machine; compare figures from the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from haske import _backends

REQUEST = (
    b"GET /chat?room=lobby HTTP/1.1\r\n"
    b"Host: localhost:8000\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:8000\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)
ACCEPT = b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"


def haske(module: ModuleType) -> Callable[[], bytes]:
    parse, validate, respond = module.parse_request, module.validate_request, module.build_response

    def handshake() -> bytes:
        request = parse(REQUEST)
        verdict = validate(request.method, request.http_version, request.headers)
        response: bytes = respond(verdict.accept)
        return response

    return handshake


def websockets_library() -> Callable[[], bytes]:
    from websockets.server import ServerProtocol

    def handshake() -> bytes:
        protocol = ServerProtocol()
        protocol.receive_data(REQUEST)
        request = protocol.events_received()[0]
        protocol.send_response(protocol.accept(request))  # type: ignore[arg-type]
        return b"".join(protocol.data_to_send())

    return handshake


def best_rate(handshake: Callable[[], bytes], count: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            handshake()
        best = min(best, time.perf_counter() - start)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    count, runs = (2_000, 3) if args.quick else (20_000, 5)

    contenders: dict[str, Callable[[], bytes]] = {}
    for backend in _backends.available("handshake"):
        contenders[f"haske-{backend}"] = haske(_backends.load("handshake", backend))
    contenders["websockets"] = websockets_library()
    for name, handshake in contenders.items():
        response = handshake()
        if not response.startswith(b"HTTP/1.1 101 ") or ACCEPT not in response:
            raise SystemExit(f"{name} did not accept the request: {response!r}")

    rates = {name: best_rate(handshake, count, runs) for name, handshake in contenders.items()}
    reference = rates.get("haske-rust")
    print(f"{'implementation':<16} {'handshakes/s':>14}  rust/this")
    for name, rate in rates.items():
        ratio = f"{reference / rate:9.2f}" if reference else "        -"
        print(f"{name:<16} {rate:>14,.0f}  {ratio}")
    if reference is None:
        print("haske._rust is not built: no ratios")
    if args.json:
        args.json.write_text(json.dumps({"unit": "handshakes/s", "rates": rates}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
