"""Run a fuzz target's checks on saved inputs, without libFuzzer: to debug or measure coverage.

Usage: python fuzz/replay.py TARGET PATH...     (TARGET: frames, handshake or connection;
                                                 PATH: input files or corpus directories)

A failing input stops the replay with its traceback and its file name. Under coverage.py this
gives line and branch coverage of the Python code a corpus reaches:

    coverage run --branch --include='haske/*' fuzz/replay.py frames fuzz/work/frames
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def inputs(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        found += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return found


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    target, paths = sys.argv[1], sys.argv[2:]
    module = importlib.import_module(f"fuzz_{target}")
    files = inputs(paths)
    for file in files:
        try:
            module.test_one_input(file.read_bytes())
        except BaseException:
            print(f"failed on {file}", file=sys.stderr)
            raise
    print(f"{target}: {len(files)} inputs passed")


if __name__ == "__main__":
    main()
