"""Turn a results file of run_all.py into Markdown tables and PNG plots.

    python bench/report.py [bench/results/DATE.json]    # default: the newest results file

Draws the plots into docs/img/ and rewrites the generated part of docs/performance.md, the lines
from ``<!-- results`` to ``<!-- /results -->``: the machine, one table per benchmark with the
figures and the ratio Haske / that library (above 1.00 means Haske is faster), the targets, met
or not, and the plots. Prints the targets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _plots

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOC = ROOT / "docs" / "performance.md"
IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- results", "<!-- /results -->"
MEMORY_LIMIT_KIB = 6.0


@dataclass(frozen=True)
class Target:
    """A figure Haske is measured against: a ratio to reach, or an absolute figure to stay under.

    ``ours`` and ``theirs`` are key paths into the benchmarks' figures; without ``theirs`` the
    figure at ``ours`` itself must be at most ``goal``. With ``at_most`` the ratio must stay at
    or under ``goal`` (a latency no worse than a peer's).
    """

    text: str
    goal: float
    ours: tuple[str, ...]
    theirs: tuple[str, ...] | None = None
    at_most: bool = False

    def measure(self, benches: dict[str, Any]) -> float | None:
        ours = figure(benches, self.ours)
        if self.theirs is None:
            return ours
        theirs = figure(benches, self.theirs)
        return None if ours is None or not theirs else ours / theirs

    def met(self, measured: float) -> bool:
        if self.theirs is None or self.at_most:
            return measured <= self.goal
        return measured >= self.goal

    def goal_text(self) -> str:
        if self.theirs is None:
            return f"≤ {self.goal:g} KiB"
        return f"{'≤' if self.at_most else '≥'} {self.goal:.1f}×"

    def measured_text(self, measured: float) -> str:
        return f"{measured:.2f} KiB" if self.theirs is None else f"{measured:.2f}×"


def codec_path(step: str, size: str, name: str) -> tuple[str, ...]:
    return ("codec", step, size, name)


def echo_path(server: str, size: str) -> tuple[str, ...]:
    return ("echo", "results", server, size)


def fanout_path(server: str, round_: str = "fan-out", figure: str = "rate") -> tuple[str, ...]:
    return ("fanout", "fanout", "1000", server, round_, figure)


TARGETS = [
    Target(
        "Codec: decode 16 B vs picows",
        1.0,
        codec_path("decode", "16 B", "haske-cython"),
        codec_path("decode", "16 B", "picows"),
    ),
    Target(
        "Codec: decode 64 KiB vs aiohttp's C reader",
        1.0,
        codec_path("decode", "64 KiB", "haske-cython"),
        codec_path("decode", "64 KiB", "aiohttp"),
    ),
    Target(
        "Codec: encode 16 B vs picows",
        1.0,
        codec_path("encode", "16 B", "haske-cython"),
        codec_path("encode", "16 B", "picows"),
    ),
    Target(
        "Echo: 64 B vs uvicorn ws=websockets",
        2.2,
        echo_path("haske", "64 B"),
        echo_path("uvicorn-websockets", "64 B"),
    ),
    Target(
        "Echo: 64 B vs uvicorn ws=websockets-sansio",
        1.5,
        echo_path("haske", "64 B"),
        echo_path("uvicorn-websockets-sansio", "64 B"),
    ),
    Target(
        "Echo: 64 KiB vs aiohttp",
        1.0,
        echo_path("haske", "64 KiB"),
        echo_path("aiohttp", "64 KiB"),
    ),
    Target(
        "Handshake: Rust vs its Python twin",
        3.0,
        ("handshake", "rates", "haske-rust"),
        ("handshake", "rates", "haske-python"),
    ),
    Target(
        "Handshake: Rust vs websockets",
        3.0,
        ("handshake", "rates", "haske-rust"),
        ("handshake", "rates", "websockets"),
    ),
    Target(
        "Manager: fan-out to 10,000 in-memory writers, Rust vs Python",
        3.0,
        ("manager", "results", "10000", "rust"),
        ("manager", "results", "10000", "python"),
    ),
    Target(
        "Fan-out: N = 1000 real clients vs websockets.broadcast()",
        1.8,
        fanout_path("haske"),
        fanout_path("websockets"),
    ),
    Target(
        "Fan-out: N = 1000 real clients vs picows",
        1.0,
        fanout_path("haske"),
        fanout_path("picows"),
    ),
    Target(
        "Fan-out: N = 1000 bursts vs the raw one-send-per-message ceiling",
        1.5,
        fanout_path("haske", "bursts"),
        fanout_path("raw"),
    ),
    Target(
        "Fan-out: N = 1000 bursts, p99 latency vs picows'",
        1.0,
        fanout_path("haske", "bursts", "p99_ms"),
        fanout_path("picows", "bursts", "p99_ms"),
        at_most=True,
    ),
    Target(
        "Fan-out: N = 1000 on uvicorn's websockets protocol vs the naive Starlette loop",
        1.2,
        fanout_path("haske-asgi"),
        fanout_path("naive"),
    ),
    Target(
        "Memory per idle connection (Haske)",
        MEMORY_LIMIT_KIB,
        ("fanout", "memory", "kib_per_connection", "haske"),
    ),
]


def figure(data: Any, path: tuple[str, ...]) -> float | None:
    """The figure at a key path, or None where a key is missing (a benchmark not run)."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, int | float) else None


# -- Markdown -----------------------------------------------------------------------------------


def rate(value: float) -> str:
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.1f}"


def versus(value: float, reference: float | None, is_reference: bool) -> str:
    """A rate with the reference's ratio to it: ``1.91M (11.09×)``."""
    if is_reference:
        return f"**{rate(value)}**"
    if reference is None or not value:
        return rate(value)
    return f"{rate(value)} ({reference / value:.2f}×)"


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` has an l or r per column, by default l and then all r."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if side == "r" else "---" for side in align]
    return ["| " + " | ".join(cells) + " |" for cells in [header, rule, *rows]] + [""]


def codec_tables(figures: dict[str, Any]) -> list[str]:
    lines = []
    for step, title in (
        ("decode", "Decode masked client frames, 64 KiB reads"),
        ("encode", "Encode server frames, written to a transport"),
    ):
        rates: dict[str, dict[str, float]] = figures[step]
        names = list(next(iter(rates.values())))
        reference = "haske-cython" if "haske-cython" in names else names[0]
        rows = [
            [size, *(versus(row[n], row[reference], n == reference) for n in names)]
            for size, row in rates.items()
        ]
        lines += [f"**{title}**, frames/s (× = {reference} ÷ library)", ""]
        lines += table(["size", *names], rows)
    return lines


def echo_tables(figures: dict[str, Any]) -> list[str]:
    results: dict[str, dict[str, float]] = figures["results"]
    haske = results.get("haske", {})
    sizes = list(figures["sizes"])
    rows = [
        [kind, *(versus(row[s], haske.get(s), kind == "haske") for s in sizes)]
        for kind, row in results.items()
    ]
    title = (
        f"**Echo round trips/s**, best of {figures['rounds']} rounds of {figures['seconds']:g} s, "
        f"picows client, all pinned to CPU {figures['cpu']} (× = haske ÷ server)"
    )
    return [title, "", *table(["server", *sizes], rows)]


def handshake_tables(figures: dict[str, Any]) -> list[str]:
    rates: dict[str, float] = figures["rates"]
    reference = rates.get("haske-rust")
    rows = [[name, versus(value, reference, name == "haske-rust")] for name, value in rates.items()]
    lines = ["**Opening handshakes/s** (× = haske-rust ÷ implementation)", ""]
    return lines + table(["implementation", "handshakes/s"], rows)


def manager_tables(figures: dict[str, Any]) -> list[str]:
    results: dict[str, dict[str, float]] = figures["results"]
    rows = []
    for members, rates in results.items():
        rust = rates.get("rust")
        for backend, value in rates.items():
            count = int(members)
            rows.append(
                [
                    f"{count:,}",
                    f"haske-{backend}",
                    versus(value, rust, backend == "rust"),
                    rate(value * count),
                ]
            )
    title = (
        f"**Broadcast manager**, one {figures['frame_bytes']}-byte frame to every in-memory "
        "writer (× = rust ÷ backend)"
    )
    header = ["writers", "backend", "fan-outs/s", "deliveries/s"]
    return [title, "", *table(header, rows, align="rlrr")]


def fanout_tables(figures: dict[str, Any]) -> list[str]:
    lines = []
    for clients, results in sorted(figures.get("fanout", {}).items(), key=lambda i: int(i[0])):
        haske = results.get("haske")
        rows = []
        for kind, rounds in results.items():
            row = [kind]
            for name in ("fan-out", "bursts"):
                result = rounds[name]
                reference = haske[name]["rate"] if haske else None
                mark = "" if result["complete"] else " (incomplete)"
                row += [
                    versus(result["rate"], reference, kind == "haske") + mark,
                    f"{result['p99_ms']:.1f}",
                ]
            rows.append(row)
        title = (
            f"**Fan-out to N = {int(clients):,} clients**, {figures['message_bytes']}-byte "
            f"messages, deliveries/s (× = haske ÷ server); bursts are {figures['burst']} "
            "broadcasts per loop turn"
        )
        lines += [title, "", *table(["server", "fan-out", "p99 ms", "bursts", "p99 ms"], rows)]
    memory = figures.get("memory")
    if memory:
        rows = [[kind, f"{kib:.2f}"] for kind, kib in memory["kib_per_connection"].items()]
        lines += [f"**Resident memory per idle connection**, {memory['clients']:,} clients", ""]
        lines += table(["server", "KiB per connection"], rows)
    return lines


def redis_tables(figures: dict[str, Any]) -> list[str]:
    results: dict[str, dict[str, dict[str, float]]] = figures["results"]
    haske = results.get("haske")
    reference = haske["throughput"]["rate"] if haske else None
    rows = []
    for kind, rounds in results.items():
        burst, paced = rounds["throughput"], rounds["paced"]
        rows.append(
            [
                kind,
                versus(burst["rate"], reference, kind == "haske"),
                f"{burst['p99_ms']:.1f}",
                f"{paced['p50_ms']:.1f}",
                f"{paced['p99_ms']:.1f}",
                # A straggler from one round can arrive in the next: only a shortfall is lost.
                f"{int(max(burst['lost'], 0) + max(paced['lost'], 0)):,}",
            ]
        )
    title = (
        f"**Fan-out over Redis**, 2 server processes × {figures['clients']:,} clients, "
        f"{figures['messages']} messages back to back, then paced at "
        f"{figures['paced_rate']:g} messages/s; deliveries/s (× = haske ÷ it)"
    )
    header = ["server", "deliveries/s", "p99 ms", "paced p50 ms", "paced p99 ms", "lost"]
    return [title, "", *table(header, rows)]


TABLES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "codec": codec_tables,
    "echo": echo_tables,
    "handshake": handshake_tables,
    "manager": manager_tables,
    "fanout": fanout_tables,
    "redis": redis_tables,
}
TITLES = {
    "codec": "Frame codec",
    "echo": "Echo round trips",
    "handshake": "Opening handshake",
    "manager": "Broadcast manager",
    "fanout": "Fan-out to real clients and memory",
    "redis": "Fan-out across processes over Redis",
}


def target_rows(benches: dict[str, Any]) -> list[list[str]]:
    rows = []
    for target in TARGETS:
        measured = target.measure(benches)
        if measured is None:
            rows.append([target.text, target.goal_text(), "-", "not measured"])
        else:
            verdict = "met" if target.met(measured) else "**not met**"
            rows.append([target.text, target.goal_text(), target.measured_text(measured), verdict])
    return rows


# -- the report ---------------------------------------------------------------------------------


def caption(results: dict[str, Any], quick: bool) -> str:
    machine = results["machine"]
    return (
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{results['date'][:10]}, {'--quick' if quick else 'full'} run"
    )


def plots(results: dict[str, Any], benches: dict[str, Any]) -> dict[str, list[Path]]:
    """Draw every plot the results allow, by benchmark."""
    IMG.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[Path]] = {}
    for name, figures in benches.items():
        text = caption(results, results["benches"][name]["quick"])
        if name == "codec":
            drawn[name] = [
                _plots.codec(figures, step, text, IMG / f"codec_{step}.png")
                for step in ("decode", "encode")
            ]
        elif name == "echo":
            drawn[name] = [_plots.echo(figures, text, IMG / "echo.png")]
        elif name == "handshake":
            drawn[name] = [_plots.handshake(figures, text, IMG / "handshake.png")]
        elif name == "manager":
            drawn[name] = [_plots.manager(figures, text, IMG / "manager.png")]
        elif name == "fanout":
            drawn[name] = []
            if figures.get("fanout"):
                drawn[name].append(_plots.fanout(figures, text, IMG / "fanout.png"))
            if figures.get("memory"):
                path = IMG / "memory.png"
                drawn[name].append(_plots.memory(figures, MEMORY_LIMIT_KIB, text, path))
        elif name == "redis":
            drawn[name] = [_plots.redis(figures, text, IMG / "redis.png")]
    return drawn


def markdown(results: dict[str, Any], source: Path, drawn: dict[str, list[Path]]) -> list[str]:
    machine = results["machine"]
    runs = results["benches"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    backends = ", ".join(f"{c} {b['backend']}" for c, b in machine["backends"].items())
    where = (
        f"Measured on {machine['cpu']} ({machine['cores']} cores), {machine['system']}, "
        f"Python {machine['python']}, on {results['date'][:10]}."
    )
    lines = [
        f"{BEGIN}: written by bench/report.py from {source.name}; edit that script, not this -->",
        "",
        where,
        f"Haske backends: {backends}. Libraries: {versions}.",
        "",
    ]
    lines += table(
        ["benchmark", "run", "started", "took", "status"],
        [
            [
                name,
                "--quick" if run["quick"] else "full",
                run["started"][11:16],
                f"{run['seconds']:.0f} s",
                run["status"],
            ]
            for name, run in runs.items()
        ],
        align="llrrl",
    )
    lines += ["### Targets", ""]
    benches = {name: run["figures"] for name, run in runs.items() if "figures" in run}
    lines += table(["target", "goal", "measured", "verdict"], target_rows(benches), "lrrl")
    for name, figures in benches.items():
        if name not in TABLES:
            lines += [f"### {name}", "", "Figures collected in the results file.", ""]
            continue
        lines += [f"### {TITLES[name]}", ""] + TABLES[name](figures)
        for path in drawn.get(name, []):
            lines += [f"![{path.stem.replace('_', ' ')}](img/{path.name})", ""]
    return lines + [END]


def update_doc(lines: list[str]) -> bool:
    """Replace the generated part of the doc; False when it has no such part."""
    if not DOC.exists():
        return False
    text = DOC.read_text().splitlines()
    starts = [i for i, line in enumerate(text) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(text) if line.startswith(END)]
    if not starts or not ends or ends[0] < starts[0]:
        return False
    DOC.write_text("\n".join(text[: starts[0]] + lines + text[ends[0] + 1 :]) + "\n")
    return True


def newest() -> Path:
    found = sorted((BENCH / "results").glob("*.json"))
    if not found:
        raise SystemExit("no results in bench/results/: run bench/run_all.py first")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="default: the newest results file")
    args = parser.parse_args(argv)
    source: Path = args.results or newest()
    results = json.loads(source.read_text())
    benches = {n: run["figures"] for n, run in results["benches"].items() if "figures" in run}
    drawn = plots(results, benches)
    lines = markdown(results, source, drawn)
    if update_doc(lines):
        count = sum(len(paths) for paths in drawn.values())
        print(f"updated {DOC.relative_to(ROOT)} and {count} plots in docs/img/")
    else:
        print("\n".join(lines))
        print(f"\n{DOC.relative_to(ROOT)} has no {BEGIN} ... {END} part: printed instead")
    print("\nTargets:")
    for text, goal, measured, verdict in target_rows(benches):
        print(f"  {verdict.strip('*'):<12} {measured:>10}  ({goal})  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
