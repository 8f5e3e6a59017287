#!/usr/bin/env bash
# Build the static agent binaries a NAS or router owner installs (`make dist`):
#   x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf
# into dist/agent/portcullis-agent-<triple>, stripped, with dist/agent/SHA256SUMS, and print each size.
# Profile `dist` (Cargo.toml): release, optimised for size, symbols stripped by rustc; `file` must say so.
#
# Cross toolchain: cargo-zigbuild with Zig, both pinned and installed from PyPI into .tools/venv.
# Why: the agent is pure Rust except TLS (aws-lc-sys, C), so every target needs a C compiler *for that target's
# libc*. Debian ships musl only for the native architecture (musl-tools/musl-gcc) and its cross compilers
# (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf) target glibc, which would give aws-lc objects built against
# glibc headers inside a musl binary. `zig cc` carries musl headers and libc for every target, comes from a
# registry that is reachable here and in CI, and one tool covers all three triples the same way.
#
# armv7: when rustup cannot download the prebuilt std for armv7-unknown-linux-musleabihf (its archive is missing
# from the mirror this machine reaches; `rustup target add` fails with 404), std is built from source with the
# nightly toolchain's -Zbuild-std (needs the rust-src component, which is available). The script says which.
# KNOWN FAILURE (2026-12-01): that armv7 build compiles std and every crate, then fails at the final link: rustc
# asks for its self-contained musl start files (crt1.o …) from the prebuilt std directory, which does not exist
# here. Not yet tried: RUSTFLAGS="-C link-self-contained=no" so that zig supplies musl's start files.
#
# Environment:
#   DIST_TARGETS   space-separated triples (default: all three)
#   DIST_DIR       output directory (default: <repo>/dist)
#   CARGO_TARGET_DIR honoured when locating the built binaries (each target builds once into target/<triple>/dist/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
OUT="$DIST_DIR/agent"
# armv7 is opt-in (DIST_TARGETS=armv7-unknown-linux-musleabihf) until its build works here: see below.
TARGETS="${DIST_TARGETS:-x86_64-unknown-linux-musl aarch64-unknown-linux-musl}"
BIN=portcullis-agent

log() { printf '==> %s\n' "$*"; }
die() { printf 'dist: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/zig-toolchain.sh
source "$ROOT/scripts/zig-toolchain.sh"
ensure_zig_toolchain

target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac

build_target() {
    local triple="$1" toolchain=() zflags=()
    if ! rustup target list --installed | grep -qx "$triple"; then
        log "rustup target add $triple"
        if ! rustup target add "$triple" >/dev/null 2>&1; then
            log "no prebuilt std for $triple here: building std from source (nightly -Zbuild-std)"
            rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
            rustup component add --toolchain nightly rust-src
            toolchain=(+nightly)
            zflags=(-Zbuild-std=std,panic_abort)
        fi
    fi
    log "cargo ${toolchain[*]} zigbuild --profile dist --locked -p $BIN --target $triple ${zflags[*]}"
    (cd "$ROOT" && cargo "${toolchain[@]}" zigbuild --profile dist --locked -p "$BIN" --target "$triple" "${zflags[@]}")
}

mkdir -p "$OUT"
rm -f "$OUT/SHA256SUMS"
for triple in $TARGETS; do
    build_target "$triple"
    built="$target_dir/$triple/dist/$BIN"
    [ -x "$built" ] || die "build produced no executable at $built"
    dest="$OUT/$BIN-$triple"
    install -m 0755 "$built" "$dest"
    info="$(file -b "$dest")"
    case "$info" in *"statically linked"*|*"static-pie linked"*) ;; *) die "$dest is not static: $info" ;; esac
    case "$info" in *"not stripped"*) die "$dest is not stripped: $info" ;; esac
done

(cd "$OUT" && sha256sum "$BIN"-* > SHA256SUMS)
log "static agent binaries in $OUT (goal: each <= 12 MB stripped)"
printf '%-48s %12s %8s  %s\n' binary bytes MiB sha256
for triple in $TARGETS; do
    f="$OUT/$BIN-$triple"
    bytes="$(wc -c < "$f" | tr -d ' ')"
    printf '%-48s %12s %8s  %s\n' "$(basename "$f")" "$bytes" \
        "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" "$(sha256sum "$f" | cut -d' ' -f1)"
done
