#!/usr/bin/env bash
# make demo: Istio's Bookinfo on a local keel mesh, traffic through the ingress gateway,
# then what the telemetry shows (seed 000's stdio JSON lines, istio_requests_total per
# source -> destination, one trace from the mesh's collector, Prometheus when installed).
#
#   DEMO_SECONDS=N   seconds of traffic (30)
#   DEMO_KEEP=0|1    keep the mesh running after the summary until Ctrl-C (1 on a tty)
#   KEEL_BIN=PATH    the keel binary (build/keel, built when missing)
#   DEMO_DIR=DIR     state dir: config, logs (a fresh temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_TRAFFIC=${DEMO_SECONDS:-30}
KEEL=${KEEL_BIN:-build/keel}
if [[ -t 1 ]]; then KEEP=${DEMO_KEEP:-1}; else KEEP=${DEMO_KEEP:-0}; fi
b=$'\e[1m'; n=$'\e[0m'
[[ -t 1 ]] || { b=; n=; }

if [[ -z ${KEEL_BIN:-} ]]; then
    scripts/deps.sh
    make -s -j2 all
fi
STATE=${DEMO_DIR:-$(mktemp -d /tmp/keel-demo.XXXXXX)}
mkdir -p "$STATE"
MESH_OUT=$STATE/mesh.out
MESH_PID=
PROM_PID=

stop() {
    [[ -n $PROM_PID ]] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null || true
    if [[ -n $MESH_PID ]] && kill -0 "$MESH_PID" 2>/dev/null; then
        kill -TERM "$MESH_PID" 2>/dev/null || true
        wait "$MESH_PID" 2>/dev/null || true
    fi
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "${b}== keel mesh up examples/bookinfo${n}"
# without DEMO_KEEP, --for bounds the mesh even if this script is killed before its trap runs
FOR=()
[[ $KEEP == 1 ]] || FOR=(--for $((SECONDS_OF_TRAFFIC + 120)))
"$KEEL" mesh up --state-dir "$STATE" "${FOR[@]}" examples/bookinfo >"$MESH_OUT" 2>&1 &
MESH_PID=$!
for _ in $(seq 1 300); do
    grep -q "ready in\|not ready after" "$MESH_OUT" 2>/dev/null && break
    kill -0 "$MESH_PID" 2>/dev/null || { cat "$MESH_OUT"; echo "demo: keel mesh up failed" >&2; exit 1; }
    sleep 0.1
done
grep -v "^keel mesh: .*restarting in\|^    | " "$MESH_OUT" | sed -n '1,/ready in\|not ready after/p'
if ! grep -q "ready in" "$MESH_OUT"; then
    echo "demo: the mesh did not come up; what failed:" >&2
    grep -A6 "restarting in" "$MESH_OUT" | tail -20 >&2 || true
    exit 1
fi
GW_URL=$(sed -n 's/^GW_URL=//p' "$MESH_OUT" | head -1)
[[ -n $GW_URL ]] || { echo "demo: no GW_URL in the mesh output" >&2; exit 1; }
# the trace collector mesh up runs because mesh-config.yaml turns tracing on
ZIPKIN_URL=$(sed -n 's/^ZIPKIN_URL=//p' "$MESH_OUT" | head -1)
[[ -n $ZIPKIN_URL ]] || { echo "demo: no ZIPKIN_URL in the mesh output" >&2; exit 1; }

echo
echo "${b}== traffic: GET $GW_URL/productpage for ${SECONDS_OF_TRAFFIC}s${n}"
python3 - "$GW_URL" "$SECONDS_OF_TRAFFIC" <<'EOF'
import http.client, sys, threading, time
url, secs = sys.argv[1], float(sys.argv[2])
host, port = url[len("http://"):].split(":")
tty = sys.stdout.isatty()
lock = threading.Lock()
count = {"ok": 0, "err": 0}
stop_at = time.time() + secs

def worker():
    conn = None
    while time.time() < stop_at:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/productpage", headers={"User-Agent": "keel-demo"})
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except (OSError, http.client.HTTPException):
            ok = False
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        with lock:
            count["ok" if ok else "err"] += 1
        time.sleep(0.01)  # a steady trickle, not a benchmark

threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
t0 = time.time()
for t in threads:
    t.start()
last = 0
while any(t.is_alive() for t in threads):
    time.sleep(0.25)
    el = time.time() - t0
    with lock:
        total, err = count["ok"] + count["err"], count["err"]
    line = "requests %d  rate %.0f/s  errors %d  (%.0f/%.0f s)" % (total, total / max(el, 0.001), err, min(el, secs), secs)
    if tty:
        sys.stdout.write("\r\x1b[K" + line); sys.stdout.flush()
    elif el - last >= 2 or el >= secs:
        print(line, flush=True); last = el
with lock:
    total, err = count["ok"] + count["err"], count["err"]
if tty:
    print()
print("traffic done: %d requests, %d errors" % (total, err))
EOF

LOGS=$(sed -n 's/^log_dir\t//p' "$STATE/mesh.state")
echo
echo "${b}== seed 000: stdio JSON lines (logentry newlog), from the proxies' stdout in $LOGS${n}"
for f in "$LOGS"/istio-ingressgateway.log "$LOGS"/productpage-v1-sidecar.log "$LOGS"/reviews-v*-sidecar.log; do
    [[ -f $f ]] && grep -m1 -h '"instance":"newlog.logentry.istio-system"' "$f" || true
done | head -4
echo "($(cat "$LOGS"/*.log | grep -c '"instance":"newlog.logentry.istio-system"' || true) stdio lines in all)"

echo
echo "${b}== istio_requests_total per source -> destination (every proxy's /stats/prometheus)${n}"
python3 - "$STATE/mesh.state" <<'EOF'
import re, sys, urllib.request
admins = []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "comp" and int(f[8]) > 0:
        admins.append((f[1], int(f[8])))
rows, double = {}, 0.0
lab = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
for name, port in admins:
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/stats/prometheus" % port, timeout=3).read().decode()
    except OSError as e:
        print("  (%s: %s)" % (name, e)); continue
    for l in text.splitlines():
        if l.startswith("istio_double_request_count"):
            double += float(l.rsplit(" ", 1)[1])
        if not l.startswith("istio_requests_total{"):
            continue
        labels = dict(lab.findall(l[l.index("{"):l.rindex("}")]))
        key = (labels.get("reporter"), labels.get("source_workload"), labels.get("destination_workload"),
               labels.get("response_code"))
        rows[key] = rows.get(key, 0) + float(l.rsplit(" ", 1)[1])
print("  %-12s %-22s    %-22s %-5s %s" % ("REPORTER", "SOURCE", "DESTINATION", "CODE", "REQUESTS"))
for (rep, src, dst, code), v in sorted(rows.items()):
    print("  %-12s %-22s -> %-22s %-5s %d" % (rep, src, dst, code, v))
print("  seed 001: istio_double_request_count summed over the proxies: %d" % double)
EOF

echo
echo "${b}== one trace: keel traces --collector $ZIPKIN_URL --service ratings.default --limit 1${n}"
# the newest trace that reached ratings (reviews v2/v3 call it): gateway -> productpage ->
# details, reviews -> ratings. Each proxy sends its spans within a second; until then the
# newest trace may lack some, so wait for it whole (no orphan, every hop in).
trace=
for _ in $(seq 1 50); do
    trace=$("$KEEL" traces --collector "$ZIPKIN_URL" --service ratings.default --limit 1 2>&1 || true)
    if [[ $trace == *istio-ingressgateway* && $trace == *"details.default  details"* &&
          $trace == *"ratings.default  ratings"* && $trace != *orphan* ]]; then
        break
    fi
    sleep 0.1
done
echo "$trace" | sed 's/^/  /'

PROM_URL=
if command -v prometheus >/dev/null; then
    PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    {
        echo "global: {scrape_interval: 1s}"
        echo "scrape_configs:"
        echo "- job_name: keel-mesh"
        echo "  metrics_path: /stats/prometheus"
        echo "  static_configs:"
        echo "  - targets:"
        awk -F'\t' '$1 == "comp" && $9 > 0 { printf "    - 127.0.0.1:%s\n", $9 }' "$STATE/mesh.state"
    } >"$STATE/prometheus.yml"
    prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
        --web.listen-address=127.0.0.1:"$PROM_PORT" >"$STATE/prometheus.log" 2>&1 &
    PROM_PID=$!
    PROM_URL=http://127.0.0.1:$PROM_PORT
    echo
    echo "${b}== Prometheus at $PROM_URL (scraping every proxy's admin endpoint)${n}"
    # each request is counted by both proxies (reporter source and destination): one side
    q='sum(istio_requests_total{reporter="destination"}) by (source_workload, destination_workload)'
    targets=$(awk -F'\t' '$1 == "comp" && $9 > 0' "$STATE/mesh.state" | wc -l)
    # every target scraped once (its `up` is 1), then one more interval so all series are in
    for _ in $(seq 1 100); do
        up=$(curl -s --get "$PROM_URL/api/v1/query" --data-urlencode "query=count(up == 1)" || true)
        python3 -c 'import json,sys; r=json.loads(sys.argv[1])["data"]["result"]; sys.exit(0 if r and int(r[0]["value"][1]) >= int(sys.argv[2]) else 1)' "$up" "$targets" 2>/dev/null && break
        sleep 0.2
    done
    sleep 1.2
    out=$(curl -s --get "$PROM_URL/api/v1/query" --data-urlencode "query=$q" || true)
    echo "  query: $q"
    python3 -c '
import json, sys
try:
    d = json.loads(sys.argv[1])["data"]["result"]
except Exception:
    d = []
for r in sorted(d, key=lambda r: (r["metric"].get("source_workload", ""), r["metric"].get("destination_workload", ""))):
    m = r["metric"]
    print("  %-22s -> %-22s %s" % (m.get("source_workload"), m.get("destination_workload"), r["value"][1]))
if not d:
    print("  (no result yet; see '"$STATE"'/prometheus.log)")
' "$out"
fi

echo
if [[ $KEEP == 1 ]]; then echo "${b}== where to look next${n}"; else echo "${b}== where to look next (while a mesh runs: DEMO_KEEP=1 keeps this one)${n}"; fi
awk -F'\t' '$1 == "comp" && $9 > 0 { printf "  %-32s http://127.0.0.1:%s/stats/prometheus  /config_dump\n", $2, $9 }' "$STATE/mesh.state"
echo "  logs (access log, stdio JSON lines): $LOGS"
echo "  gateway: $GW_URL/productpage"
echo "  traces (Zipkin API, Grafana's Zipkin data source): $ZIPKIN_URL/api/v2/traces;  keel traces --collector $ZIPKIN_URL"
[[ -n $PROM_URL ]] && echo "  Prometheus: $PROM_URL/graph"
echo "  keel mesh status --state-dir $STATE;  keel apply -f examples/bookinfo/routing/virtual-service-reviews-v1.yaml --config-dir $STATE/config"
if [[ $KEEP == 1 ]]; then
    echo
    echo "The mesh keeps running; Ctrl-C stops it."
    wait "$MESH_PID" || true
fi
