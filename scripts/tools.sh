#!/usr/bin/env bash
# Installs what the tests and the demo need and nothing else by hand: Azurite (pinned in tools/package-lock.json)
# into .tools/, and the Debian packages for the firewall tests. Idempotent and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in nft:nftables ipset:ipset iptables:iptables nc:netcat-openbsd ping:iputils-ping ip:iproute2 \
            curl:curl jq:jq; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools: missing ${need_apt[*]}; run as root or install them with apt-get" >&2
  else
    echo "tools: installing Debian packages as root: apt-get update, then apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "tools: npm is required to install Azurite (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
mkdir -p .tools
if ! cmp -s tools/package-lock.json .tools/package-lock.json || [ ! -x .tools/node_modules/.bin/azurite-queue ]; then
  echo "tools: installing Azurite into .tools/"
  cp tools/package.json tools/package-lock.json .tools/
  (cd .tools && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "tools: ready (azurite-queue $(.tools/node_modules/.bin/azurite-queue --version 2>/dev/null || echo '?'))"
