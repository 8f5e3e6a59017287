#!/usr/bin/env bash
# Agent benchmarks (BENCHMARKS.md, section "Agent"): P3 nftables commit vs raw `nft -f`, P4 time-to-block
# through handler + queue + agent, P5 storage transactions per IP for a 10k-IP alert, P6 agent memory with
# 100k active blocks. Run by hand as root (it builds its own network namespaces); not part of `make test`.
#   sudo bash scripts/bench-agent.sh            # all, glibc release build
#   sudo bash scripts/bench-agent.sh p3         # one of p3 p4 p5 p6
#   sudo bash scripts/bench-agent.sh p6-musl    # P6 with the static musl agent (what the Dockerfile ships)
#   P4_ALERTS=40 sudo bash scripts/bench-agent.sh p4
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-agent: needs root (network namespaces, nftables)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bash scripts/tools.sh >/dev/null
cargo build --release --locked -p portcullis-agent --bins --example bench_agent -p portcullis --bin portcullis-handler
echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(nft --version | head -1), $(date -u +%Y-%m-%d)"
export AZURITE_QUEUE_BIN="$PWD/.tools/node_modules/.bin/azurite-queue"
release="$CARGO_TARGET_DIR/release"
which="${1:-all}"
if [ "$which" = p6-musl ]; then
    command -v musl-gcc >/dev/null || { echo "bench-agent: p6-musl needs musl-tools (apt-get install musl-tools)" >&2; exit 1; }
    rustup target add x86_64-unknown-linux-musl >/dev/null
    CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p portcullis-agent --bin portcullis-agent
    # The harness finds the agent next to itself: lay out a release directory with the static agent.
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
    mkdir -p "$dir/release/examples"
    cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/portcullis-agent" "$release/portcullis-handler" "$dir/release/"
    cp "$release/examples/bench_agent" "$dir/release/examples/"
    file "$dir/release/portcullis-agent" | sed 's/^[^:]*: /agent: /'
    "$dir/release/examples/bench_agent" p6
    exit
fi
exec "$release/examples/bench_agent" "$which"
