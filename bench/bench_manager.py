"""Broadcast fan-out throughput: Haske's Rust BroadcastManager against its Python twin.

    python bench/bench_manager.py [--quick]

One fan-out hands one pre-encoded 100-byte frame to every member of a channel. Each member's
writer is the bound ``append`` of its own ``collections.deque(maxlen=1)``: an in-memory writer
that costs about what a real one does to call, so the figure is the manager's own overhead.
Half the writers are native (they get the frame), half get the message, as in a mixed server.

Prints fan-outs/s and member deliveries/s per backend and member count, and the ratio
Rust / Python: above 1.00 means Rust is faster. Each figure is the best of several timed runs,
which filters out brief noise from other processes but not a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from haske import _backends

FRAME = b"\x81\x62" + b"x" * 98
MESSAGE = "x" * 98
MEMBER_COUNTS = (1_000, 10_000)


def build(module: ModuleType, members: int) -> tuple[Any, list[deque[Any]]]:
    manager = module.BroadcastManager()
    manager.create_channel("room")
    queues: list[deque[Any]] = []
    for conn_id in range(members):
        queue: deque[Any] = deque(maxlen=1)
        queues.append(queue)
        manager.add_connection(conn_id, queue.append, native=conn_id % 2 == 0)
        manager.join(conn_id, "room")
    return manager, queues


def best_rate(manager: Any, members: int, count: int, runs: int) -> float:
    fanout = manager.fanout
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            delivered, _, _ = fanout(FRAME, "room", message=MESSAGE)
        best = min(best, time.perf_counter() - start)
        if delivered != members:
            raise SystemExit(f"fan-out reached {delivered} of {members} members")
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    work, runs = (200_000, 3) if args.quick else (2_000_000, 5)

    backends = _backends.available("broadcast")
    print(f"{'backend':<8} {'members':>8} {'fan-outs/s':>11} {'deliveries/s':>14}  rust/this")
    results: dict[int, dict[str, float]] = {}
    for members in MEMBER_COUNTS:
        rates = results[members] = {}
        for backend in backends:
            manager, queues = build(_backends.load("broadcast", backend), members)
            rates[backend] = best_rate(manager, members, max(1, work // members), runs)
            if queues[0][0] != FRAME or queues[1][0] != MESSAGE:
                raise SystemExit(f"{backend} delivered the wrong payloads")
        for backend, rate in rates.items():
            ratio = f"{rates['rust'] / rate:9.2f}" if "rust" in rates else "        -"
            print(f"{backend:<8} {members:>8,} {rate:>11,.1f} {rate * members:>14,.0f}  {ratio}")
    if "rust" not in backends:
        print("haske._rust is not built: no ratios")
    if args.json:
        figures = {"unit": "fan-outs/s", "frame_bytes": len(FRAME), "results": results}
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
