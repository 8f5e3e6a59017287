#!/usr/bin/env bash
# Handler benchmarks (BENCHMARKS.md, section "Handler"): P1 (wrk, handler vs bare axum, same process and run),
# P2 (extraction vs serde_json Value), readiness after spawn, release binary size. Run by hand; not in `make test`.
#   bash scripts/bench-handler.sh            # defaults: 3 rounds of 10 s per side, 16 connections, 1 wrk thread
#   ROUNDS=5 DURATION=20s bash scripts/bench-handler.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "wrk is required (Debian: apt-get install wrk)" >&2; exit 1; }

cargo build --release --locked -p portcullis --bin portcullis-handler --example bench_server --example bench_readiness
BIN="$CARGO_TARGET_DIR/release/portcullis-handler"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$CARGO_TARGET_DIR/release/examples/bench_server" --write-body "$work/incident.json"
cat > "$work/post.lua" <<LUA
local f = io.open("$work/incident.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
echo "P1 body: $(wc -c < "$work/incident.json") bytes, 20 IP entities"

run_p1() {
  local label=$1; shift
  "$CARGO_TARGET_DIR/release/examples/bench_server" "$@" > "$work/ports" &
  local pid=$!
  for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
  local handler bare
  handler=$(sed -E 's/.*handler=([0-9]+).*/\1/' "$work/ports")
  bare=$(sed -E 's/.*bare=([0-9]+).*/\1/' "$work/ports")
  # Warm up both, then alternate so drift on a shared machine hits both sides alike.
  wrk -t1 -c"$CONNECTIONS" -d2s -s "$work/post.lua" "http://127.0.0.1:$handler/api/alerts" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d2s -s "$work/post.lua" "http://127.0.0.1:$bare/api/alerts" >/dev/null
  local ratios=()
  for r in $(seq "$ROUNDS"); do
    local h b
    h=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$handler/api/alerts" | awk '/Requests\/sec/ {print $2}')
    b=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/post.lua" "http://127.0.0.1:$bare/api/alerts" | awk '/Requests\/sec/ {print $2}')
    local ratio
    ratio=$(awk -v h="$h" -v b="$b" 'BEGIN {printf "%.3f", h / b}')
    echo "P1 $label round $r: handler $h req/s, bare axum $b req/s, ratio $ratio"
    ratios+=("$ratio")
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk -v l="$label" '{a[NR]=$1} END {print "P1 " l " median ratio: " a[int((NR+1)/2)] " (goal >= 0.9)"}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run_p1 "no logging"
run_p1 "with the production log line per request (to a sink)" --log

P1_BODY="$work/incident.json" cargo bench --locked -p portcullis --bench extract 2>/dev/null | grep "^P[12]"
"$CARGO_TARGET_DIR/release/examples/bench_readiness" "$BIN" 30
echo "release binary: $(stat -c %s "$BIN") bytes ($(numfmt --to=iec "$(stat -c %s "$BIN")"))"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(. /etc/os-release; echo "$PRETTY_NAME"), rustc $(rustc --version | cut -d' ' -f2)"
