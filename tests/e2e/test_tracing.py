"""Distributed tracing end to end: B3 / W3C propagation through hand-wired sidecars, spans
posted to a real HTTP receiver as Zipkin v2 JSON, sampling, a dead collector, and the
detector for apps that do not forward trace headers."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import KEEL, Proc, free_port, http_get, raw_exchange, wait_port

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


class Zipkin:
    """A Zipkin receiver: POST /api/v2/spans with a JSON array, answered 202."""

    def __init__(self):
        self.spans = []
        self.posts = 0
        self.cond = threading.Condition()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/api/v2/spans" and self.headers["Content-Type"] == "application/json"
                with outer.cond:
                    outer.posts += 1
                    if ok:
                        outer.spans.extend(json.loads(body))
                    outer.cond.notify_all()
                self.send_response(202 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.spans) < n and time.time() < deadline:
                self.cond.wait(deadline - time.time())
            return list(self.spans)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def zipkin():
    z = Zipkin()
    yield z
    z.close()


def mesh(sampling=100, extra=""):
    return """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    enableTracing: true
    defaultConfig:
      tracing:
        sampling: %s
%s""" % (sampling, extra)


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: %(svc)s, namespace: default}
spec:
  selector: {app: %(svc)s}
  ports: [{name: %(pname)s, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %(svc)s-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {%(pname)s: %(port)d}
  labels: {app: %(svc)s, version: v1}
"""


def config_dir(tmp_path, services, sampling=100, extra=""):
    """services: (name, port of its sidecar's inbound, port name)."""
    d = tmp_path / "keel.d"
    d.mkdir(exist_ok=True)
    (d / "mesh.yaml").write_text(mesh(sampling, extra))
    for svc, port, pname in services:
        (d / ("%s.yaml" % svc)).write_text(SERVICE % {"svc": svc, "port": port, "pname": pname})
    return str(d)


def check_model(s):
    """A span as Zipkin's v2 model (zipkin2-api) has it."""
    assert HEX16.match(s["traceId"]) or HEX32.match(s["traceId"]), s
    assert HEX16.match(s["id"]), s
    assert "parentId" not in s or HEX16.match(s["parentId"]), s
    assert s["kind"] in ("CLIENT", "SERVER"), s
    assert s["name"] == s["name"].lower()
    assert isinstance(s["timestamp"], int) and s["timestamp"] > 1_500_000_000_000_000
    assert isinstance(s["duration"], int) and s["duration"] >= 1
    assert s["localEndpoint"]["serviceName"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in s["tags"].items())


def get(port, path, host, headers=()):
    extra = "".join("%s: %s\r\n" % h for h in headers)
    out = raw_exchange(port, ("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n"
                              % (path, host, extra)).encode())
    status = int(out.split(b" ", 2)[1])
    return status, out.split(b"\r\n\r\n", 1)[1]


def seen_headers(body):
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def test_client_sidecar_server_sidecar_one_trace(keel, backend, zipkin, tmp_path):
    b_in = free_port()
    d = config_dir(tmp_path, [("details", b_in, "http")])
    kb = keel("--config-dir", d, "--workload", "details-v1.default", "--zipkin",
              "127.0.0.1:%d" % zipkin.port, upstream=backend, inbound_port=b_in)
    ka = keel("--config-dir", d, "--zipkin", "127.0.0.1:%d" % zipkin.port, "--inbound", "off")
    st, body = get(ka.outbound, "/headers", "details:9080")
    assert st == 200
    h = seen_headers(body)
    spans = zipkin.wait(2)
    assert len(spans) == 2
    for s in spans:
        check_model(s)
    client = next(s for s in spans if s["kind"] == "CLIENT")
    server = next(s for s in spans if s["kind"] == "SERVER")
    # one trace; 128-bit id; the server span is a child of the client span (no shared ids)
    assert HEX32.match(client["traceId"]) and server["traceId"] == client["traceId"]
    assert "parentId" not in client
    assert server["parentId"] == client["id"] and server["id"] != client["id"]
    # the app saw the server span as its parent context
    assert h["x-b3-traceid"] == client["traceId"]
    assert h["x-b3-spanid"] == server["id"] and h["x-b3-parentspanid"] == client["id"]
    assert h["x-b3-sampled"] == "1"
    assert server["name"] == client["name"] == "details.default.svc.cluster.local:9080/*"
    assert server["localEndpoint"]["serviceName"] == "details.default"
    assert server["localEndpoint"]["ipv4"] == "127.0.0.1"
    assert client["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": b_in}
    t = server["tags"]
    assert t["http.method"] == "GET" and t["http.status_code"] == "200"
    assert t["http.url"] == "http://details:9080/headers" and t["http.protocol"] == "HTTP/1.1"
    assert t["guid:x-request-id"] == h["x-request-id"] == client["tags"]["guid:x-request-id"]
    assert t["istio.canonical_service"] == "details" and t["istio.canonical_revision"] == "v1"
    assert t["istio.namespace"] == "default" and t["response_flags"] == "-"
    assert t["node_id"] == "sidecar~127.0.0.1~details-v1.default~default.svc.cluster.local"
    assert client["tags"]["upstream_cluster"] == "outbound|9080||details.default.svc.cluster.local"
    assert "error" not in t
    # nested in time (microseconds; both proxies read the same wall clock)
    assert client["timestamp"] <= server["timestamp"] + 1000
    assert server["timestamp"] + server["duration"] <= client["timestamp"] + client["duration"] + 1000
    # a 5xx is an error span
    get(ka.outbound, "/status/503", "details:9080")
    spans = zipkin.wait(4)
    assert [s["tags"].get("error") for s in spans[2:]] == ["true", "true"]
    # counted once the collector's 202 is read, just after the receiver stored them
    wait_stat(ka, 'keel_tracing_spans_total{result="sent"}', lambda v: v == 2)


def test_sample_app_chain_and_tcp_port(keel, backend, zipkin, procs, tmp_path):
    """client -> A outbound -> B inbound -> sample-app B (forwards headers) -> B outbound ->
    C inbound -> backend: four spans, one trace, each parent in the trace."""
    b_in, c_in, app_port = free_port(), free_port(), free_port()
    d = config_dir(tmp_path, [("reviews", b_in, "http"), ("ratings", c_in, "http-api"),
                              ("mysql", backend, "tcp")])
    zk = "127.0.0.1:%d" % zipkin.port
    keel("--config-dir", d, "--workload", "ratings-v1.default", "--zipkin", zk,
         upstream=backend, inbound_port=c_in)
    kb = keel("--config-dir", d, "--workload", "reviews-v1.default", "--zipkin", zk,
              upstream=app_port, inbound_port=b_in)
    env = dict(os.environ, HTTP_PROXY="http://127.0.0.1:%d" % kb.outbound)
    procs.append(Proc([KEEL, "sample-app", "--name", "reviews", "--listen", "127.0.0.1:%d" % app_port,
                       "--call", "http://ratings:9080/headers"], str(tmp_path / "app.log"), env=env))
    wait_port(app_port)
    ka = keel("--config-dir", d, "--zipkin", zk, "--inbound", "off")
    st, _ = get(ka.outbound, "/reviews/0", "reviews:9080")
    assert st == 200
    spans = zipkin.wait(4)
    assert len(spans) == 4
    ids = {s["id"] for s in spans}
    assert len({s["traceId"] for s in spans}) == 1
    roots = [s for s in spans if "parentId" not in s]
    assert len(roots) == 1 and roots[0]["kind"] == "CLIENT"
    assert all(s["parentId"] in ids for s in spans if s is not roots[0])
    by_id = {s["id"]: s for s in spans}
    depth = {}
    for s in spans:
        n, p = 0, s
        while "parentId" in p:
            p, n = by_id[p["parentId"]], n + 1
        depth[n] = s
    assert [depth[i]["kind"] for i in range(4)] == ["CLIENT", "SERVER", "CLIENT", "SERVER"]
    assert depth[1]["localEndpoint"]["serviceName"] == "reviews.default"
    assert depth[2]["localEndpoint"]["serviceName"] == "reviews.default"
    assert depth[3]["localEndpoint"]["serviceName"] == "ratings.default"
    assert depth[3]["name"] == "ratings.default.svc.cluster.local:9080/*"
    for i in range(3):
        outer, inner = depth[i], depth[i + 1]
        assert outer["timestamp"] <= inner["timestamp"] + 1000
        assert inner["timestamp"] + inner["duration"] <= outer["timestamp"] + outer["duration"] + 1000
    # a port whose protocol is tcp is not traced: headers pass unchanged, no span
    st, body = get(ka.outbound, "/headers", "mysql:9080", [("x-b3-traceid", "a" * 16),
                                                         ("x-b3-spanid", "b" * 16)])
    h = seen_headers(body)
    assert h["x-b3-traceid"] == "a" * 16 and h["x-b3-spanid"] == "b" * 16
    assert "x-b3-sampled" not in h
    # (A's spans go out in order: a forced one after it arrives alone)
    get(ka.outbound, "/reviews/1", "reviews:9080", [("x-b3-flags", "1")])
    spans = zipkin.wait(8)
    assert not any("mysql" in s["name"] for s in spans)


def wait_stat(k, name, want, timeout=10):
    deadline = time.time() + timeout
    v = None
    while time.time() < deadline:
        v = k.stats().get(name)
        if v is not None and want(v):
            return v
        time.sleep(0.05)
    raise AssertionError("%s = %s" % (name, v))


def test_sampling_decisions(keel, backend, zipkin, tmp_path):
    d = config_dir(tmp_path, [], sampling=0)
    k = keel("--config-dir", d, "--zipkin", "127.0.0.1:%d" % zipkin.port, upstream=backend)
    for _ in range(50):
        st, body = get(k.inbound, "/headers", "details")
        assert st == 200
        assert seen_headers(body)["x-b3-sampled"] == "0"  # propagated, not reported
    # an incoming decision is honoured over 0 %; x-b3-flags: 1 forces it
    _, body = get(k.inbound, "/headers", "details", [("x-b3-sampled", "1")])
    assert seen_headers(body)["x-b3-sampled"] == "1"
    _, body = get(k.inbound, "/headers", "details", [("x-b3-flags", "1")])
    assert seen_headers(body)["x-b3-flags"] == "1"
    spans = zipkin.wait(2)
    # one worker sends its spans in order: none of the 50 came before these two
    assert len(spans) == 2 and spans[1].get("debug") is True and "debug" not in spans[0]
    wait_stat(k, 'keel_tracing_spans_total{result="sent"}', lambda v: v == 2)


def test_sampling_ten_percent_within_three_sigma(keel, backend, zipkin, tmp_path):
    d = config_dir(tmp_path, [], sampling=10)
    k = keel("--config-dir", d, "--zipkin", "127.0.0.1:%d" % zipkin.port, upstream=backend,
             access_log=False)
    n = 10000
    out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "8", "-m", "1",
                          k.url("/status/200")], capture_output=True, text=True, timeout=120)
    assert re.search(r"%d succeeded, 0 failed" % n, out.stdout), out.stdout
    # one worker sends its spans in order: once a forced one arrives, all before it have
    _, body = get(k.inbound, "/headers", "details", [("x-b3-flags", "1")])
    marker = seen_headers(body)["x-b3-spanid"]
    deadline = time.time() + 15
    while time.time() < deadline and not any(s["id"] == marker for s in zipkin.spans):
        zipkin.wait(len(zipkin.spans) + 1, timeout=0.5)
    assert zipkin.spans[-1]["id"] == marker
    sent = len(zipkin.spans) - 1
    sigma = (n * 0.1 * 0.9) ** 0.5
    assert abs(sent - n * 0.1) <= 3 * sigma, sent
    assert k.stats()['keel_tracing_spans_total{result="dropped"}'] == 0


def test_w3c_in_w3c_out(keel, backend, zipkin, tmp_path):
    d = config_dir(tmp_path, [], sampling=100)
    k = keel("--config-dir", d, "--zipkin", "127.0.0.1:%d" % zipkin.port, upstream=backend)
    tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    _, body = get(k.inbound, "/headers", "details",
                  [("traceparent", "00-%s-%s-01" % (tid, parent)), ("tracestate", "congo=t61rcWkgMzE")])
    h = seen_headers(body)
    m = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$", h["traceparent"])
    assert m and m.group(1) == tid and m.group(2) != parent
    assert h["tracestate"] == "congo=t61rcWkgMzE"
    assert h["x-b3-traceid"] == tid and h["x-b3-spanid"] == m.group(2)
    [span] = zipkin.wait(1)
    assert span["traceId"] == tid and span["parentId"] == parent and span["id"] == m.group(2)
    # malformed context: ignored, a new trace starts (never a failure)
    st, body = get(k.inbound, "/headers", "details", [("traceparent", "00-zz-1-01"),
                                                      ("x-b3-traceid", "xyz"), ("b3", "-")])
    assert st == 200
    h = seen_headers(body)
    assert HEX32.match(h["x-b3-traceid"]) and "traceparent" not in h and "b3" not in h


def test_collector_down_never_fails_traffic(keel, procs, tmp_path):
    dead, app = free_port(), free_port()  # nothing listens on dead
    procs.append(Proc([KEEL, "sample-app", "--listen", "127.0.0.1:%d" % app], str(tmp_path / "app.log")))
    wait_port(app)
    d = config_dir(tmp_path, [], sampling=100)
    k = keel("--config-dir", d, "--zipkin", "127.0.0.1:%d" % dead, upstream=app,
             access_log=False)
    out = subprocess.run(["wrk", "-t1", "-c10", "-d3s", k.url("/status/200")],
                         capture_output=True, text=True, timeout=60)
    done = int(re.search(r"(\d+) requests in", out.stdout).group(1))
    assert done > 1100, out.stdout
    assert "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout, out.stdout
    s = k.stats()
    assert s['keel_tracing_spans_total{result="dropped"}'] >= done - 1024 - 2
    assert s['keel_tracing_spans_total{result="sent"}'] == 0


NON_FORWARDING_APP = r'''
import sys, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
proxy = urllib.request.ProxyHandler({"http": sys.argv[2]})
opener = urllib.request.build_opener(proxy)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        # calls details without copying any trace header (istio#7730)
        body = opener.open("http://details:9080/headers", timeout=5).read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


@pytest.mark.parametrize("link", ["on", "off"])
def test_detector_counts_and_links(keel, backend, zipkin, procs, tmp_path, link):
    b_in, a_in, app = free_port(), free_port(), free_port()
    d = config_dir(tmp_path, [("details", b_in, "http"), ("productpage", a_in, "http")])
    zk = "127.0.0.1:%d" % zipkin.port
    keel("--config-dir", d, "--workload", "details-v1.default", "--zipkin", zk, upstream=backend,
         inbound_port=b_in)
    ka = keel("--config-dir", d, "--workload", "productpage-v1.default", "--zipkin", zk,
              "--trace-link", link, "--trace-missing-log", "on", upstream=app, inbound_port=a_in,
              concurrency=2)
    script = tmp_path / "app.py"
    script.write_text(NON_FORWARDING_APP)
    procs.append(Proc([sys.executable, str(script), str(app), "http://127.0.0.1:%d" % ka.outbound],
                      str(tmp_path / "app.log")))
    wait_port(app)
    for _ in range(3):
        assert get(ka.inbound, "/productpage", "productpage:9080")[0] == 200
    spans = zipkin.wait(9)
    assert len(spans) == 9
    assert ka.stats()['keel_trace_context_missing_total{workload="productpage-v1.default"}'] == 3
    traces = {}
    for s in spans:
        traces.setdefault(s["traceId"], []).append(s)
    if link == "off":
        assert len(traces) == 6  # the app broke each request into two traces
        return
    assert len(traces) == 3
    for t in traces.values():
        ids = {s["id"] for s in t}
        [root] = [s for s in t if "parentId" not in s]
        assert root["kind"] == "SERVER" and root["localEndpoint"]["serviceName"] == "productpage.default"
        assert all(s["parentId"] in ids for s in t if s is not root)
        [client] = [s for s in t if s["kind"] == "CLIENT"]
        assert client["parentId"] == root["id"]
    deadline = time.time() + 5
    while "does not forward them (linked)" not in ka.proc.output() and time.time() < deadline:
        time.sleep(0.05)
    assert "does not forward them (linked)" in ka.proc.output()
