#!/usr/bin/env bash
# Build the Azure Functions deployment package for the Portcullis handler (`make package`).
#
#   1. builds portcullis-handler as a static x86_64-unknown-linux-musl binary with cargo-zigbuild (installs the
#      rustup target and the Zig toolchain from PyPI when missing; aws-lc-sys needs a musl C compiler),
#   2. assembles dist/app/: host.json, the binary at host.json's defaultExecutablePath, and one
#      folder per function copied from function-definitions/,
#   3. zips it to dist/portcullis-functions.zip with the executable bit kept,
#   4. checks the zip (infra/tools/check_package.py): exactly host.json + the executable + the
#      function folders, the binary static, x86_64 and executable (mode bits inside the zip),
#   5. as root: runs the binary taken out of the zip in an empty root (no libc): --version, --check, GET /.
#
# Environment:
#   PORTCULLIS_HANDLER_BINARY  use this prebuilt binary instead of building (tests use a fake one)
#   PACKAGE_RUN_IN_EMPTY_ROOT  set: run step 5 for a prebuilt binary too (it must be the real handler)
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

ensure_toolchain() {
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET"
    fi
    # The same cross toolchain as the agent's static builds (scripts/dist.sh says why): zig cc for aws-lc-sys.
    # shellcheck source=scripts/zig-toolchain.sh
    source "$ROOT/scripts/zig-toolchain.sh"
    ensure_zig_toolchain
}

build_binary() {
    local locked=()
    [ -f "$ROOT/Cargo.lock" ] && locked=(--locked)
    # Profile `dist` (release, optimised for size), like the agent: it shares their compiled dependencies.
    log "cargo zigbuild --profile dist --target $TARGET --bin $BIN"
    (cd "$ROOT" && cargo zigbuild "${locked[@]}" --profile dist --target "$TARGET" -p portcullis --bin "$BIN")
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$target_dir" in /*) ;; *) target_dir="$ROOT/$target_dir" ;; esac
    BINARY="$target_dir/$TARGET/dist/$BIN"
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

# The Functions host on Linux runs the binary from the unpacked zip on its own image; make sure it needs nothing
# from that image: unpack it from the zip (mode bits as stored) into an otherwise empty root (no libc, no /etc,
# no /proc) and run it there: --version, --check, and a real HTTP answer on loopback. Needs root for chroot.
run_without_libc() {
    local root port pid code
    root="$(mktemp -d)"
    "$PYTHON" - "$ZIP" "$EXE_PATH" "$root" <<'PY'
import os, sys, zipfile
zip_path, exe, root = sys.argv[1:4]
with zipfile.ZipFile(zip_path) as z:
    info = z.getinfo(exe)
    target = os.path.join(root, "handler")
    with open(target, "wb") as out:
        out.write(z.read(info))
    os.chmod(target, (info.external_attr >> 16) & 0o7777)
PY
    [ -x "$root/handler" ] || die "the binary unpacked from the zip is not executable"
    local env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PORTCULLIS_SIGNING_KEY="$(head -c 32 /dev/urandom | base64)"
        PORTCULLIS_QUEUE=UseDevelopmentStorage=true)
    chroot "$root" /handler --version | grep -q '^portcullis-handler ' || die "--version fails without libc"
    "${env[@]}" chroot "$root" /handler --check | grep -qx 'settings are valid' || die "--check fails without libc"
    port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "${env[@]}" FUNCTIONS_CUSTOMHANDLER_PORT="$port" chroot "$root" /handler >"$root.log" 2>&1 &
    pid=$!
    code=000
    for _ in $(seq 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)"
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rm -rf "$root" "$root.log"
    [ "$code" = 200 ] || die "the handler in an empty root did not answer GET / (HTTP $code)"
    log "runs in an empty root (no libc): --version, --check, GET / = 200"
}
if [ -n "${PORTCULLIS_HANDLER_BINARY:-}" ] && [ -z "${PACKAGE_RUN_IN_EMPTY_ROOT:-}" ]; then
    log "prebuilt binary: skipping the empty-root run (PACKAGE_RUN_IN_EMPTY_ROOT=1 runs it)"
elif [ "$(id -u)" -ne 0 ]; then
    log "not root: skipping the empty-root run (chroot needs root)"
else
    run_without_libc
fi

size="$(wc -c < "$ZIP" | tr -d ' ')"
sha="$(sha256sum "$ZIP" | cut -d' ' -f1)"
log "package ready: $ZIP ($size bytes, sha256 $sha)"
