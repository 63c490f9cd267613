"""Echo round trips over 127.0.0.1: Haske's uvicorn protocol against the alternatives.

One picows client sends a binary message, waits for the echo, and repeats. Client and servers
are pinned to the same CPU: on small VMs a cross-CPU wakeup costs tens of microseconds and would
hide the differences between servers. Every server runs for the whole benchmark; the rounds
visit them in turn and each cell keeps its best round, so that load from other processes, which
only ever slows a round down, is filtered out rather than pinned on one server.

Every uvicorn server runs the same Starlette endpoint; ``haske-app`` runs the same echo written
with Haske's own route and socket wrapper (``@app.websocket``, ``async for message in ws``), on
Haske's protocol.

    python bench/bench_echo.py           # 64 B, 1 KiB, 64 KiB; 7 rounds of 0.5 s per cell
    python bench/bench_echo.py --quick   # 3 rounds of 0.3 s per cell
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import picows
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _servers import KINDS, launch, stop

SIZES = {"64 B": 64, "1 KiB": 1024, "64 KiB": 64 * 1024}


class EchoClient(picows.WSListener):
    """Sends the next message from the callback that receives the echo: no task switches."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = 0
        self.parts = 0
        self.count = 0
        self.deadline = 0.0
        self.done: asyncio.Future[int] | None = None

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport

    def start(self, seconds: float) -> asyncio.Future[int]:
        self.count = 0
        self.deadline = time.perf_counter() + seconds
        self.done = asyncio.get_running_loop().create_future()
        self.transport.send(picows.WSMsgType.BINARY, self.payload)
        return self.done

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type not in (picows.WSMsgType.BINARY, picows.WSMsgType.CONTINUATION):
            return
        self.received += frame.payload_size
        if not frame.fin:
            return
        if self.received != len(self.payload):
            raise RuntimeError(f"echo of {self.received} bytes for {len(self.payload)}")
        self.received = 0
        self.count += 1
        if self.count & 15 == 0 and time.perf_counter() >= self.deadline:
            assert self.done is not None
            self.done.set_result(self.count)
        else:
            transport.send(picows.WSMsgType.BINARY, self.payload)


async def measure(port: int, size: int, seconds: float) -> float:
    """Round trips per second."""
    client = EchoClient(os.urandom(size))
    transport, _ = await picows.ws_connect(
        lambda: client, f"ws://127.0.0.1:{port}/echo", max_frame_size=64 * 1024 * 1024
    )
    try:
        await client.start(min(0.3, seconds / 3))  # warm-up
        started = time.perf_counter()
        count = await client.start(seconds)
        return count / (time.perf_counter() - started)
    finally:
        # A close handshake rather than a dropped connection, which some servers log as an error.
        transport.send_close(picows.WSCloseCode.OK)
        try:
            await asyncio.wait_for(transport.wait_disconnected(), 2)
        except asyncio.TimeoutError:
            transport.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s per cell")
    parser.add_argument("--rounds", type=int, help="rounds per cell")
    parser.add_argument("--seconds", type=float, help="seconds per cell and round")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin client and servers to")
    parser.add_argument("--servers", nargs="*", choices=KINDS, default=KINDS)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    seconds = args.seconds or (0.3 if args.quick else 0.5)
    os.sched_setaffinity(0, {args.cpu})

    results: dict[str, dict[str, float]] = {
        kind: dict.fromkeys(SIZES, 0.0) for kind in args.servers
    }
    servers = {}
    try:
        for kind in args.servers:
            servers[kind] = launch(kind, args.cpu)
        for round_number in range(rounds):
            for kind, (_, port) in servers.items():
                for label, size in SIZES.items():
                    rate = uvloop.run(measure(port, size, seconds))
                    results[kind][label] = max(results[kind][label], rate)
            print(f"  round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        for process, _ in servers.values():
            stop(process)

    print(
        f"\nEcho round trips per second, best of {rounds} rounds of {seconds:g} s "
        f"(picows client, CPU {args.cpu})\n"
    )
    header = f"{'server':<28}" + "".join(f"{label:>12}{'haske/x':>9}" for label in SIZES)
    print(header)
    print("-" * len(header))
    haske = results.get("haske")
    for kind, row in results.items():
        cells = ""
        for label in SIZES:
            ratio = f"{haske[label] / row[label]:.2f}" if haske else "-"
            cells += f"{row[label]:>12,.0f}{ratio:>9}"
        print(f"{kind:<28}{cells}")
    if haske:
        print("\nTargets:")
        for kind, label, target in (
            ("uvicorn-websockets", "64 B", 2.2),
            ("uvicorn-websockets-sansio", "64 B", 1.5),
            ("aiohttp", "64 KiB", 1.0),
        ):
            if kind in results:
                measured = haske[label] / results[kind][label]
                verdict = "met" if measured >= target else "NOT met"
                print(f"  haske / {kind} at {label}: {measured:.2f} (target {target}) {verdict}")
    if args.json:
        figures = {"unit": "round trips/s", "rounds": rounds, "seconds": seconds, "cpu": args.cpu}
        args.json.write_text(json.dumps({**figures, "sizes": SIZES, "results": results}, indent=1))


if __name__ == "__main__":
    main()
