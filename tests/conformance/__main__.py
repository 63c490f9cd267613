"""Run the conformance cases against any echo endpoint and print a per-category summary.

python -m tests.conformance ws://127.0.0.1:9001/ [--cases '1.*,6.4.*'] [--exclude '9.*']
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys
import textwrap
from collections.abc import Sequence

from .cases import CASES, CATEGORIES
from .runner import FAILED, INFORMATIONAL, NON_STRICT, OK, Case, Result, run_case

OUTCOMES = (OK, NON_STRICT, INFORMATIONAL, FAILED)


def matches(case: Case, patterns: str) -> bool:
    return any(fnmatch.fnmatchcase(case.id, p.strip()) for p in patterns.split(",") if p.strip())


def summary(results: Sequence[Result]) -> str:
    """A table of cases run and outcomes per category, with a total row."""
    header = f"{'category':<24}{'cases':>7}" + "".join(f"{o:>15}" for o in OUTCOMES)
    lines = [header, "-" * len(header)]
    rows = [
        (f"{n} {title}", [r for r in results if r.case.category == n])
        for n, (title, _) in CATEGORIES.items()
    ]
    rows.append(("total", list(results)))
    for label, group in rows:
        if not group:
            continue
        counts = "".join(f"{sum(r.outcome == o for r in group):>15}" for o in OUTCOMES)
        lines.append(f"{label:<24}{len(group):>7}{counts}")
    return "\n".join(lines)


async def run_all(url: str, cases: Sequence[Case], quiet: bool) -> list[Result]:
    results = []
    for case in cases:
        result = await run_case(url, case)
        results.append(result)
        if quiet:
            continue
        print(f"{case.id:<9}{result.outcome:<15}{result.duration:8.3f} s", flush=True)
        if result.outcome != OK:
            print(textwrap.indent(result.explain(), "    "), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance",
        description="Autobahn-style RFC 6455 conformance run against a WebSocket echo endpoint.",
    )
    parser.add_argument("url", help="ws:// URL of an endpoint that echoes every message")
    parser.add_argument("--cases", default="*", help="comma-separated case patterns (default: *)")
    parser.add_argument("--exclude", default="", help="comma-separated case patterns to skip")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if matches(c, args.cases) and not matches(c, args.exclude)]
    if not cases:
        parser.error("no case matches --cases/--exclude")
    results = asyncio.run(run_all(args.url, cases, args.quiet))
    print()
    print(summary(results))
    return 1 if any(r.outcome == FAILED for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
