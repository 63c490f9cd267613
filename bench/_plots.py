"""The report's plots: one PNG per benchmark, drawn with matplotlib's Agg backend.

Every plot gives Haske the same orange (its compiled backends strong, its Python twins and ASGI
fallbacks light) and each other library one fixed colour, so they read alike from plot to plot.
Each carries a caption naming the machine and the date of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

# Chosen before pyplot is imported: no display is needed, and none is looked for.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

HASKE = "#e8590c"
HASKE_TWIN = "#f7b27a"
COLOURS = {
    "websockets": "#1f77b4",
    "uvicorn-websockets": "#6baed6",
    "uvicorn-websockets-sansio": "#08519c",
    "wsproto": "#2ca02c",
    "uvicorn-wsproto": "#74c476",
    "aiohttp": "#9467bd",
    "picows": "#d62728",
    "naive": "#8c564b",
    "broadcaster": "#e377c2",
    "uvicorn-default": "#17becf",
    "raw": "#7f7f7f",
    "channels-pubsub": "#bcbd22",
    "channels-redis": "#8c8c2a",
}
STRONG = {"haske", "haske-cython", "haske-rust"}


def colour(name: str) -> str:
    if name in STRONG:
        return HASKE
    if name.startswith("haske"):
        return HASKE_TWIN
    return COLOURS.get(name, "#bbbbbb")


def si(value: float, _position: object = None) -> str:
    """1234567 -> 1.2M: short enough for ticks and bar labels."""
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def milliseconds(value: float) -> str:
    return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.3g} ms"


def finish(fig: Figure, caption: str, path: Path, top: float = 1.0) -> Path:
    """Caption the figure, lay it out below ``top`` (a fraction of its height) and save it."""
    fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, top))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grouped_bars(ax: Axes, groups: list[str], series: dict[str, list[float]]) -> None:
    """One cluster of bars per group, one bar per series, in the series' order."""
    width = 0.8 / len(series)
    for index, (name, values) in enumerate(series.items()):
        offsets = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(offsets, values, width, label=name, color=colour(name), edgecolor="white")
    ax.set_xticks(range(len(groups)), groups)
    ax.yaxis.set_major_formatter(FuncFormatter(si))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def horizontal_bars(ax: Axes, values: dict[str, float], label: Callable[[str, float], str]) -> None:
    """One bar per name, the first at the top, each labelled at its end."""
    names = list(values)[::-1]
    bars = ax.barh(names, [values[n] for n in names], color=[colour(n) for n in names])
    ax.bar_label(bars, [label(n, values[n]) for n in names], padding=3, fontsize=8)
    ax.xaxis.set_major_formatter(FuncFormatter(si))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.margins(x=0.22)


def codec(figures: dict[str, Any], step: str, caption: str, path: Path) -> Path:
    table: dict[str, dict[str, float]] = figures[step]
    sizes = list(table)
    names = list(table[sizes[0]])
    fig, ax = plt.subplots(figsize=(11, 5.2))
    grouped_bars(ax, sizes, {name: [table[size][name] for size in sizes] for name in names})
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(si))
    what = "Decoding masked client frames" if step == "decode" else "Encoding server frames"
    ax.set_title(f"Frame codec: {what} (higher is better)")
    ax.set_xlabel("payload size")
    ax.set_ylabel("frames per second (log scale)")
    ax.legend(ncols=3, fontsize=8)
    return finish(fig, caption, path)


def echo(figures: dict[str, Any], caption: str, path: Path) -> Path:
    results: dict[str, dict[str, float]] = figures["results"]
    sizes = list(figures["sizes"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(13, 4.6), sharey=True)
    haske = results.get("haske")
    for ax, size in zip(axes, sizes, strict=True):

        def label(name: str, value: float, size: str = size) -> str:
            if haske is None or name == "haske":
                return si(value)
            return f"{si(value)}  (haske ÷ it: {haske[size] / value:.2f}×)"

        horizontal_bars(ax, {kind: row[size] for kind, row in results.items()}, label)
        ax.set_title(f"{size} messages")
        ax.set_xlabel("round trips per second")
    fig.suptitle("Echo round trips through each server, one client (higher is better)")
    return finish(fig, caption, path)


def handshake(figures: dict[str, Any], caption: str, path: Path) -> Path:
    rates: dict[str, float] = figures["rates"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    reference = rates.get("haske-rust")

    def label(name: str, value: float) -> str:
        if reference is None or name == "haske-rust":
            return si(value)
        return f"{si(value)}  (rust ÷ it: {reference / value:.2f}×)"

    horizontal_bars(ax, rates, label)
    ax.set_title("Opening handshake: parse, validate, build the 101 (higher is better)")
    ax.set_xlabel("handshakes per second")
    return finish(fig, caption, path)


def manager(figures: dict[str, Any], caption: str, path: Path) -> Path:
    results: dict[str, dict[str, float]] = figures["results"]
    members = list(results)
    backends = list(results[members[0]])
    series = {
        f"haske-{backend}": [results[m][backend] * int(m) for m in members] for backend in backends
    }
    fig, ax = plt.subplots(figsize=(8, 4.4))
    grouped_bars(ax, [f"{int(m):,} writers" for m in members], series)
    if "rust" in backends and "python" in backends:
        for index, m in enumerate(members):
            speedup = results[m]["rust"] / results[m]["python"]
            top = max(values[index] for values in series.values())
            ax.annotate(
                f"rust ÷ python: {speedup:.2f}×",
                (index, top),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
            )
    ax.margins(y=0.12)
    ax.set_title("Broadcast manager: one frame to every in-memory writer (higher is better)")
    ax.set_xlabel("channel members")
    ax.set_ylabel("deliveries per second")
    ax.legend(fontsize=8)
    return finish(fig, caption, path)


def fanout(figures: dict[str, Any], caption: str, path: Path) -> Path:
    by_clients: dict[str, dict[str, dict[str, dict[str, float]]]] = figures["fanout"]
    clients = sorted(by_clients, key=int)
    kinds = list(by_clients[clients[0]])
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4), sharex=True)
    for row, (round_name, title) in enumerate(
        [("fan-out", "one broadcast per loop turn"), ("bursts", "bursts of broadcasts")]
    ):
        for column, (key, unit) in enumerate([("rate", "deliveries/s"), ("p99_ms", "p99 ms")]):
            ax = axes[row][column]
            for kind in kinds:
                points = [(int(n), by_clients[n][kind][round_name][key]) for n in clients]
                ax.plot(
                    *zip(*points, strict=True),
                    marker="o",
                    label=kind,
                    color=colour(kind),
                    linewidth=2.5 if kind in STRONG else 1.5,
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([int(n) for n in clients], [f"{int(n):,}" for n in clients])
            ax.minorticks_off()
            # A range of less than a decade would get one labelled tick, or none, per decade.
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(si))
            ax.grid(alpha=0.3)
            better = "higher" if key == "rate" else "lower"
            ax.set_title(f"{unit}, {title} ({better} is better)", fontsize=10)
            ax.set_ylabel(unit)
            if row == 1:
                ax.set_xlabel("connected clients (N)")
    fig.suptitle(
        f"Fan-out of {figures['message_bytes']}-byte messages to N real clients: "
        "delivery rate and p99 delay"
    )
    # One legend for the four panels, under the title, where it hides no line.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncols=len(kinds))
    return finish(fig, caption, path, top=0.925)


def memory(figures: dict[str, Any], limit: float, caption: str, path: Path) -> Path:
    kib: dict[str, float] = figures["memory"]["kib_per_connection"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    horizontal_bars(ax, kib, lambda name, value: f"{value:.2f} KiB")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.axvline(limit, color=HASKE, linestyle="--", linewidth=1)
    ax.annotate(
        f" Haske target ≤ {limit:g} KiB",
        (limit, 1.0),
        xycoords=("data", "axes fraction"),
        va="bottom",
        fontsize=8,
        color=HASKE,
    )
    ax.set_title(
        f"Resident memory per idle connection, {figures['memory']['clients']:,} clients "
        "(lower is better)",
        pad=16,
    )
    ax.set_xlabel("KiB per connection")
    return finish(fig, caption, path)


def redis(figures: dict[str, Any], caption: str, path: Path) -> Path:
    results: dict[str, dict[str, dict[str, float]]] = figures["results"]
    haske = results.get("haske")
    fig, (rate_ax, delay_ax) = plt.subplots(1, 2, figsize=(12, 3.8))

    def rate_label(name: str, value: float) -> str:
        lost = int(results[name]["throughput"]["lost"])
        text = si(value) + (f", {lost:,} lost" if lost > 0 else "")
        if haske is None or name == "haske":
            return text
        return f"{text}  (haske ÷ it: {haske['throughput']['rate'] / value:.2f}×)"

    def delay_label(name: str, value: float) -> str:
        lost = int(results[name]["paced"]["lost"])
        return milliseconds(value) + (f", {lost:,} lost" if lost > 0 else "")

    rates = {kind: rounds["throughput"]["rate"] for kind, rounds in results.items()}
    horizontal_bars(rate_ax, rates, rate_label)
    rate_ax.set_title("Back to back: deliveries per second (higher is better)", fontsize=10)
    rate_ax.set_xlabel("deliveries per second")
    delays = {kind: rounds["paced"]["p99_ms"] for kind, rounds in results.items()}
    horizontal_bars(delay_ax, delays, delay_label)
    # Delays span milliseconds to tens of seconds: on a linear axis the short ones vanish.
    delay_ax.set_xscale("log")
    delay_ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: milliseconds(value)))
    delay_ax.set_xlim(right=max(delays.values()) * 20)
    delay_ax.set_title(
        f"Paced at {figures['paced_rate']:g} messages/s: p99 delay (lower is better)", fontsize=10
    )
    delay_ax.set_xlabel("p99 delay from broadcast to arrival (log scale)")
    fig.suptitle(
        f"Cross-process fan-out over Redis: 2 server processes × {figures['clients']:,} clients"
    )
    return finish(fig, caption, path)
