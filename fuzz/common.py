"""What every fuzz target shares: the import path, the backends under test and the run loop.

A target imports this module first, then imports Haske inside :func:`instrumented` so that
atheris traces the pure-Python code, and finally calls :func:`main`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUILD = ROOT / "fuzz" / "build"
#: What build_native.sh builds with libFuzzer's coverage counters (and ASan, for the C code):
#: component -> (backend, module name, file).
NATIVE = {
    "frames": (
        "cython",
        "haske._speedups.frames",
        BUILD / f"frames{sysconfig.get_config_var('EXT_SUFFIX')}",
    ),
    "handshake": ("rust", "haske._rust", BUILD / "_rust.abi3.so"),
}
#: The sources of each coverage build: a build older than any of them is stale.
SOURCES = {
    "frames": [
        ROOT / "haske" / "_speedups" / "frames.pyx",
        ROOT / "haske" / "_speedups" / "frames.pxd",
        ROOT / "haske" / "_speedups" / "_build.pxd",
    ],
    "handshake": sorted((ROOT / "rust" / "src").glob("*.rs")),
}
#: The preloaded runtime that the native builds need; without it they cannot load.
NATIVE_RUNTIME = "asan_with_fuzzer.so"

#: Options added unless given: libFuzzer's default input cap (4 KiB) never reaches the decoder's
#: large-frame paths, and its default timeout (20 minutes) would let a hang pass for a slow run.
DEFAULT_OPTIONS = {"-max_len": "65536", "-timeout": "10"}


def instrumented() -> contextlib.AbstractContextManager[None]:
    """Trace every Haske module imported in this block."""
    hook: contextlib.AbstractContextManager[None] = atheris.instrument_imports(include=["haske"])
    return hook


def _native(component: str) -> tuple[str, ModuleType] | None:
    """The coverage build of a component, when it is built and its runtime is preloaded."""
    if component not in NATIVE:
        return None
    backend, name, path = NATIVE[component]
    if NATIVE_RUNTIME not in os.environ.get("LD_PRELOAD", "") or not path.exists():
        return None
    newest = max(source.stat().st_mtime for source in SOURCES[component])
    if path.stat().st_mtime < newest:
        sys.exit(f"{path} is older than its sources: run fuzz/build_native.sh again")
    # Loaded beside the regular build under the same name: each .so keeps its own module state.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return backend, module


def backends(component: str) -> dict[str, ModuleType]:
    """Every built backend of ``component``; refuse to run a comparison with only one."""
    from haske import _backends

    found = {name: _backends.load(component, name) for name in _backends.available(component)}
    if (native := _native(component)) is not None:
        found[native[0]] = native[1]
    if len(found) < 2:
        sys.exit(f"only {sorted(found)} of {component!r} is built: nothing to compare it with")
    return found


def describe(modules: dict[str, ModuleType]) -> str:
    """``name=file`` for each backend, so a run's log says what exactly was fuzzed."""
    return ", ".join(
        f"{name}={getattr(module, '__file__', '?')}" for name, module in modules.items()
    )


def main(test_one_input: Callable[[bytes], None], argv: list[str] | None = None) -> None:
    """Run libFuzzer on ``test_one_input`` with the command line's options and corpus dirs."""
    args = list(sys.argv if argv is None else argv)
    for option, value in DEFAULT_OPTIONS.items():
        if not any(arg.startswith(f"{option}=") for arg in args):
            args.append(f"{option}={value}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def frame_key(frame: Any) -> tuple[int, bytes, bool, bool, bool, bool]:
    """A frame as plain data, comparable across backends."""
    return (frame.opcode, frame.payload, frame.fin, frame.rsv1, frame.rsv2, frame.rsv3)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} characters)"


def same(name: str, log: list[object], reference_name: str, reference: list[object]) -> None:
    """Fail with the first entry where two backends' logs part ways."""
    if log == reference:
        return
    index = next(
        (i for i, (a, b) in enumerate(zip(log, reference)) if a != b), min(len(log), len(reference))
    )
    raise AssertionError(
        f"{name} and {reference_name} differ at step {index}:\n"
        f"  {name}: {_short(log[index : index + 1])}\n"
        f"  {reference_name}: {_short(reference[index : index + 1])}"
    )
