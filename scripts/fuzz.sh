#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets in fuzz/ and runs each for FUZZ_SECONDS (default 60). Fails on
# any crash, leak of a panic, timeout or out-of-memory; the input that did it is left in
# fuzz/artifacts/<target>/ (turn it into a regression test, then delete it).
#
# Why this way: libFuzzer (the libfuzzer-sys crate, what `cargo fuzz` drives) with the instrumentation
# flags `cargo fuzz` itself passes, minus `-Zsanitizer=address`. Those flags (-Cpasses=sancov-module and
# the -sanitizer-coverage-* LLVM options) are stable rustc options, so this needs neither nightly,
# RUSTC_BOOTSTRAP nor `cargo install cargo-fuzz`. AddressSanitizer is left out on purpose: every crate of
# ours forbids `unsafe`, so the findings that matter are panics, overflows (debug assertions and overflow
# checks are on in fuzz/Cargo.toml), hangs and memory blow-ups, which libFuzzer reports without it, and
# ASan would cost about 2x the executions on a shared two-core machine. `--target` is given so the flags
# do not reach build scripts and proc macros (they would not link without libFuzzer).
#
#   FUZZ_SECONDS=600 make fuzz          # longer runs
#   FUZZ_TARGETS="blocks" make fuzz     # some targets only
#   FUZZ_JOBS=2 make fuzz               # libFuzzer worker processes per target
#
# A summary (executions, coverage, corpus size per target) is printed at the end and written to
# fuzz/last-run.txt for BENCHMARKS.md. The corpus grows in fuzz/corpus/<target>/ (not committed); the
# seeds come from the repository's own fixtures on every run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS=(${FUZZ_TARGETS:-alerts_forward alerts_invoke blocks message_decode agent_config syslog_lines})
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

echo "==> building fuzz targets ($TRIPLE, release with debug assertions)"
(cd "$FUZZ" && cargo build --release --locked --target "$TRIPLE" --bins)
BIN="$FUZZ/target/$TRIPLE/release"

# Seed inputs from the repository's own samples.
seeds_for() {
    local target="$1" dir="$2"
    mkdir -p "$dir"
    case "$target" in
        alerts_forward|alerts_invoke)
            find "$ROOT/tests/fixtures/sentinel" "$ROOT/tests/fixtures/azure-monitor" -name '*.json' \
                -exec cp {} "$dir/" \;
            if [ "$target" = alerts_invoke ]; then
                cp "$ROOT"/tests/fixtures/functions-host/*invoke-request* "$dir/"
            fi
            ;;
        blocks)
            printf '%s' '{"action":"block","targets":["198.51.100.7","2001:db8::/48"],"ttl":"P1D","reason":"x"}' > "$dir/block.json"
            printf '%s' '{"action":"unblock","targets":["198.51.100.7"]}' > "$dir/unblock.json"
            ;;
        message_decode)
            printf '%s' '{"v":1,"id":"00000000-0000-0000-0000-00000000002a","action":"block","targets":["198.51.100.7"],"expires_at":"2026-12-03T07:00:00Z","reason":"r","source":{"kind":"manual"},"issued_at":"2026-12-01T07:00:00Z","kid":"k","sig":"AAAA"}' > "$dir/message.json"
            ;;
        agent_config)
            cp "$ROOT/packaging/agent.toml" "$dir/"
            ;;
        syslog_lines)
            # One seed per published sample line (every format of FORMATS.md, other daemons included).
            local n=0 line
            for f in "$ROOT"/local-agent/tests/fixtures/firewall-logs/*.log; do
                [ -f "$f" ] || continue
                while IFS= read -r line; do
                    n=$((n + 1))
                    printf '%s' "$line" > "$dir/line-$n"
                done < "$f"
            done
            ;;
    esac
}

# libFuzzer writes fuzz-<n>.log into the working directory when it runs worker processes.
LOGDIR="$(mktemp -d)"
trap 'rm -rf "$LOGDIR"' EXIT
cd "$LOGDIR"
shopt -s nullglob
PARALLEL=()
if [ "$JOBS" -gt 1 ]; then PARALLEL=(-jobs="$JOBS" -workers="$JOBS"); fi

declare -a SUMMARY=()
FAILED=0
for target in "${TARGETS[@]}"; do
    corpus="$FUZZ/corpus/$target"
    seeds="$(mktemp -d)"
    artifacts="$FUZZ/artifacts/$target"
    log="$(mktemp)"
    mkdir -p "$corpus" "$artifacts"
    seeds_for "$target" "$seeds"
    echo "==> $target for ${SECONDS_EACH}s"
    set +e
    "$BIN/$target" "$corpus" "$seeds" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -rss_limit_mb=2048 -timeout=10 -max_len=262144 "${PARALLEL[@]}" \
        -artifact_prefix="$artifacts/" > "$log" 2>&1
    rc=$?
    set -e
    rm -rf "$seeds"
    logs=("$log" fuzz-*.log)  # nullglob: worker logs exist only with FUZZ_JOBS > 1
    execs="$(cat "${logs[@]}" | awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}')"
    cov="$(cat "${logs[@]}" | grep -o 'cov: [0-9]*' | awk '{print $2}' | sort -n | tail -1 || true)"
    ft="$(cat "${logs[@]}" | grep -o 'ft: [0-9]*' | awk '{print $2}' | sort -n | tail -1 || true)"
    files="$(find "$corpus" -type f | wc -l)"
    rm -f fuzz-*.log
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        tail -40 "$log"
        SUMMARY+=("$(printf '%-16s FAILED (exit %s), input in %s' "$target" "$rc" "$artifacts")")
    else
        SUMMARY+=("$(printf '%-16s %12s execs  cov %6s  ft %7s  corpus %6s' "$target" "$execs" "${cov:-?}" "${ft:-?}" "$files")")
    fi
    rm -f "$log"
done

{
    echo "make fuzz: FUZZ_SECONDS=$SECONDS_EACH FUZZ_JOBS=$JOBS, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    printf '  %s\n' "${SUMMARY[@]}"
} | tee "$FUZZ/last-run.txt"
if [ "$FAILED" -ne 0 ]; then
    echo "fuzz: FAILED"
    exit 1
fi
echo "fuzz: no crash"
