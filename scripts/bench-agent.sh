#!/usr/bin/env bash
# Agent benchmarks (BENCHMARKS.md, section "Agent"): P3 nftables commit vs raw `nft -f`, P4 time-to-block
# through handler + queue + agent, P5 storage transactions per IP for a 10k-IP alert, P6 agent memory with
# 100k active blocks. Run by hand as root (it builds its own network namespaces); not part of `make test`.
#   sudo bash scripts/bench-agent.sh          # all
#   sudo bash scripts/bench-agent.sh p3       # one of p3 p4 p5 p6
#   P4_ALERTS=40 sudo bash scripts/bench-agent.sh p4
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-agent: needs root (network namespaces, nftables)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bash scripts/tools.sh >/dev/null
cargo build --release --locked -p portcullis-agent --bins --example bench_agent -p portcullis --bin portcullis-handler
echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(nft --version | head -1), $(date -u +%Y-%m-%d)"
export AZURITE_QUEUE_BIN="$PWD/.tools/node_modules/.bin/azurite-queue"
exec "$CARGO_TARGET_DIR/release/examples/bench_agent" "${1:-all}"
