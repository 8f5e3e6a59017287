#!/usr/bin/env bash
# `make demo`: the whole Portcullis chain on this machine.
#
#   Azurite (queue emulator, from .tools/) → portcullis-handler (the Functions custom handler, called
#   directly) → the queue → portcullis-agent → the firewall.
#
# As root: builds a two-namespace lab (198.51.100.1 "home" with nftables ↔ 198.51.100.2 "attacker"),
# shows a TCP connection from the attacker succeeding, posts a Sentinel incident naming the attacker to
# the handler, shows the connection dropped, closes the incident as a false positive and shows it allowed
# again. Without root (or with PORTCULLIS_DEMO_DRY_RUN=1): the agent uses the dry-run backend and shows
# the plan instead.
#
# Everything it starts (processes, namespaces, temporary files) is stopped and removed on exit, also on
# Ctrl-C. Nothing outside the lab namespaces and loopback is touched.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
AGENT="$TARGET_DIR/debug/portcullis-agent"
HANDLER="$TARGET_DIR/debug/portcullis-handler"
AZURITE="$ROOT/.tools/node_modules/.bin/azurite-queue"
WORK="$(mktemp -d /tmp/portcullis-demo.XXXXXX)"
NS_HOME="pcdemo-home-$$"
NS_PEER="pcdemo-peer-$$"
PIDS=()

bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [ "${MODE:-}" = lab ]; then
        for ns in "$NS_HOME" "$NS_PEER"; do
            if ip netns list 2>/dev/null | grep -qw "$ns"; then
                ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
                ip netns del "$ns" 2>/dev/null
            fi
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

bold "Building portcullis-handler and portcullis-agent"
say "(the first build compiles about 400 crates: several minutes on 2 cores; later runs take seconds)"
cargo build --workspace --bins

[ -x "$AZURITE" ] || { echo "Azurite missing: run 'make tools' (or bash scripts/tools.sh)" >&2; exit 1; }
AZ_PORT="$(free_port)"
bold "Starting Azurite on 127.0.0.1:$AZ_PORT"
"$AZURITE" --queueHost 127.0.0.1 --queuePort "$AZ_PORT" --location "$WORK/azurite" \
    --skipApiVersionCheck --disableTelemetry --silent >"$WORK/azurite.log" 2>&1 &
PIDS+=($!)
wait_port "$AZ_PORT"
DEV_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
CONNECTION="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$DEV_KEY;QueueEndpoint=http://127.0.0.1:$AZ_PORT/devstoreaccount1"
SIGNING_KEY="$(head -c 32 /dev/urandom | base64)"

if [ "$(id -u)" -eq 0 ] && [ -z "${PORTCULLIS_DEMO_DRY_RUN:-}" ]; then
    MODE=lab
    bold "Building the lab: namespace $NS_HOME (198.51.100.1, nftables) <-> $NS_PEER (198.51.100.2)"
    ip netns add "$NS_HOME"
    ip netns add "$NS_PEER"
    ip link add "pcd$$a" type veth peer name "pcd$$b"
    ip link set "pcd$$a" netns "$NS_HOME"
    ip link set "pcd$$b" netns "$NS_PEER"
    ip -n "$NS_HOME" addr add 198.51.100.1/24 dev "pcd$$a"
    ip -n "$NS_PEER" addr add 198.51.100.2/24 dev "pcd$$b"
    for ns in "$NS_HOME" "$NS_PEER"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_HOME" link set "pcd$$a" up
    ip -n "$NS_PEER" link set "pcd$$b" up
    ip netns exec "$NS_HOME" nc -lk 198.51.100.1 8080 >/dev/null 2>&1 &
    PIDS+=($!)
    FIREWALL="backend = \"nftables\"
[firewall.nftables]
netns = \"$NS_HOME\""
else
    MODE=dry-run
    bold "Not root (or PORTCULLIS_DEMO_DRY_RUN set): the agent uses the dry-run backend and shows its plan (run 'sudo make demo' for a real block)"
    FIREWALL='backend = "dry-run"'
fi

cat >"$WORK/agent.toml" <<EOF
[queue]
connection = "$CONNECTION"
name = "portcullis"
signing_key = "$SIGNING_KEY"
create_queues = true
max_poll_interval = "500ms"

[state]
path = "$WORK/state/state.db"

[policy]
lab_ranges = ["198.51.100.0/24"]   # documentation addresses, blockable for the demo only

[firewall]
$FIREWALL
EOF

HANDLER_PORT="$(free_port)"
bold "Starting portcullis-handler on 127.0.0.1:$HANDLER_PORT"
env -i PATH="$PATH" FUNCTIONS_CUSTOMHANDLER_PORT="$HANDLER_PORT" FUNCTIONS_APP_ROOT_PATH="$ROOT" \
    PORTCULLIS_QUEUE="$CONNECTION" PORTCULLIS_SIGNING_KEY="$SIGNING_KEY" PORTCULLIS_QUEUES=portcullis \
    PORTCULLIS_CREATE_QUEUES=true PORTCULLIS_LAB_RANGES=198.51.100.0/24 \
    "$HANDLER" >"$WORK/handler.log" 2>&1 &
PIDS+=($!)
wait_port "$HANDLER_PORT"

bold "Starting portcullis-agent ($MODE)"
"$AGENT" --config "$WORK/agent.toml" run >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "Consuming the queue" "$WORK/agent.log" && break; sleep 0.1; done
"$AGENT" --config "$WORK/agent.toml" status | sed 's/^/    /'

connect() { ip netns exec "$NS_PEER" nc -z -w 2 198.51.100.1 8080; }
show_connect() {
    if connect; then say "TCP 198.51.100.2 -> 198.51.100.1:8080: connected"; else say "TCP 198.51.100.2 -> 198.51.100.1:8080: DROPPED (no answer)"; fi
}
wait_connect() { # want: 0 = connects, 1 = dropped
    for _ in $(seq 1 20); do
        if connect; then [ "$1" -eq 0 ] && return 0; else [ "$1" -eq 1 ] && return 0; fi
        sleep 0.3
    done
    return 1
}

incident() { # status [classification]
    local classification=""
    [ -n "${2:-}" ] && classification=",\"classification\":\"$2\""
    cat <<EOF
{"objectSchemaType":"Incident","objectEventType":"$([ "$1" = New ] && echo Create || echo Update)",
 "object":{"id":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/5d0c3d6e-8f7a-4c2b-9a51-3e1f0b2c4d61",
  "properties":{"title":"Brute force from a known-bad address","severity":"High","status":"$1"$classification,
   "incidentNumber":"1001","incidentUrl":"https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident/5d0c3d6e",
   "relatedEntities":[{"kind":"Ip","properties":{"address":"198.51.100.2","friendlyName":"198.51.100.2"}}]}}}
EOF
}

post() { curl -sS -o "$WORK/response" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$HANDLER_PORT/api/alerts"; }

if [ "$MODE" = lab ]; then
    bold "Before the incident"
    show_connect
fi

bold "Sentinel raises an incident naming 198.51.100.2: POST /api/alerts"
code="$(incident New | post)"
say "handler answered HTTP $code: $(jq -c . "$WORK/response" 2>/dev/null || cat "$WORK/response")"
if [ "$MODE" = lab ]; then
    wait_connect 1 || true
    show_connect
    say "nft (inside $NS_HOME):"
    ip netns exec "$NS_HOME" nft list set inet portcullis addr4 | sed 's/^/      /'
else
    for _ in $(seq 1 50); do grep -q "would block" "$WORK/agent.log" && break; sleep 0.1; done
    grep "would block" "$WORK/agent.log" | sed 's/^/    agent: /'
fi
bold "portcullis-agent list"
"$AGENT" --config "$WORK/agent.toml" list | sed 's/^/    /'

bold "The analyst closes the incident as a false positive: POST /api/alerts"
code="$(incident Closed FalsePositive | post)"
say "handler answered HTTP $code"
if [ "$MODE" = lab ]; then
    wait_connect 0 || true
    show_connect
else
    for _ in $(seq 1 50); do grep -q "would unblock" "$WORK/agent.log" && break; sleep 0.1; done
    grep "would unblock" "$WORK/agent.log" | sed 's/^/    agent: /'
fi

bold "portcullis-agent audit"
"$AGENT" --config "$WORK/agent.toml" audit | sed 's/^/    /'

bold "The return path: what the handler would write to Sentinel for these two commits"
say "(rendered from a report made here through the shared crate; the agent's own signed reports wait in the demo's portcullis-reports queue)"
cargo build --quiet --example return_path_preview
"$ROOT/target/debug/examples/return_path_preview" demo-site \
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/5d0c3d6e-8f7a-4c2b-9a51-3e1f0b2c4d61" \
    198.51.100.2 "Brute force from a known-bad address" | sed 's/^/    /'

bold "Done; stopping Azurite, the handler and the agent$([ "$MODE" = lab ] && echo ', removing the lab')"
