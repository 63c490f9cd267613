"""Run the real Autobahn|Testsuite fuzzing client against Haske's protocol and judge its report.

python -m tests.conformance.autobahn [--wstest CMD] [--cases '1.*,9.*'] [--backend python]

Starts ``uvicorn tests.conformance.app:app --ws haske.server:WebSocketProtocol`` on a free port,
runs ``wstest -m fuzzingclient`` (``make autobahn`` installs it for Python 2.7) against it, and
prints the behaviours per category from the testsuite's ``index.json``. Exits 1 when any case
ends other than OK, INFORMATIONAL or UNIMPLEMENTED (NON-STRICT counts as a failure here).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cases import CATEGORIES

ACCEPTED = {"OK", "INFORMATIONAL", "UNIMPLEMENTED"}
# The harness's categories, and the two it leaves out (Haske declines permessage-deflate).
CATEGORY_TITLES = {
    **{str(number): title for number, (title, _) in CATEGORIES.items()},
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server did not listen on port {port} within {timeout:.0f} s")


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def summarize(results: dict[str, dict[str, object]]) -> tuple[str, list[str]]:
    """A table of behaviours per category, and the cases that did not pass."""
    by_category: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    failures = []
    for case_id in sorted(results, key=case_key):
        result = results[case_id]
        behaviour, close = str(result["behavior"]), str(result["behaviorClose"])
        by_category[case_id.split(".")[0]][behaviour] += 1
        if behaviour not in ACCEPTED or close not in ACCEPTED:
            failures.append(f"{case_id}: behaviour {behaviour}, close {close}, {result}")
    outcomes = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
    header = f"{'category':<28}{'cases':>6}" + "".join(f"{o:>15}" for o in outcomes)
    lines = [header, "-" * len(header)]
    total: collections.Counter[str] = collections.Counter()
    for category in sorted(by_category, key=int):
        counts = by_category[category]
        total.update(counts)
        title = f"{category} {CATEGORY_TITLES.get(category, '')}"[:27]
        row = "".join(f"{counts[o]:>15}" for o in outcomes)
        lines.append(f"{title:<28}{sum(counts.values()):>6}{row}")
    row = "".join(f"{total[o]:>15}" for o in outcomes)
    lines.append(f"{'total':<28}{sum(total.values()):>6}{row}")
    return "\n".join(lines), failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance.autobahn",
        description="Run the Autobahn|Testsuite fuzzing client against Haske's protocol.",
    )
    parser.add_argument(
        "--wstest",
        default=os.environ.get("WSTEST", ".autobahn/wstest"),
        help="the command that runs the testsuite's wstest (default: $WSTEST or "
        ".autobahn/wstest, which `make autobahn` installs)",
    )
    parser.add_argument("--cases", default="*", help="comma-separated case patterns (default: *)")
    parser.add_argument("--exclude", default="", help="comma-separated case patterns to skip")
    parser.add_argument("--backend", help="HASKE_BACKEND for the server (default: the fastest)")
    parser.add_argument(
        "--server-args",
        default="",
        help="more uvicorn options, e.g. '--loop asyncio --http h11'",
    )
    parser.add_argument("--outdir", help="where the testsuite writes its report (default: temp)")
    args = parser.parse_args(argv)

    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="haske-autobahn-"))
    port = free_port()
    env = dict(os.environ)
    if args.backend:
        env["HASKE_BACKEND"] = args.backend
    server_cmd = [
        sys.executable, "-m", "uvicorn", "tests.conformance.app:app",
        "--ws", "haske.server:WebSocketProtocol", "--port", str(port),
        "--log-level", "warning", *shlex.split(args.server_args),
    ]  # fmt: skip
    config = {
        "outdir": str(outdir),
        "servers": [{"agent": "haske", "url": f"ws://127.0.0.1:{port}"}],
        "cases": [c.strip() for c in args.cases.split(",") if c.strip()],
        "exclude-cases": [c.strip() for c in args.exclude.split(",") if c.strip()],
        "exclude-agent-cases": {},
    }
    spec = outdir / "fuzzingclient.json"
    outdir.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(config, indent=2))

    server = subprocess.Popen(server_cmd, env=env)
    try:
        wait_for_port(port, server)
        wstest = shlex.split(args.wstest)
        if os.sep in wstest[0]:  # it runs in the report directory
            wstest[0] = os.path.abspath(wstest[0])
        wstest += ["-m", "fuzzingclient", "-s", str(spec)]
        try:
            completed = subprocess.run(
                wstest, check=False, cwd=outdir, capture_output=True, timeout=3600
            )
        except FileNotFoundError:
            raise SystemExit(
                f"{args.wstest!r} not found: run `make autobahn` or pass --wstest"
            ) from None
        if completed.returncode != 0:
            sys.stderr.write(completed.stdout.decode(errors="replace")[-4000:])
            sys.stderr.write(completed.stderr.decode(errors="replace")[-4000:])
            raise SystemExit(f"wstest exited with {completed.returncode}")
    finally:
        server.terminate()
        server.wait(timeout=10)

    results = json.loads((outdir / "index.json").read_text())["haske"]
    table, failures = summarize(results)
    print(table)
    print(f"\nreport: {outdir / 'index.html'}")
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
