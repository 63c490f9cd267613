#!/usr/bin/env bash
# Build, into fuzz/build/, the compiled components with libFuzzer's coverage counters, so that
# the fuzzer is guided by their branches too: the Cython frame codec (also with AddressSanitizer,
# as it handles raw pointers) and haske._rust; and the runtime they need preloaded (ASan and
# libFuzzer in one library, as atheris documents for native extensions). run_all.sh uses them
# when they are there; the targets load them beside the regular builds.
#
# Needs clang and compiler-rt (Debian: apt-get install clang-14 libclang-rt-14-dev) and cargo.
# Usage: fuzz/build_native.sh   (PYTHON and CLANG may name other interpreters or compilers)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
clang=${CLANG:-clang-14}
out=fuzz/build
mkdir -p "$out"

read -r version cython_version include suffix < <("$python" - <<'PY'
import runpy, sysconfig, Cython
version = runpy.run_path("haske/_version.py")["__version__"]
paths = sysconfig.get_paths()
print(version, Cython.__version__, paths["include"], sysconfig.get_config_var("EXT_SUFFIX"))
PY
)

"$python" -m cython -3 haske/_speedups/frames.pyx -o "$out/frames.c"
"$clang" -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,fuzzer-no-link \
    -DHASKE_VERSION="\"$version\"" -DHASKE_CYTHON_VERSION="\"$cython_version\"" \
    -I"$include" "$out/frames.c" -o "$out/frames$suffix"

# A shared library cannot carry ASan's .preinit_array: leave that object out (preloading does
# its job, loading the runtime first).
runtime=$("$clang" -print-resource-dir)/lib/linux
objects=$(mktemp -d)
trap 'rm -rf "$objects"' EXIT
(cd "$objects" && ar x "$runtime/libclang_rt.asan-x86_64.a" && rm -f asan_preinit.cpp.o)
"$clang" -shared -o "$out/asan_with_fuzzer.so" "$objects"/*.o \
    -Wl,--whole-archive "$runtime/libclang_rt.fuzzer_no_main-x86_64.a" -Wl,--no-whole-archive \
    -lpthread -ldl -lrt -lm -lstdc++
# Rust code is memory safe: coverage counters only. The explicit --target keeps the flags off
# build scripts, which are linked without the runtime.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=3 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --quiet --release --features extension-module --manifest-path rust/Cargo.toml \
    --target x86_64-unknown-linux-gnu --target-dir "$out/rust-target"
cp "$out/rust-target/x86_64-unknown-linux-gnu/release/lib_rust.so" "$out/_rust.abi3.so"
echo "built $out/frames$suffix, $out/_rust.abi3.so and $out/asan_with_fuzzer.so"
