#!/usr/bin/env bash
# Coverage-guided fuzzing of warden's parsers with cargo-fuzz (libFuzzer), one target at a time.
#
#   fuzz/run.sh short   each target for FUZZ_SECONDS (default 25) from the seed corpus; new inputs
#                       go to a temporary directory, so the work tree is left as it was (CI).
#   fuzz/run.sh long    each target for FUZZ_RUNS executions (default 1000000), or FUZZ_SECONDS
#                       if set; new inputs are added to fuzz/corpus/<target> (then run cmin).
#   fuzz/run.sh cmin    minimizes each fuzz/corpus/<target> in place.
#
# FUZZ_TARGETS limits the targets (space-separated). Any crash, panic, timeout or OOM fails the
# run after every target has had its turn; the input is kept in fuzz/artifacts/<target>/, with
# libFuzzer's log of the run.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-short}
read -ra targets <<<"${FUZZ_TARGETS:-flag state envfile unitfile texts alerts}"
# The flag reader's limit; the other inputs are rarely larger and longer ones mostly slow it down.
max_len=65536
common=("-max_len=$max_len" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
# The parsers are safe Rust: what is looked for is panics (overflow checks are on), hangs and
# memory blowups, which need no sanitizer; without AddressSanitizer they run 3 to 7 times faster.
opts=(-s none)

# cargo-fuzz needs a nightly compiler (sanitizers, -Z flags). Without one, the stable compiler
# accepts them under RUSTC_BOOTSTRAP=1.
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# The crate under test is built with the main crate's locked versions (only libfuzzer-sys is
# added), so what is fuzzed is what ships.
cp ../Cargo.lock Cargo.lock

case $mode in
short | long | cmin) ;;
*)
    echo "usage: $0 short|long|cmin" >&2
    exit 2
    ;;
esac

"${fuzz[@]}" build "${opts[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ $mode == cmin ]]; then
    for t in "${targets[@]}"; do
        "${fuzz[@]}" cmin "${opts[@]}" "$t" "corpus/$t" -- "${common[@]}"
    done
    exit 0
fi

if [[ $mode == short ]]; then
    budget=(-max_total_time="${FUZZ_SECONDS:-25}")
elif [[ -n ${FUZZ_SECONDS:-} ]]; then
    budget=(-max_total_time="$FUZZ_SECONDS")
else
    budget=(-runs="${FUZZ_RUNS:-1000000}")
fi

failed=()
rows=()
for t in "${targets[@]}"; do
    # Kept for reading after the run (fuzz/artifacts is not tracked).
    mkdir -p "artifacts/$t"
    log=artifacts/$t/$mode.log
    if [[ $mode == short ]]; then
        # New inputs to a scratch directory; the seed corpus is only read.
        mkdir -p "$work/$t"
        dirs=("$work/$t" "corpus/$t")
    else
        dirs=("corpus/$t")
    fi
    dict=()
    [[ -f dict/$t.dict ]] && dict=(-dict="dict/$t.dict")
    echo "fuzz: $t ($mode)"
    start=$(date +%s%N)
    rc=0
    "${fuzz[@]}" run "${opts[@]}" "$t" "${dirs[@]}" -- "${common[@]}" "${budget[@]}" "${dict[@]}" \
        >"$log" 2>&1 || rc=$?
    ms=$((($(date +%s%N) - start) / 1000000))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    if [[ $rc -eq 0 ]]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed+=("$t")
        grep -E -A15 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -40 >&2 || tail -20 "$log" >&2
    fi
    execs=${execs:-0}
    rows+=("$(printf '%-9s %11s %6d.%01d %8d %6s %6s %12s  %s' "$t" "$execs" $((ms / 1000)) \
        $((ms % 1000 / 100)) $((execs * 1000 / (ms + 1))) "${cov:--}" "${ft:--}" "${corp:--}" \
        "$result")")
done

printf '%-9s %11s %8s %8s %6s %6s %12s  %s\n' target execs seconds exec/s cov ft corpus result
printf '%s\n' "${rows[@]}"
if ((${#failed[@]})); then
    echo "fuzz: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
