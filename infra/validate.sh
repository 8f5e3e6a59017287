#!/usr/bin/env bash
# Offline validation of the Portcullis infrastructure (`make test` runs it; CI too).
#
#   1. venv      <repo>/.venv with the pinned infra/requirements.txt (skipped when unchanged)
#   2. parse     every infra/**/*.bicep parses with pycep
#   3. checkov   security scan of infra/ (framework bicep); every failed check must be waived in
#                infra/checkov-waivers.yaml with a reason, and every waiver must still match
#   4. pytest    infra/tests: template contract, settings contract with the handler, package layout
#
# No Azure access and no az/bicep CLI are needed. Exits non-zero if any step fails; all steps run
# so the summary shows everything at once.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
VENV="${PORTCULLIS_VENV:-$ROOT/.venv}"
REQUIREMENTS="$INFRA/requirements.txt"
STAMP="$VENV/.portcullis-infra-requirements"
PYTHON="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1

declare -a SUMMARY=()
FAILED=0

record() { # record <step> <status>
    SUMMARY+=("$(printf '%-8s %s' "$1" "$2")")
    [ "$2" = ok ] || FAILED=1
}

header() { printf '\n==> %s\n' "$*"; }

# ---- 1. virtual environment -----------------------------------------------------------------
header "venv: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || { record venv "FAILED (python3 -m venv)"; }
fi
if [ -x "$VENV/bin/python" ]; then
    want="$( { sha256sum "$REQUIREMENTS"; "$VENV/bin/python" --version; } 2>&1 | sha256sum | cut -d' ' -f1)"
    have="$(cat "$STAMP" 2>/dev/null || true)"
    if [ "$want" = "$have" ]; then
        echo "requirements unchanged since last install; skipping pip"
        record venv ok
    elif "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS"; then
        echo "$want" > "$STAMP"
        record venv ok
    else
        record venv "FAILED (pip install -r infra/requirements.txt)"
    fi
fi

if [ "$FAILED" -ne 0 ]; then
    printf '\n==> summary\n'; printf '  %s\n' "${SUMMARY[@]}"
    echo "infra validation FAILED"
    exit 1
fi
PY="$VENV/bin/python"

# ---- 2. parse -------------------------------------------------------------------------------
header "parse: infra/**/*.bicep with pycep"
if "$PY" "$INFRA/tools/parse_bicep.py" "$INFRA"; then record parse ok; else record parse FAILED; fi

# ---- 3. checkov -----------------------------------------------------------------------------
header "checkov: infra/ (framework bicep), waivers in infra/checkov-waivers.yaml"
REPORT="$(mktemp)"
trap 'rm -f "$REPORT"' EXIT
# --skip-download: no policy metadata from the vendor's API (CI reaches package registries only).
# Exit code 1 only means "some check failed"; the gate below decides, using the waivers.
"$VENV/bin/checkov" --directory "$INFRA" --framework bicep --skip-download --quiet \
    --output json > "$REPORT"
rc=$?
if [ "$rc" -gt 1 ]; then
    record checkov "FAILED (checkov exited $rc)"
elif "$PY" "$INFRA/tools/checkov_gate.py" "$REPORT" "$INFRA/checkov-waivers.yaml"; then
    record checkov ok
else
    record checkov FAILED
fi

# ---- 4. pytest ------------------------------------------------------------------------------
header "pytest: infra/tests"
if (cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider "$INFRA/tests"); then
    record pytest ok
else
    record pytest FAILED
fi

printf '\n==> summary\n'
printf '  %s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
    echo "infra validation FAILED"
    exit 1
fi
echo "infra validation passed"
