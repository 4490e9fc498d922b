"""Traces in the local mesh, end to end: `keel mesh up` runs `keel collector` when the mesh
config turns tracing on and points every proxy at it; a request through the ingress
gateway -> sidecar A -> sample-app A -> sidecar A outbound -> sidecar B -> sample-app B is
one trace in the collector's Zipkin API; an app that does not forward the trace headers
(sample-app --no-propagate) is counted by its sidecar and still gives one tree; sampling 0
reports nothing but what `x-b3-sampled: 1` forces."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import KEEL, free_port, http_get, wait_port
from test_walkthroughs import Walk, total

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
# Span times are each proxy's loop clock: wall time read once per dispatch round, durations
# by the monotonic clock. Two processes agree to the microsecond unless one is preempted
# between its two clock reads, which a loaded 2-core machine does: a millisecond of slack.
GRAIN_US = 1000

MESH_CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    enableTracing: true
    defaultConfig:
      tracing:
        sampling: %s
        zipkin:
          address: zipkin.istio-system:9411
"""

APPS = """apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  selector: {app: a}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  selector: {app: b}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec:
  selector: {app: c}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec:
  template:
    metadata: {labels: {app: a, version: v1}}
    spec:
      containers:
      - name: a
        command: [keel, sample-app, --name, a, --call, "http://b:8080/from-a"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b}
spec:
  template:
    metadata: {labels: {app: b, version: v1}}
    spec:
      containers:
      - name: b
        command: [keel, sample-app, --name, b]
---
# c drops the trace headers on its calls: the app of istio#7730
apiVersion: apps/v1
kind: Deployment
metadata: {name: c}
spec:
  template:
    metadata: {labels: {app: c, version: v1}}
    spec:
      containers:
      - name: c
        command: [keel, sample-app, --name, c, --no-propagate, --call, "http://b:8080/from-c"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: c, port: {number: 8080}}}]
  - route: [{destination: {host: a, port: {number: 8080}}}]
"""

GW = "istio-ingressgateway.istio-system"


def write_mesh(tmp_path, sampling=100, with_config=True):
    d = tmp_path / "manifests"
    d.mkdir(exist_ok=True)
    (d / "apps.yaml").write_text(APPS)
    if with_config:
        (d / "mesh-config.yaml").write_text(MESH_CONFIG % sampling)
    return d


def api(zipkin, path):
    with urllib.request.urlopen(zipkin + path, timeout=5) as r:
        return json.loads(r.read())


def gw_get(m, path, headers=None):
    req = urllib.request.Request(m.gw_url + path, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def wait_trace(zipkin, rid, n, timeout=10):
    """The spans of the trace(s) whose span carries guid:x-request-id=rid, once n are in."""
    q = "/api/v2/traces?limit=100&annotationQuery=" + urllib.request.quote("guid:x-request-id=" + rid)
    deadline = time.time() + timeout
    while True:
        traces = api(zipkin, q)
        if sum(len(t) for t in traces) >= n:
            return traces
        assert time.time() < deadline, (rid, traces)
        time.sleep(0.05)


def check_tree(spans):
    """One trace: one id, one root, every parentId in it, microsecond times nested."""
    assert len({s["traceId"] for s in spans}) == 1, spans
    assert HEX32.match(spans[0]["traceId"])
    by_id = {s["id"]: s for s in spans}
    assert len(by_id) == len(spans), "span ids are unique"
    roots = [s for s in spans if "parentId" not in s]
    assert len(roots) == 1, spans
    now_us = time.time() * 1e6
    for s in spans:
        assert HEX16.match(s["id"])
        # microseconds since the epoch, within the last minute; durations in microseconds
        assert isinstance(s["timestamp"], int) and now_us - 60e6 < s["timestamp"] <= now_us + GRAIN_US, s
        assert isinstance(s["duration"], int) and 1 <= s["duration"] < 10_000_000, s
        if "parentId" in s:
            p = by_id.get(s["parentId"])
            assert p is not None, "parent %s of %s not in the trace" % (s["parentId"], s["id"])
            assert p["timestamp"] - GRAIN_US <= s["timestamp"], (p, s)
            assert s["timestamp"] + s["duration"] <= p["timestamp"] + p["duration"] + GRAIN_US, (p, s)
    return roots[0], by_id


def one(spans, service, kind):
    found = [s for s in spans if s["localEndpoint"]["serviceName"] == service and s["kind"] == kind]
    assert len(found) == 1, (service, kind, spans)
    return found[0]


def test_mesh_collector_one_trace_detector_and_sampling(tmp_path):
    m = Walk(tmp_path, write_mesh(tmp_path)).up()
    try:
        # the collector: in the table, the state file, `keel mesh status`, with its URL
        zipkin = re.search(r"^ZIPKIN_URL=(http://127\.0\.0\.1:(\d+))$", m.text(), re.M)
        assert zipkin, m.text()
        zipkin, zport = zipkin.group(1), int(zipkin.group(2))
        assert re.search(r"^zipkin \(collector\)\s+zipkin\.istio-system\s+127\.0\.0\.1:%d\s+-\s+-$" % zport,
                         m.text(), re.M), m.text()
        rc, st = m.status()
        assert st["zipkin_url"] == zipkin
        assert m.comps["zipkin"]["role"] == "collector" and m.comps["zipkin"]["app_port"] == zport
        assert m.comps["zipkin"]["health"] == "ready"
        assert "zipkin_url\t%s\n" % zipkin in (m.state / "mesh.state").read_text()
        r = subprocess.run([KEEL, "mesh", "status", "--state-dir", str(m.state)], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0 and "ZIPKIN_URL=%s\n" % zipkin in r.stdout
        assert re.search(r"^zipkin\s+collector\s+\d+\s+0\s+127\.0\.0\.1:%d\s+ok\s+ready$" % zport, r.stdout, re.M)
        # every proxy was told where to send its spans
        for name, c in m.comps.items():
            if c["role"] in ("sidecar", "gateway"):
                with open("/proc/%d/cmdline" % c["pid"], "rb") as f:
                    argv = f.read().split(b"\0")
                assert argv[argv.index(b"--zipkin") + 1] == b"127.0.0.1:%d" % zport, name

        # gateway -> sidecar a -> app a -> sidecar a outbound -> sidecar b -> app b
        rid = "9d4e3f1a-0b2c-4d5e-8f60-a1b2c3d4e5f6"
        code, page = gw_get(m, "/a", {"x-request-id": rid})
        assert code == 200 and page["calls"][0]["status"] == 200
        traces = wait_trace(zipkin, rid, 4)
        assert len(traces) == 1 and len(traces[0]) == 4, traces
        spans = api(zipkin, "/api/v2/trace/" + traces[0][0]["traceId"])  # the trace, whole
        assert len(spans) == 4
        root, _ = check_tree(spans)
        gw = one(spans, GW, "CLIENT")
        a_in, a_out = one(spans, "a.default", "SERVER"), one(spans, "a.default", "CLIENT")
        b_in = one(spans, "b.default", "SERVER")
        assert root is gw
        assert a_in["parentId"] == gw["id"] and a_out["parentId"] == a_in["id"] and b_in["parentId"] == a_out["id"]
        assert gw["name"] == a_in["name"] == "a.default.svc.cluster.local:8080/*"
        assert a_out["name"] == b_in["name"] == "b.default.svc.cluster.local:8080/*"
        assert {s["tags"]["guid:x-request-id"] for s in spans} == {rid}
        assert a_out["tags"]["http.url"] == "http://b:8080/from-a"
        # what the collector's services and dependencies make of it
        assert {GW, "a.default", "b.default"} <= set(api(zipkin, "/api/v2/services"))
        deps = {(d["parent"], d["child"]): d["callCount"] for d in api(zipkin, "/api/v2/dependencies?endTs=%d&lookback=600000"
                                                                       % int(time.time() * 1000 + 1000))}
        assert deps.get((GW, "a.default")) == 1 and deps.get(("a.default", "b.default")) == 1, deps

        # c forwards nothing: its sidecar counts the outbound call without context, per
        # workload, and links it to the request c is serving, so the tree holds
        rid_c = "0c0c0c0c-1d1d-4e2e-8f3f-404040404040"
        code, page = gw_get(m, "/c", {"x-request-id": rid_c})
        assert code == 200 and page["calls"][0]["status"] == 200
        text = m.scrape("c-sidecar")
        assert total(text, "keel_trace_context_missing_total", workload="c.default") == 1, text
        for name in ("a-sidecar", "b-sidecar"):
            assert total(m.scrape(name), "keel_trace_context_missing_total") == 0
        # linked by "the only inbound request in flight" (c forwarded no x-request-id either:
        # its call got a new one, so the trace is found by the gateway's id, then read whole)
        spans = wait_trace(zipkin, rid_c, 2)
        assert len(spans) == 1
        tid = spans[0][0]["traceId"]
        deadline = time.time() + 10
        while len(api(zipkin, "/api/v2/trace/" + tid)) < 4:
            assert time.time() < deadline, api(zipkin, "/api/v2/trace/" + tid)
            time.sleep(0.05)
        spans = api(zipkin, "/api/v2/trace/" + tid)
        assert len(spans) == 4, spans
        root, _ = check_tree(spans)
        gw, c_in = one(spans, GW, "CLIENT"), one(spans, "c.default", "SERVER")
        c_out, b_in = one(spans, "c.default", "CLIENT"), one(spans, "b.default", "SERVER")
        assert root is gw and c_in["parentId"] == gw["id"]
        assert c_out["parentId"] == c_in["id"] and b_in["parentId"] == c_out["id"]
        # the tree as a user sees it
        r = subprocess.run([KEEL, "traces", "--collector", zipkin, tid], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "orphan" not in r.stdout, r.stdout
        lines = r.stdout.splitlines()
        assert lines[0].startswith("trace %s  (4 spans, " % tid), r.stdout
        assert [re.sub(r"  [0-9.]+ ms  200$", "", l) for l in lines[1:]] == [
            "└─ %s  c.default.svc.cluster.local:8080/c*" % GW,  # the route: prefix /c
            "   └─ c.default  c.default.svc.cluster.local:8080/*",
            "      └─ c.default  b.default.svc.cluster.local:8080/*",
            "         └─ b.default  b.default.svc.cluster.local:8080/*"], r.stdout

        # sampling 0: no spans; but x-b3-sampled: 1 is honoured, whole trace
        before = len(api(zipkin, "/api/v2/traces?limit=1000"))
        (tmp_path / "sampling0.yaml").write_text(MESH_CONFIG % 0)
        m.apply(str(tmp_path / "sampling0.yaml"))
        for i in range(20):
            assert gw_get(m, "/a", {"x-request-id": "unsampled-%d" % i})[0] == 200
        code, page = gw_get(m, "/a", {"x-request-id": "forced", "x-b3-sampled": "1"})
        assert code == 200
        forced = wait_trace(zipkin, "forced", 4)
        assert len(forced) == 1 and len(forced[0]) == 4
        check_tree(forced[0])
        # each proxy reports in order (one worker, one ring): the forced trace's spans came
        # after anything the 20 requests before it could have produced
        for name in ("a-sidecar", "b-sidecar", "istio-ingressgateway"):
            text = m.scrape(name)
            assert total(text, "keel_tracing_spans_total", result="dropped") == 0
            assert total(text, "keel_tracing_spans_total", result="failed") == 0
        assert len(api(zipkin, "/api/v2/traces?limit=1000")) == before + 1
        for i in range(20):
            assert wait_trace(zipkin, "unsampled-%d" % i, 0, timeout=0) == []

        # supervised like the others: killed, reported, restarted (an empty store)
        os.kill(m.comps["zipkin"]["pid"], signal.SIGKILL)
        m.wait_for("zipkin (pid %d) was killed by signal 9" % m.comps["zipkin"]["pid"])
        deadline = time.time() + 10
        while True:
            rc, st = m.status()
            z = next(c for c in st["components"] if c["name"] == "zipkin")
            if z["restarts"] == 1 and z["healthy"]:
                break
            assert time.time() < deadline, st
            time.sleep(0.1)
        assert api(zipkin, "/api/v2/services") == []
    finally:
        assert m.stop() == 0, m.text()
    # every component, the collector too, stopped cleanly (a sanitizer's report would show)
    assert "keel mesh: stopped" in m.text() and "while stopping" not in m.text(), m.text()


def test_mesh_collector_only_when_tracing_is_on(tmp_path):
    # no tracing in the mesh config: no collector; --tracing starts one anyway
    d = write_mesh(tmp_path, with_config=False)
    for sub in ("plain", "forced", "off"):
        (tmp_path / sub).mkdir()
    m = Walk(tmp_path / "plain", d).up()
    try:
        assert "zipkin" not in m.comps and "ZIPKIN_URL" not in m.text()
        assert m.status()[1]["zipkin_url"] == ""
    finally:
        assert m.stop() == 0, m.text()
    m = Walk(tmp_path / "forced", d, args=("--tracing",)).up()
    try:
        assert m.comps["zipkin"]["role"] == "collector" and "ZIPKIN_URL=http://127.0.0.1:" in m.text()
        # the mesh config's default sampling (1 %) applies; a forced decision is reported
        zipkin = m.status()[1]["zipkin_url"]
        assert gw_get(m, "/a", {"x-request-id": "flag", "x-b3-sampled": "1"})[0] == 200
        assert len(wait_trace(zipkin, "flag", 4)[0]) == 4
    finally:
        assert m.stop() == 0, m.text()
    # tracing in the mesh config, but --no-tracing: no collector
    d = write_mesh(tmp_path)
    m = Walk(tmp_path / "off", d, args=("--no-tracing",)).up()
    try:
        assert "zipkin" not in m.comps
    finally:
        assert m.stop() == 0, m.text()
    # --zipkin-port taken: a clear error before anything starts
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "clash"), "--zipkin-port", str(port),
                            str(d)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert "--zipkin-port %d: 127.0.0.1:%d is already in use" % (port, port) in r.stderr
        assert "nothing started" in r.stderr
    finally:
        s.close()


def test_sample_app_no_propagate_drops_the_trace_headers(tmp_path):
    """--no-propagate: the calls carry none of the trace context nor x-request-id (the
    other forwarded headers still go), without any proxy in between."""
    b_port, a_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    procs = [subprocess.Popen([KEEL, "sample-app", "--name", "b", "--listen", "127.0.0.1:%d" % b_port], env=env),
             subprocess.Popen([KEEL, "sample-app", "--name", "a", "--no-propagate", "--listen",
                               "127.0.0.1:%d" % a_port, "--call", "http://127.0.0.1:%d/headers" % b_port], env=env)]
    try:
        wait_port(b_port)
        wait_port(a_port)
        hdrs = {"x-request-id": "r1", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
                "x-b3-spanid": "e457b5a2e4d86bd1", "x-b3-sampled": "1", "b3": "80f198ee56343ba8-e457b5a2e4d86bd1-1",
                "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01", "end-user": "jason"}
        req = urllib.request.Request("http://127.0.0.1:%d/" % a_port, headers=hdrs)
        with urllib.request.urlopen(req, timeout=5) as r:
            seen = {k.lower() for k in json.loads(r.read())["calls"][0]["body"]["headers"]}
        assert "end-user" in seen
        assert not seen & {"x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "b3", "traceparent"}, seen
    finally:
        for p in procs:
            p.terminate()
            assert p.wait(10) == 0
