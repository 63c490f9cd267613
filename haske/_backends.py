"""Capability probe: choose the fastest built implementation of each accelerated component.

Each component has a compiled implementation and a pure-Python twin with the same API. At import
the probe picks, per component, the first implementation in preference order that imports and was
built from this very version of Haske; a stale build is refused with a warning.

Environment overrides, read once at import:

- ``HASKE_BACKEND=python`` forces the pure-Python twin everywhere;
  ``HASKE_BACKEND=cython`` / ``rust`` demands that compiled backend wherever it applies.
- ``HASKE_NO_RUST=1`` / ``HASKE_NO_CYTHON=1`` rule one compiled backend out.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import Any

from haske._version import __version__

#: component -> [(backend, module)] in order of preference.
IMPLEMENTATIONS: dict[str, list[tuple[str, str]]] = {
    "frames": [("cython", "haske._speedups.frames"), ("python", "haske._pure.frames")],
    "connection": [("cython", "haske._speedups.connection"), ("python", "haske._pure.connection")],
    "protocol": [("cython", "haske._speedups.protocol"), ("python", "haske._pure.protocol")],
    "handshake": [("rust", "haske._rust"), ("python", "haske._pure.handshake")],
    "broadcast": [("rust", "haske._rust"), ("python", "haske._pure.manager")],
}

BUILD_COMMANDS = {
    "python": "a complete installation of haske (the pure-Python modules are missing)",
    "cython": "pip install . (needs a C compiler; do not set HASKE_BUILD_NO_CYTHON)",
    "rust": "pip install . (needs cargo; do not set HASKE_BUILD_NO_RUST), "
    "or maturin develop -m rust/Cargo.toml --release",
}

_DISABLED_BY = {"rust": "HASKE_NO_RUST", "cython": "HASKE_NO_CYTHON"}


class _Unavailable:
    """Why a backend cannot be used."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


_cache: dict[str, ModuleType | _Unavailable] = {}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _import(backend: str, module_name: str) -> ModuleType | _Unavailable:
    if module_name in _cache:
        return _cache[module_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        result: ModuleType | _Unavailable = _Unavailable(f"not built ({exc})")
    else:
        built = getattr(module, "__version__", None)
        if backend != "python" and built != __version__:
            warnings.warn(
                f"ignoring {module_name} ({module.__file__}): it was built for Haske {built}, "
                f"this is Haske {__version__}; rebuild it with {BUILD_COMMANDS[backend]}",
                RuntimeWarning,
                stacklevel=3,
            )
            result = _Unavailable(f"stale build for Haske {built}")
        else:
            result = module
    _cache[module_name] = result
    return result


def _disabled_reason(backend: str) -> str | None:
    forced = os.environ.get("HASKE_BACKEND", "").strip().lower()
    if backend == "python":
        return None
    if forced == "python":
        return "HASKE_BACKEND=python"
    variable = _DISABLED_BY.get(backend)
    if variable and _truthy(variable):
        return f"{variable}=1"
    return None


def load(component: str, backend: str) -> ModuleType:
    """Import one backend of a component, or raise ImportError saying how to build it."""
    for name, module_name in IMPLEMENTATIONS[component]:
        if name == backend:
            found = _import(name, module_name)
            if isinstance(found, _Unavailable):
                raise ImportError(
                    f"the {backend} backend of {component!r} ({module_name}) is unavailable: "
                    f"{found.reason}; build it with {BUILD_COMMANDS[backend]}"
                )
            return found
    known = ", ".join(name for name, _ in IMPLEMENTATIONS[component])
    raise ValueError(f"{component!r} has no backend {backend!r} (known: {known})")


def available(component: str) -> list[str]:
    """Every backend of a component that is built and importable, fastest first."""
    return [
        name
        for name, module_name in IMPLEMENTATIONS[component]
        if not isinstance(_import(name, module_name), _Unavailable)
    ]


def _choose(component: str) -> tuple[str, ModuleType]:
    forced = os.environ.get("HASKE_BACKEND", "").strip().lower()
    candidates = IMPLEMENTATIONS[component]
    if forced and forced != "python" and any(name == forced for name, _ in candidates):
        return forced, load(component, forced)
    for name, _ in candidates:
        if _disabled_reason(name) is None:
            try:
                return name, load(component, name)
            except ImportError:
                continue
    raise ImportError(f"no implementation of {component!r} could be imported")


_chosen: dict[str, tuple[str, ModuleType]] = {c: _choose(c) for c in IMPLEMENTATIONS}

frames: ModuleType = _chosen["frames"][1]
connection: ModuleType = _chosen["connection"][1]
protocol: ModuleType = _chosen["protocol"][1]
handshake: ModuleType = _chosen["handshake"][1]
broadcast: ModuleType = _chosen["broadcast"][1]


def chosen(component: str) -> str:
    """The backend in use for a component."""
    return _chosen[component][0]


def _build_info(backend: str, module: ModuleType) -> dict[str, Any]:
    if backend == "cython":
        return {"cython": getattr(module, "CYTHON_VERSION", "unknown")}
    if backend == "rust":
        return dict(getattr(module, "BUILD_INFO", {}))
    return {"python": sys.version.split()[0]}


def report() -> dict[str, dict[str, Any]]:
    """What was chosen for each component, what else is available, and how it was built."""
    result: dict[str, dict[str, Any]] = {}
    for component in IMPLEMENTATIONS:
        backend, module = _chosen[component]
        unavailable = {}
        for name, module_name in IMPLEMENTATIONS[component]:
            found = _import(name, module_name)
            if isinstance(found, _Unavailable):
                unavailable[name] = found.reason
            elif _disabled_reason(name):
                unavailable[name] = f"disabled by {_disabled_reason(name)}"
        result[component] = {
            "backend": backend,
            "available": available(component),
            "unavailable": unavailable,
            "module": module.__name__,
            "file": getattr(module, "__file__", None),
            "build": _build_info(backend, module),
        }
    return result


def format_report(data: dict[str, dict[str, Any]]) -> str:
    """Render :func:`report` as a table."""
    rows = [("component", "backend", "available", "module file", "build")]
    for component, info in data.items():
        build = ", ".join(
            str(v) if str(v).startswith(k) else f"{k} {v}" for k, v in info["build"].items()
        )
        rows.append(
            (component, info["backend"], " ".join(info["available"]), str(info["file"]), build)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [
        f"  {component}: {name} unavailable: {reason}"
        for component, info in data.items()
        for name, reason in info["unavailable"].items()
    ]
    if notes:
        lines += ["", "not in use:", *notes]
    return "\n".join(lines)


def backends(*, quiet: bool = False) -> dict[str, dict[str, Any]]:
    """Print which implementation each component uses, and return the same data."""
    data = report()
    if not quiet:
        print(format_report(data))
    return data
