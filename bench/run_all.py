"""Run every benchmark in bench/, one after the other, then write the report.

    python bench/run_all.py [--quick] [--only codec,echo]

Each ``bench_*.py`` runs in its own process and prints its table as usual; its figures, written
as JSON, are gathered with a description of the machine into ``bench/results/<date>.json``.
A later run on the same day replaces the benchmarks it runs and keeps the others, so one slow
benchmark can be run again alone. ``bench/report.py`` then turns that file into the tables and
plots of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
# Quick, in-process benchmarks first: a mistake in the setup shows before the long ones start.
ORDER = ["codec", "handshake", "manager", "echo", "fanout", "redis"]
LIBRARIES = [
    "websockets",
    "wsproto",
    "aiohttp",
    "picows",
    "uvicorn",
    "uvloop",
    "starlette",
    "broadcaster",
    "channels",
    "channels-redis",
]


def discover() -> dict[str, Path]:
    """Every bench_NAME.py by NAME, in ORDER and then alphabetically."""
    found = {path.stem.removeprefix("bench_"): path for path in BENCH.glob("bench_*.py")}
    rank = {name: index for index, name in enumerate(ORDER)}
    return {name: found[name] for name in sorted(found, key=lambda n: (rank.get(n, len(ORDER)), n))}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code: CPU, cores, Python, libraries, backends."""
    sys.path.insert(0, str(ROOT))
    from haske import _backends, _version

    backends = {
        component: {"backend": found["backend"], "build": found["build"]}
        for component, found in _backends.report().items()
    }
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "backends": backends,
        "versions": {"haske": _version.__version__, **{name: version(name) for name in LIBRARIES}},
    }


def writes_json(script: Path) -> bool:
    """Whether the script takes ``--json PATH`` (a new one may only print its table)."""
    usage = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return "--json" in usage.stdout


def run(name: str, script: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark, its output going to the terminal, and return what it measured."""
    print(f"\n==== {name}: {script.relative_to(ROOT)}{' --quick' if quick else ''}", flush=True)
    entry: dict[str, Any] = {"quick": quick, "started": datetime.now().astimezone().isoformat()}
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / f"{name}.json"
        args = [sys.executable, str(script), *(["--quick"] if quick else [])]
        json_output = writes_json(script)
        if json_output:
            args += ["--json", str(output)]
        started = time.monotonic()
        status = subprocess.run(args, cwd=ROOT, check=False).returncode
        entry["seconds"] = round(time.monotonic() - started, 1)
        if status != 0:
            entry["status"] = f"failed with exit status {status}"
        elif not json_output:
            entry["status"] = "ran, but has no --json output to collect"
        elif not output.exists():
            entry["status"] = "wrote no JSON"
        else:
            entry["status"] = "ok"
            entry["figures"] = json.loads(output.read_text())
    print(f"==== {name}: {entry['status']} in {entry['seconds']} s", flush=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", help="comma-separated benchmarks, e.g. codec,echo")
    parser.add_argument("--no-report", action="store_true", help="collect only, skip the report")
    args = parser.parse_args()
    scripts = discover()
    if args.only:
        wanted = args.only.split(",")
        unknown = [name for name in wanted if name not in scripts]
        if unknown:
            parser.error(f"no such benchmark: {', '.join(unknown)} (have {', '.join(scripts)})")
        scripts = {name: scripts[name] for name in wanted}

    RESULTS.mkdir(exist_ok=True)
    now = datetime.now().astimezone()
    path = RESULTS / f"{now:%Y-%m-%d}.json"
    results = json.loads(path.read_text()) if path.exists() else {"benches": {}}
    results.update(date=now.isoformat(timespec="seconds"), machine=machine())
    for name, script in scripts.items():
        results["benches"][name] = run(name, script, args.quick)
        # Saved after each benchmark, so an interrupted run keeps what it measured.
        path.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {path.relative_to(ROOT)}")

    failed = [name for name in scripts if results["benches"][name]["status"] != "ok"]
    if not args.no_report:
        import report

        report.main([str(path)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
