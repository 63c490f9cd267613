"""Command line: ``python -m haske backends``."""

from __future__ import annotations

import argparse

from haske._backends import backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m haske", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="show which implementation each component uses")
    parser.parse_args(argv)
    backends()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
