#!/usr/bin/env bash
# Run each fuzz target for N seconds (default 600), one after the other, with one worker at low
# priority, and print what each covered. New inputs go to fuzz/work/<target>/ (seeded from
# fuzz/corpus/<target>/), logs to fuzz/work/<target>.log, crash reproducers to fuzz/crashes/.
#
# Usage: fuzz/run_all.sh [seconds] [target...]     targets: frames handshake connection
# With fuzz/build/ from build_native.sh, the compiled components are fuzzed with coverage (and
# the Cython codec with AddressSanitizer). PYTHON names the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift $(($# > 0 ? 1 : 0))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames handshake connection)
python=${PYTHON:-python3}

if [ -f build/asan_with_fuzzer.so ]; then
    export LD_PRELOAD="$PWD/build/asan_with_fuzzer.so"
    # Python frees nothing at exit, and a smaller quarantine keeps the RSS under libFuzzer's cap.
    export ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=16
    # Objects from the system allocator, so that ASan sees overruns of a bytes object too.
    export PYTHONMALLOC=malloc
fi
for target in "${targets[@]}"; do
    [ -d "corpus/$target" ] || "$python" make_corpus.py
done
mkdir -p work crashes

failed=0
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    log="work/$target.log"
    echo "== $target: ${seconds}s, log fuzz/$log"
    nice -n 10 "$python" "fuzz_$target.py" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="crashes/$target-" "work/$target" "corpus/$target" >"$log" 2>&1
    status=$?
    grep -E '^(frames|connection|handshake) backends:|INFO: Loaded 1 modules' "$log"
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log"
    grep -E '^stat::' "$log"
    echo "corpus: $(find "work/$target" -type f | wc -l) files"
    if [ "$status" -ne 0 ]; then
        failed=1
        echo "FAILED (exit $status):"
        grep -E -A15 'Uncaught Python exception|ERROR: (AddressSanitizer|libFuzzer)' "$log" |
            head -40
        grep -E 'Test unit written to' "$log"
    fi
done
exit $failed
