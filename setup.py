"""Build Haske's optional compiled components.

``pip install .`` builds the Cython extensions (frame codec, connection, protocol core) and the
Rust module when the machine can. A missing toolchain, or ``HASKE_BUILD_NO_CYTHON=1`` / ``HASKE_BUILD_NO_RUST=1``,
skips that component with one line saying why; Haske then uses its pure-Python twin.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "haske" / "_version.py").read_text()).group(
    1
)  # type: ignore[union-attr]


def note(message: str) -> None:
    print(f"haske build: {message}", file=sys.stderr, flush=True)


def requested_off(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no")


#: The Cython extensions, each a component of the capability probe.
CYTHON_COMPONENTS = ("frames", "connection", "protocol")
CYTHON_FALLBACK = ", ".join(f"{name}=python" for name in CYTHON_COMPONENTS)


def cython_extensions() -> list[Extension]:
    if requested_off("HASKE_BUILD_NO_CYTHON"):
        note(f"skipping the Cython extensions (HASKE_BUILD_NO_CYTHON is set); {CYTHON_FALLBACK}")
        return []
    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError:
        note(f"skipping the Cython extensions (Cython is not installed); {CYTHON_FALLBACK}")
        return []
    unix = sys.platform != "win32"
    extensions = [
        Extension(
            f"haske._speedups.{name}",
            [f"haske/_speedups/{name}.pyx"],
            define_macros=[
                ("HASKE_VERSION", f'"{VERSION}"'),
                ("HASKE_CYTHON_VERSION", f'"{Cython.__version__}"'),
            ],
            extra_compile_args=["-O3"] if unix else ["/O2"],
        )
        for name in CYTHON_COMPONENTS
    ]
    return cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
        quiet=True,
    )


def rust_extensions() -> list[object]:
    if requested_off("HASKE_BUILD_NO_RUST"):
        note(
            "skipping the Rust module (HASKE_BUILD_NO_RUST is set); handshake=python, broadcast=python"
        )
        return []
    if shutil.which("cargo") is None:
        note(
            "skipping the Rust module (cargo was not found on PATH); handshake=python, broadcast=python"
        )
        return []
    try:
        from setuptools_rust import Binding, RustExtension
    except ImportError:
        note(
            "skipping the Rust module (setuptools-rust is not installed); handshake=python, broadcast=python"
        )
        return []
    return [
        RustExtension(
            "haske._rust",
            path="rust/Cargo.toml",
            binding=Binding.PyO3,
            py_limited_api=True,
            features=["extension-module"],
            debug=False,
            optional=True,
        )
    ]


class OptionalBuildExt(build_ext):
    """Build C extensions, but let a failing compiler degrade to pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all surfaces here
            note(
                f"skipping the Cython extensions (no working C compiler: {exc}); {CYTHON_FALLBACK}"
            )

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            component = ext.name.rsplit(".", 1)[-1]
            # The connection cimports the frame codec: without it, both fall back.
            fallback = (
                "frames=python, connection=python"
                if component == "frames"
                else f"{component}=python"
            )
            note(f"skipping {ext.name} (the C compiler failed: {exc}); {fallback}")


setup(
    version=VERSION,
    ext_modules=cython_extensions(),
    rust_extensions=rust_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
