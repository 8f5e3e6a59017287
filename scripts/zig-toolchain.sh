# Sourced by scripts/dist.sh and scripts/test-cross.sh: installs cargo-zigbuild and Zig (pinned, from PyPI) into
# .tools/venv, `file` from Debian, and puts them on PATH. See scripts/dist.sh for why this toolchain.
ZIGBUILD_VERSION=0.24.0
ZIGLANG_VERSION=0.17.1

ensure_zig_toolchain() {
    local venv="$ROOT/.tools/venv"
    if ! "$venv/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION" \
        || ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
        echo "==> installing cargo-zigbuild $ZIGBUILD_VERSION and ziglang $ZIGLANG_VERSION from PyPI into .tools/venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION"
    fi
    # cargo-zigbuild finds Zig through `python3 -m ziglang` on PATH; `zig` is a shim for the scripts.
    if [ ! -x "$venv/bin/zig" ]; then
        printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$venv/bin/python" > "$venv/bin/zig"
        chmod 0755 "$venv/bin/zig"
    fi
    export PATH="$venv/bin:$PATH"
    if ! command -v file >/dev/null 2>&1; then
        echo "==> installing file (Debian; apt-get as root)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file >/dev/null; }
    fi
}
