#!/usr/bin/env bash
# Start Debian's prometheus scraping every proxy of the running keel mesh: the seed's
# `envoy-stats` job (metrics_path /stats/prometheus) with static targets instead of
# Kubernetes service discovery. Prints PROM_URL=http://127.0.0.1:PORT once every target
# has been scraped, then stays in the foreground until Ctrl-C / SIGTERM.
#
#   scripts/mesh-prometheus.sh [--state-dir DIR] [--port N]    (default: the mesh of
#                                                                 $KEEL_MESH_DIR or /tmp/keel-mesh-$USER)
set -euo pipefail
KEEL=${KEEL_BIN:-$(dirname "$0")/../build/keel}
STATE_ARGS=()
PORT=
while [[ $# -gt 0 ]]; do
    case $1 in
    --state-dir) STATE_ARGS=(--state-dir "$2"); shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) echo "usage: $0 [--state-dir DIR] [--port N]" >&2; exit 2 ;;
    esac
done
command -v prometheus >/dev/null || { echo "mesh-prometheus: no prometheus (apt-get install prometheus)" >&2; exit 1; }
STATUS=$("$KEEL" mesh status -o json "${STATE_ARGS[@]}")
DIR=$(mktemp -d /tmp/keel-prometheus.XXXXXX)
[[ -n $PORT ]] || PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
N=$(python3 - "$STATUS" "$DIR/prometheus.yml" <<'PY'
import json, sys
st = json.loads(sys.argv[1])
targets = ["127.0.0.1:%d" % c["admin_port"] for c in st["components"] if c["admin_port"] > 0]
with open(sys.argv[2], "w") as f:
    f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
            "- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  static_configs:\n"
            "  - targets: [%s]\n" % ", ".join(targets))
print(len(targets))
PY
)
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
    --web.listen-address=127.0.0.1:"$PORT" >"$DIR/prometheus.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 150); do
    kill -0 $PID 2>/dev/null || { cat "$DIR/prometheus.log" >&2; exit 1; }
    up=$(curl -s --get "http://127.0.0.1:$PORT/api/v1/query" --data-urlencode 'query=count(up == 1)' || true)
    python3 -c 'import json,sys; r=json.loads(sys.argv[1])["data"]["result"]; sys.exit(0 if r and int(r[0]["value"][1]) >= int(sys.argv[2]) else 1)' \
        "$up" "$N" 2>/dev/null && break
    sleep 0.2
done
echo "PROM_URL=http://127.0.0.1:$PORT    ($N targets, config $DIR/prometheus.yml)"
wait $PID
