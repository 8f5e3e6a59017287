#!/usr/bin/env bash
# Tests on the foreign architectures (`make test-cross`), under qemu-user-static (Debian), as root or not:
#   1. the agent's unit tests (`--lib`) built for aarch64 and armv7 (musl, with cargo-zigbuild) and run under
#      qemu-aarch64-static / qemu-arm-static;
#   2. a smoke run of the static binary that `make dist` built for each target: `--version`, `run` (dry-run
#      backend) against Azurite on loopback, `check` on a config that differs from packaging/agent.toml only in
#      the queue endpoint, backend and state paths, and `block` / `list` / `unblock` through the control socket.
#
# What does not run here and why: the integration tests (`--test integration`) need nftables and ipset inside
# network namespaces; the namespace and netlink calls are the kernel's, not the emulated CPU's, so they test
# nothing new under qemu and take about ten times longer there. The unit tests are the part that exercises
# our own code on a 32-bit (armv7) and a weakly-ordered (aarch64) target.
# The unit tests build with the `dist` profile so they reuse the dependencies `make dist` compiled per target.
#
# Environment: CROSS_TARGETS (default "aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"),
# CROSS_SKIP_UNIT=1 (smoke only), DIST_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
# armv7 is opt-in like in scripts/dist.sh (its build does not link here yet).
TARGETS="${CROSS_TARGETS:-aarch64-unknown-linux-musl}"
AZURITE="$ROOT/.tools/node_modules/.bin/azurite-queue"

log() { printf '==> %s\n' "$*"; }
die() { printf 'test-cross: FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/zig-toolchain.sh
source "$ROOT/scripts/zig-toolchain.sh"
ensure_zig_toolchain
if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! command -v qemu-arm-static >/dev/null 2>&1; then
    log "installing qemu-user-static (Debian; apt-get as root)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null; }
fi
[ -x "$AZURITE" ] || bash "$ROOT/scripts/tools.sh"

qemu_for() {
    case "$1" in
        aarch64-*) echo qemu-aarch64-static ;;
        armv7-*|arm-*) echo qemu-arm-static ;;
        x86_64-*) echo "" ;;
        *) die "no qemu for $1" ;;
    esac
}

# Same std choice as scripts/dist.sh: the prebuilt std when rustup has it, else nightly -Zbuild-std.
cargo_args_for() {
    local triple="$1"
    if rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >/dev/null 2>&1; then
        CARGO_TOOLCHAIN=()
        CARGO_ZFLAGS=()
    else
        CARGO_TOOLCHAIN=(+nightly)
        CARGO_ZFLAGS=(-Zbuild-std=std,panic_abort)
    fi
}

unit_tests() {
    local triple="$1" qemu="$2" runner_var
    runner_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER"
    cargo_args_for "$triple"
    log "$triple: agent unit tests under $qemu"
    (cd "$ROOT" && env "$runner_var=$qemu" cargo "${CARGO_TOOLCHAIN[@]}" zigbuild test --profile dist --locked \
        -p portcullis-agent --lib --target "$triple" "${CARGO_ZFLAGS[@]}")
}

WORK=""
AZURITE_PID=""
DAEMON_PID=""
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    [ -n "$AZURITE_PID" ] && kill "$AZURITE_PID" 2>/dev/null && wait "$AZURITE_PID" 2>/dev/null
    [ -n "$WORK" ] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_azurite() {
    local port
    port="$(free_port)"
    "$AZURITE" --silent --disableTelemetry --queueHost 127.0.0.1 --queuePort "$port" \
        --location "$WORK/azurite" >"$WORK/azurite.log" 2>&1 &
    AZURITE_PID=$!
    for _ in $(seq 100); do
        nc -z 127.0.0.1 "$port" 2>/dev/null && { AZURITE_PORT="$port"; return; }
        sleep 0.1
    done
    die "Azurite did not start (log: $(cat "$WORK/azurite.log"))"
}

# The example config with only what a smoke run must change: the loopback queue, dry-run, paths in $WORK.
smoke_config() {
    local state="$1" key
    key="$(head -c 32 /dev/urandom | base64)"
    sed -e "s|^connection = .*|connection = \"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:$AZURITE_PORT/devstoreaccount1;\"\\
create_queues = true\\
signing_key = \"$key\"|" \
        -e "s|^path = \"/var/lib/portcullis/state.db\"|path = \"$state/state.db\"|" \
        -e "s|^backend = \"nftables\".*|backend = \"dry-run\"|" \
        -e "s|^lab_ranges = \[\]|lab_ranges = [\"198.51.100.0/24\"]|" \
        -e "s|^listen = .*|listen = \"127.0.0.1:0\"|" \
        "$ROOT/packaging/agent.toml"
}

smoke() {
    local triple="$1" qemu="$2" bin out
    bin="$DIST_DIR/agent/portcullis-agent-$triple"
    [ -x "$bin" ] || die "$bin missing: run make dist first"
    local run=("$bin")
    [ -n "$qemu" ] && run=("$qemu" "$bin")
    log "$triple: smoke run of $(basename "$bin") under ${qemu:-native}"

    out="$("${run[@]}" --version)" || die "$triple --version failed"
    [[ "$out" == "portcullis-agent "* ]] || die "$triple --version printed '$out'"
    echo "    --version: $out"

    local state="$WORK/$triple"
    mkdir -p "$state"
    smoke_config "$state" > "$state/agent.toml"
    local cfg=(--config "$state/agent.toml")

    "${run[@]}" "${cfg[@]}" run >"$state/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 300); do
        [ -S "$state/agent.sock" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || die "$triple daemon exited: $(cat "$state/daemon.log")"
        sleep 0.1
    done
    [ -S "$state/agent.sock" ] || die "$triple daemon opened no control socket: $(cat "$state/daemon.log")"

    out="$("${run[@]}" "${cfg[@]}" check 2>&1)" || die "$triple check failed: $out"
    echo "$out" | sed 's/^/    check: /'

    out="$("${run[@]}" "${cfg[@]}" block 198.51.100.7 --for 1h --reason smoke 2>&1)" \
        || die "$triple block failed: $out"
    echo "    block: $out"
    out="$("${run[@]}" "${cfg[@]}" list --json 2>&1)" || die "$triple list failed: $out"
    grep -q '198.51.100.7' <<<"$out" || die "$triple list does not show the block: $out"
    echo "    list: 198.51.100.7 present"
    out="$("${run[@]}" "${cfg[@]}" unblock 198.51.100.7 --reason smoke 2>&1)" \
        || die "$triple unblock failed: $out"
    echo "    unblock: $out"
    out="$("${run[@]}" "${cfg[@]}" list --json 2>&1)" || die "$triple list failed: $out"
    ! grep -q '198.51.100.7' <<<"$out" || die "$triple list still shows the block after unblock: $out"
    echo "    list: 198.51.100.7 gone"
    # A refused block is refused on every architecture (special-purpose range, not in lab_ranges).
    if out="$("${run[@]}" "${cfg[@]}" block 192.0.2.1 --for 1h 2>&1)"; then
        die "$triple blocked 192.0.2.1 (documentation range): $out"
    fi
    echo "    refused block: $out"

    # Idle RSS of the emulated daemon (qemu's own memory included: indicative only, see BENCHMARKS.md).
    local rss
    rss="$(awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON_PID/status")"
    echo "    idle RSS under ${qemu:-native} (qemu included): ${rss} kB"

    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" || die "$triple daemon did not stop cleanly on SIGTERM: $(tail -5 "$state/daemon.log")"
    DAEMON_PID=""
}

WORK="$(mktemp -d)"
start_azurite
for triple in $TARGETS; do
    qemu="$(qemu_for "$triple")"
    if [ -z "${CROSS_SKIP_UNIT:-}" ] && [ -n "$qemu" ]; then
        unit_tests "$triple" "$qemu"
    fi
    smoke "$triple" "$qemu"
done
log "test-cross: all targets passed ($TARGETS)"
