#!/usr/bin/env bash
# The agent's OCI image, built and run here without pulling any base image.
#   bash scripts/image.sh build  (`make image`)  dist/image/rootfs.tar from Debian packages, then
#       `buildah bud -f packaging/Dockerfile` (FROM scratch + that rootfs + the static binary from `make dist`)
#       → localhost/portcullis-agent:<version>, and dist/image/portcullis-agent-<version>.docker.tar (docker-archive:
#       what `docker load -i` and the NAS container managers' "import image" accept, Docker 20.10 included).
#   bash scripts/image.sh test   (`make test-image`, root)  runs it with podman: `--version`, `check` and a dry-run
#       block/list/unblock through the control socket, then the nftables backend with NET_ADMIN in a network
#       namespace made here, where the block must appear in `nft list set` seen from the host.
#
# Why not debootstrap --variant=minbase: that root is ~150 MB (apt, dpkg, perl-base, coreutils …) and the agent
# uses none of it; it only runs nft, ipset, iptables and ip. The rootfs is nftables, ipset, iptables, iproute2,
# netbase and the library packages their binaries link (see LIBRARIES), each extracted with dpkg-deb, plus the
# Mozilla CA bundle from ca-certificates; no package manager, no shell. Maintainer scripts do not run, so
# the two things they would do are done here: merged /usr symlinks and the iptables alternatives (nft variant by
# default; IPTABLES_VARIANT=legacy for hosts on iptables-legacy such as Synology DSM and QNAP).
#
# Podman in this sandbox (cgroup v1 hybrid, no CAP_SYS_RESOURCE): crun refuses hybrid cgroups and the default
# ulimits, so the test runs runc with the cgroupfs manager and explicit ulimits. A normal host needs none of it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
OUT="$DIST_DIR/image"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
IMAGE="localhost/portcullis-agent:$VERSION"
IPTABLES_VARIANT="${IPTABLES_VARIANT:-nft}"
# The tools the agent runs, and the packages owning every library `ldd` lists for nft, ipset, ip,
# xtables-{nft,legacy}-multi and the xtables extensions on Debian 12 (`make test-image` checks each of them with
# the image's own ld.so, so a missing library fails the test). The packages' full dependency closure would be
# 55 packages and 31 MB (debconf, dpkg, Kerberos, tar …) for nothing the agent runs.
PACKAGES=(nftables ipset iptables iproute2 netbase)
LIBRARIES=(libc6 libbpf1 libbsd0 libcap2 libedit2 libelf1 libgmp10 libip4tc2 libip6tc2 libipset13 libjansson4 libmd0
    libmnl0 libnetfilter-conntrack3 libnfnetlink0 libnftables1 libnftnl11 libtinfo6 libxtables12 zlib1g)
# Binaries whose libraries the test resolves inside the image.
LINKED=(/usr/sbin/nft /usr/sbin/ipset /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/bin/ip)
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
# Health checks run from systemd timers, and systemd is not PID 1 here: the test runs the health command
# (`status`) itself instead.
RUN_LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --no-healthcheck)

log() { printf '==> %s\n' "$*"; }
die() { printf 'image: FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/packaging-lib.sh
source "$ROOT/scripts/packaging-lib.sh"

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (Debian; apt-get as root)"
        apt_install "${missing[@]}"
    fi
}

rootfs() {
    local arch debs fs
    arch="$(dpkg --print-architecture)"
    [ "$arch" = amd64 ] || die "the image is built for this machine's architecture only (amd64 tested), not $arch"
    debs="$OUT/debs"
    fs="$OUT/rootfs"
    rm -rf "$debs" "$fs"
    mkdir -p "$debs" "$fs"
    log "rootfs: ${PACKAGES[*]} ${LIBRARIES[*]}"
    (cd "$debs" && apt-get download -qq "${PACKAGES[@]}" "${LIBRARIES[@]}" ca-certificates >/dev/null 2>&1) \
        || { apt-get update -qq && (cd "$debs" && apt-get download -qq "${PACKAGES[@]}" "${LIBRARIES[@]}" \
            ca-certificates >/dev/null 2>&1); } || die "apt-get download failed"
    local deb
    for deb in "$debs"/*.deb; do
        case "$(basename "$deb")" in ca-certificates_*) continue ;; esac
        dpkg-deb -x "$deb" "$fs"
    done
    # merged /usr, as base-files would have it
    local d
    for d in bin sbin lib lib64; do
        if [ -d "$fs/$d" ] && [ ! -L "$fs/$d" ]; then
            mkdir -p "$fs/usr/$d"
            cp -a "$fs/$d/." "$fs/usr/$d/"
            rm -rf "${fs:?}/$d"
        fi
        mkdir -p "$fs/usr/$d"
        ln -s "usr/$d" "$fs/$d"
    done
    # iptables' postinst would set these alternatives
    local tool
    for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        local base="${tool%%-*}" suffix=""
        [ "$tool" != "$base" ] && suffix="-${tool#*-}"
        ln -sf "$base-$IPTABLES_VARIANT$suffix" "$fs/usr/sbin/$tool"
    done
    # the CA bundle update-ca-certificates would write (the agent's TLS reads /etc/ssl/certs)
    local ca="$OUT/ca"
    rm -rf "$ca" && mkdir -p "$ca" "$fs/etc/ssl/certs"
    dpkg-deb -x "$debs"/ca-certificates_*.deb "$ca"
    cat "$ca"/usr/share/ca-certificates/mozilla/*.crt > "$fs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$ca"
    # what nobody reads in a container: docs, man pages, locales, gconv modules (nft/ipset print ASCII)
    rm -rf "$fs"/usr/share/{doc,man,info,locale,lintian,bug,bash-completion,zsh} \
        "$fs"/usr/lib/*-linux-gnu/gconv "$fs"/usr/share/i18n
    mkdir -p "$fs"/{tmp,run,proc,sys,dev,var/lib/portcullis,etc/portcullis}
    chmod 1777 "$fs/tmp"
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
        > "$fs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$fs/etc/group"
    tar --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -C "$fs" -cf "$OUT/rootfs.tar" .
    log "rootfs.tar: $(du -sh "$fs" | cut -f1) unpacked"
}

build() {
    ensure_tools
    local bin="$DIST_DIR/agent/portcullis-agent-x86_64-unknown-linux-musl"
    [ -x "$bin" ] || die "$bin missing: run make dist first"
    mkdir -p "$OUT"
    rootfs
    log "buildah bud -f packaging/Dockerfile -t $IMAGE"
    (cd "$ROOT" && buildah bud --quiet --format docker --layers=false -f packaging/Dockerfile \
        --build-arg TRIPLE=x86_64-unknown-linux-musl -t "$IMAGE" .) >/dev/null
    rm -f "$OUT/portcullis-agent-$VERSION.docker.tar"
    "${PODMAN[@]}" save --format docker-archive -o "$OUT/portcullis-agent-$VERSION.docker.tar" "$IMAGE" >/dev/null
    local size
    size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
    log "image $IMAGE: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1048576 }') MiB; goal <= 40 MB)"
    log "saved $OUT/portcullis-agent-$VERSION.docker.tar ($(wc -c < "$OUT/portcullis-agent-$VERSION.docker.tar" | tr -d ' ') bytes; docker load -i …)"
}

# --- test -----------------------------------------------------------------------------------------------------
NS=""
AZ_PID=""
WORK=""
NAME="portcullis-image-test-$$"
cleanup() {
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    [ -n "$AZ_PID" ] && kill "$AZ_PID" 2>/dev/null && wait "$AZ_PID" 2>/dev/null
    [ -n "$NS" ] && ip netns delete "$NS" 2>/dev/null
    [ -n "$WORK" ] && rm -rf "$WORK"
    return 0
}

config() {
    local backend="$1"
    sed -e "s|^connection = .*|connection = \"UseDevelopmentStorage=true\"\\
create_queues = true\\
signing_key = \"$KEY\"|" \
        -e 's|^lab_ranges = \[\]|lab_ranges = ["198.51.100.0/24"]|' \
        -e "s|^backend = \"nftables\".*|backend = \"$backend\"|" \
        "$ROOT/packaging/agent.toml"
}

# Starts `run` in the container (in $NS, with the state volume), and waits for its control socket.
start_agent() {
    local state="$1" cfg="$2"
    shift 2
    "${PODMAN[@]}" run -d --name "$NAME" "${RUN_LIMITS[@]}" --network "ns:/run/netns/$NS" "$@" \
        -v "$cfg:/etc/portcullis/agent.toml:ro" -v "$state:/var/lib/portcullis" "$IMAGE" >/dev/null
    for _ in $(seq 300); do
        [ -S "$state/agent.sock" ] && return 0
        [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME")" = true ] \
            || die "container exited: $("${PODMAN[@]}" logs "$NAME" 2>&1 | tail -5)"
        sleep 0.1
    done
    die "no control socket: $("${PODMAN[@]}" logs "$NAME" 2>&1 | tail -5)"
}

agent() { "${PODMAN[@]}" exec "$NAME" /usr/bin/portcullis-agent --config /etc/portcullis/agent.toml "$@"; }

stop_agent() {
    "${PODMAN[@]}" stop -t 30 "$NAME" >/dev/null
    local code
    code="$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")"
    [ "$code" = 0 ] || die "agent exited $code on SIGTERM: $("${PODMAN[@]}" logs "$NAME" 2>&1 | tail -5)"
    "${PODMAN[@]}" rm "$NAME" >/dev/null
}

test_image() {
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespace, podman)"
    ensure_tools
    "${PODMAN[@]}" image exists "$IMAGE" || die "$IMAGE missing: run make image"
    trap cleanup EXIT
    WORK="$(mktemp -d)"
    KEY="$(head -c 32 /dev/urandom | base64)"

    local out
    out="$("${PODMAN[@]}" run --rm "${RUN_LIMITS[@]}" --network none "$IMAGE" --version)"
    [[ "$out" == "portcullis-agent $VERSION" ]] || die "--version printed '$out'"
    for tool in "nft --version" "ipset --version" "iptables --version" "ip -V"; do
        out="$("${PODMAN[@]}" run --rm "${RUN_LIMITS[@]}" --network none --cap-add NET_ADMIN \
            --entrypoint "/usr/sbin/${tool%% *}" \
            "$IMAGE" "${tool#* }" 2>&1)" || die "$tool in the image: $out"
        echo "    ok  $tool: $out"
    done

    # Every binary and xtables extension, resolved by the image's own ld.so in the rootfs the image was made from.
    local linked fs="$OUT/rootfs"
    mapfile -t linked < <(cd "$fs" && ls usr/lib/*-linux-gnu/xtables/*.so | sed 's|^|/|')
    for bin in "${LINKED[@]}" "${linked[@]}"; do
        out="$(chroot "$fs" /lib64/ld-linux-x86-64.so.2 --list "$bin" 2>&1)" || die "$bin: $out"
        ! grep -q "not found" <<<"$out" || die "$bin misses a library in the image: $out"
    done
    echo "    ok  every library of ${#LINKED[@]} binaries and ${#linked[@]} xtables extensions resolves in the image"

    lab_with_azurite "portcullis-image-$$"

    log "dry-run backend: check, block, list, unblock through the control socket"
    mkdir -p "$WORK/state-dry"
    config dry-run > "$WORK/dry.toml"
    start_agent "$WORK/state-dry" "$WORK/dry.toml"
    agent check || die "check in the container failed"
    agent status >/dev/null || die "status (the image's HEALTHCHECK) reports problems"
    agent block 198.51.100.7 --for 1h --reason image-test || die "block failed"
    # Captured, not piped into `grep -q`: grep exiting at the first match can fail the exec with SIGPIPE.
    out="$(agent list --json)" || die "list failed: $out"
    grep -q 198.51.100.7 <<<"$out" || die "list does not show the block: $out"
    agent unblock 198.51.100.7 || die "unblock failed"
    out="$(agent list --json)" || die "list failed: $out"
    ! grep -q 198.51.100.7 <<<"$out" || die "list still shows the block: $out"
    "${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q "would block" || echo "    (note: no 'would block' line in the dry-run log)"
    stop_agent
    echo "    ok  check, block, list, unblock (dry-run) in the container"

    log "nftables backend with NET_ADMIN in network namespace $NS"
    mkdir -p "$WORK/state-nft"
    config nftables > "$WORK/nft.toml"
    start_agent "$WORK/state-nft" "$WORK/nft.toml" --cap-add NET_ADMIN --cap-add NET_RAW
    agent block 198.51.100.8 --for 1h --reason image-test || die "block failed"
    in_nft "198.51.100.8" \
        || die "the block is not in the namespace's nftables: $(ip netns exec "$NS" nft list ruleset)"
    stop_agent
    in_nft "198.51.100.8" \
        || die "the block did not outlive the agent"
    echo "    ok  198.51.100.8 is in 'inet portcullis addr4' of $NS, and stays after the agent stops"
    log "image: all checks passed"
}

case "${1:-}" in
    build) build ;;
    test) test_image ;;
    *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
