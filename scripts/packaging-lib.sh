# Shared by scripts/deb.sh and scripts/image.sh (sourced, not run): installing Debian packages, a lab network
# namespace with its own Azurite, and polling the agent's nftables set there. Callers define ROOT, WORK, log, die.

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# Creates network namespace $1 (loopback up), sets NS, and starts Azurite inside it on 127.0.0.1:10001
# (AZ_PID), waiting until it accepts connections.
lab_with_azurite() {
    NS="$1"
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
    local azurite="$ROOT/.tools/node_modules/.bin/azurite-queue"
    [ -x "$azurite" ] || bash "$ROOT/scripts/tools.sh"
    ip netns exec "$NS" "$azurite" --silent --disableTelemetry --queueHost 127.0.0.1 --queuePort 10001 \
        --location "$WORK/azurite" >"$WORK/azurite.log" 2>&1 &
    AZ_PID=$!
    for _ in $(seq 100); do ip netns exec "$NS" nc -z 127.0.0.1 10001 2>/dev/null && break; sleep 0.1; done
}

# Polls the namespace's nftables set for an address for up to 10 s: `block` answers when the daemon accepted the
# block, and the commit follows within its batch window.
in_nft() {
    local out
    for _ in $(seq 100); do
        out="$(ip netns exec "$NS" nft list set inet portcullis addr4 2>/dev/null)" || true
        grep -q "$1" <<<"$out" && return 0
        sleep 0.1
    done
    return 1
}
