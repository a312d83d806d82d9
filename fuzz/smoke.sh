#!/usr/bin/env bash
# Fuzz smoke run for CI: builds every cargo-fuzz target, then runs each one for a bounded
# time from its checked-in seeds. Exits non-zero if the build or any target fails.
#
#   fuzz/smoke.sh                      # 20 s per target
#   FUZZ_SECONDS=300 fuzz/smoke.sh     # longer
#   fuzz/smoke.sh path bearer          # only these targets
#
# Environment: FUZZ_SECONDS (default 20) per target; FUZZ_TOOLCHAIN (default nightly);
# FUZZ_FEATURES (e.g. "strict", see docs/fuzzing.md); CARGO_BUILD_JOBS is honoured.
# Needs a nightly toolchain and cargo-fuzz (see docs/fuzzing.md).
set -uo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
features=()
if [[ -n "${FUZZ_FEATURES:-}" ]]; then
    features=(--features "$FUZZ_FEATURES")
fi
logs="target/smoke-logs"
mkdir -p "$logs"

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi
if ((${#targets[@]} == 0)); then
    echo "fuzz smoke: no targets found" >&2
    echo "fuzz smoke: 0 passed, 1 failed"
    exit 1
fi

echo "fuzz smoke: building ${#targets[@]} targets (${targets[*]})"
if ! cargo "+$toolchain" fuzz build "${features[@]}" >"$logs/build.log" 2>&1; then
    tail -n 60 "$logs/build.log"
    echo "fuzz smoke: build failed (log: fuzz/$logs/build.log)"
    echo "fuzz smoke: 0 passed, ${#targets[@]} failed"
    exit 1
fi

triple=$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')
bin_dir="target/$triple/release"

passed=0
failed=0
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    seeds="seeds/$target"
    mkdir -p "$corpus"
    if [[ ! -d "$seeds" || ! -x "$bin_dir/$target" ]]; then
        echo "FAIL $target: no seed directory fuzz/$seeds or no binary fuzz/$bin_dir/$target"
        failed=$((failed + 1))
        continue
    fi
    # Run the binary that was just built (`cargo fuzz run` would rebuild first). The first
    # corpus directory is the scratch one libFuzzer writes to; the seeds are only read.
    # Crashes land in fuzz/artifacts/<target>/.
    log="$logs/$target.log"
    mkdir -p "artifacts/$target"
    start=$SECONDS
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}" "$bin_dir/$target" \
        -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        "$corpus" "$seeds" </dev/null >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - start))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*')
    if ((status == 0)); then
        echo "PASS $target (${elapsed}s, ${runs:-?} runs, coverage ${cov:-?})"
        passed=$((passed + 1))
    else
        echo "FAIL $target (exit $status after ${elapsed}s; log: fuzz/$log)"
        {
            grep -m 1 -A 4 'panicked at' "$log"
            grep -E '^SUMMARY|Test unit written to|ERROR: libFuzzer' "$log" | head -n 4
        } | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done

echo "fuzz smoke: $passed passed, $failed failed"
((failed == 0))
