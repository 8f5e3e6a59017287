#!/usr/bin/env bash
# Build the Azure Functions deployment package for the Portcullis handler (`make package`).
#
#   1. builds portcullis-handler as a static x86_64-unknown-linux-musl binary (installs the rustup
#      target and musl-tools when missing; aws-lc-sys needs a musl C compiler),
#   2. assembles dist/app/: host.json, the binary at host.json's defaultExecutablePath, and one
#      folder per function copied from function-definitions/,
#   3. zips it to dist/portcullis-functions.zip with the executable bit kept,
#   4. checks the zip (infra/tools/check_package.py): exactly host.json + the executable + the
#      function folders, the binary static, x86_64 and executable.
#
# Environment:
#   PORTCULLIS_HANDLER_BINARY  use this prebuilt binary instead of building (tests use a fake one)
#   DIST_DIR                   output directory (default: <repo>/dist)
#   CARGO_TARGET_DIR           honoured when locating the built binary
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=x86_64-unknown-linux-musl
BIN=portcullis-handler
DIST_DIR="${DIST_DIR:-$ROOT/dist}"
APP_DIR="$DIST_DIR/app"
ZIP="$DIST_DIR/portcullis-functions.zip"
PYTHON="${PYTHON:-python3}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'package: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"
    fi
}

ensure_toolchain() {
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET"
    fi
    if ! command -v musl-gcc >/dev/null 2>&1; then
        log "installing musl-tools (musl-gcc, needed by aws-lc-sys)"
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools; then
            as_root apt-get update
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools
        fi
        command -v musl-gcc >/dev/null 2>&1 || die "musl-gcc still missing after installing musl-tools"
    fi
}

build_binary() {
    local locked=()
    [ -f "$ROOT/Cargo.lock" ] && locked=(--locked)
    log "cargo build --release --target $TARGET --bin $BIN"
    (cd "$ROOT" && CC_x86_64_unknown_linux_musl=musl-gcc \
        cargo build "${locked[@]}" --release --target "$TARGET" --bin "$BIN")
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
    BINARY="$target_dir/$TARGET/release/$BIN"
    [ -x "$BINARY" ] || die "build produced no executable at $BINARY"
}

if [ -n "${PORTCULLIS_HANDLER_BINARY:-}" ]; then
    BINARY="$PORTCULLIS_HANDLER_BINARY"
    [ -f "$BINARY" ] || die "PORTCULLIS_HANDLER_BINARY=$BINARY does not exist"
    log "using prebuilt binary $BINARY"
else
    ensure_toolchain
    build_binary
fi

EXE_PATH="$("$PYTHON" -c '
import json, sys
sys.path.insert(0, sys.argv[2])
from check_package import executable_path
print(executable_path(json.load(open(sys.argv[1]))))
' "$ROOT/host.json" "$ROOT/infra/tools")"

log "assembling $APP_DIR"
rm -rf "$APP_DIR"
mkdir -p "$APP_DIR"
cp "$ROOT/host.json" "$APP_DIR/host.json"
mkdir -p "$(dirname "$APP_DIR/$EXE_PATH")"
install -m 0755 "$BINARY" "$APP_DIR/$EXE_PATH"
found=0
for dir in "$ROOT"/function-definitions/*/; do
    name="$(basename "$dir")"
    [ -f "$dir/function.json" ] || die "function-definitions/$name has no function.json"
    cp -R "$dir" "$APP_DIR/$name"
    found=$((found + 1))
done
[ "$found" -gt 0 ] || die "no function folders in function-definitions/"

log "zipping $ZIP"
rm -f "$ZIP"
"$PYTHON" "$ROOT/infra/tools/package_zip.py" "$APP_DIR" "$ZIP"

log "checking $ZIP"
"$PYTHON" "$ROOT/infra/tools/check_package.py" --zip "$ZIP" \
    --host-json "$ROOT/host.json" --function-definitions "$ROOT/function-definitions"

size="$(wc -c < "$ZIP" | tr -d ' ')"
sha="$(sha256sum "$ZIP" | cut -d' ' -f1)"
log "package ready: $ZIP ($size bytes, sha256 $sha)"
