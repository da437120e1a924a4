#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; without TARGETs, all of them run, one at
# a time. cargo-fuzz is installed if missing; RUSTC_BOOTSTRAP=1 lets the
# stable compiler take the -Z flags cargo-fuzz passes (sanitizer, coverage).
# Seeds are read from fuzz/corpus/TARGET; what the fuzzer finds grows
# fuzz/work/TARGET (ignored by git); crashing inputs land in
# fuzz/artifacts/TARGET. The run keeps going after a crash (libFuzzer fork
# mode with -ignore_crashes), so several distinct crashes can be collected.
# Prints one line per target: target=NAME execs=N crashes=C
# and exits non-zero when any target crashed.
#
# Environment: CARGO_BUILD_JOBS (default 1), FUZZ_ARGS (extra libFuzzer
# flags), LANYARD_FUZZ_SKIP_KNOWN=1 (server_core leaves out non-canonical
# Automerge changes, the known bug recorded in
# protocol/tests/fuzz_regressions.rs, to look for others).
set -euo pipefail

secs=${1:-60}
shift || true
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build >&2

summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    log="work/$t.log"
    before=$(find "artifacts/$t" -type f | wc -l)
    # Fork mode with one worker: a crash is saved and the run goes on.
    # shellcheck disable=SC2086
    cargo fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || true
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    # Fork mode: the last "#N: cov: ..." line counts every worker's executions;
    # a single process prints stat::number_of_executed_units at the end.
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
    if [ -z "$execs" ]; then
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    fi
    line="target=$t execs=${execs:-0} crashes=$crashes"
    echo "$line" >&2
    summary+=("$line")
    if [ "$crashes" -gt 0 ]; then
        failed=1
        echo "  new artifacts in fuzz/artifacts/$t (log: fuzz/$log)" >&2
    fi
done

printf '%s\n' "${summary[@]}"
exit "$failed"
