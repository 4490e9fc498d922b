"""Telemetry through real sidecars: the seed walkthroughs' resources, unchanged, in a
config dir shared by several `keel proxy` processes; a real Prometheus scrapes them.

The little mesh (all on 127.0.0.1):
    test client --> sleep's outbound --> productpage's inbound --> productpage app
    test client (as productpage app) --> productpage's outbound --> details / reviews-v3
"""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import KEEL, free_port, http_get, raw_exchange, scraped_sum

SEEDS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "examples", "seeds")


def seed(name):
    with open(os.path.join(SEEDS, name)) as f:
        return f.read()


SERVICE = """apiVersion: v1
kind: Service
metadata: {name: %(svc)s, namespace: %(ns)s}
spec:
  selector: {app: %(svc)s}
  ports: [{name: http, port: %(port)d}]
---
"""

WORKLOAD = """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %(name)s, namespace: %(ns)s}
spec:
  address: 127.0.0.1
  ports: {http: %(inbound)d}
  labels: {app: %(app)s, version: %(version)s%(extra)s}
  serviceAccount: %(sa)s
---
"""


class Mesh:
    """Sidecars named by workload; each has .inbound/.outbound/.admin ports via keel()."""

    def __init__(self, keel, backend_factory, tmp_path, workloads, ns="default", extra_labels=""):
        self.dir = tmp_path / "keel.d"
        self.dir.mkdir()
        self.ns = ns
        self.ports = {w: free_port() for w in workloads}
        yaml = ""
        for w, (app, version) in workloads.items():
            yaml += SERVICE % {"svc": app, "ns": ns, "port": 9080}
            yaml += WORKLOAD % {"name": w, "ns": ns, "inbound": self.ports[w], "app": app,
                                "version": version, "sa": "bookinfo-" + app, "extra": extra_labels}
        (self.dir / "registry.yaml").write_text(yaml)
        self.keel, self.backend_factory = keel, backend_factory
        self.workloads = workloads
        self.proxies = {}

    def add(self, name):
        (self.dir / name).write_text(seed(name))

    def start(self, *extra):
        for w in self.workloads:
            app = self.backend_factory(w)
            # inbound on the port the registry names; outbound on a free port
            self.proxies[w] = self.keel("--config-dir", str(self.dir), "--workload", "%s.%s" % (w, self.ns),
                                        *extra, upstream=app, access_log=False, inbound_port=self.ports[w])
        return self

    def call(self, src, host, path="/status/200", method="GET", body=b""):
        k = self.proxies[src]
        req = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            method.encode(), path.encode(), host.encode(), len(body), body)
        out = raw_exchange(k.outbound, req)
        return int(out.split(b" ", 2)[1])

    def stdout_json(self, w, n, timeout=3.0):
        deadline = time.time() + timeout
        lines = []
        while time.time() < deadline:
            lines = [json.loads(l) for l in self.proxies[w].proc.output().splitlines()
                     if l.startswith("{")]
            if len(lines) >= n:
                break
            time.sleep(0.05)
        return lines

    def wait_metric(self, w, name, want, timeout=3.0, **labels):
        """The inbound side reports after it has answered: its count may trail the
        client's response by a moment."""
        deadline = time.time() + timeout
        while self.metric(w, name, **labels) != want and time.time() < deadline:
            time.sleep(0.02)
        return self.metric(w, name, **labels)

    def metric(self, w, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        return scraped_sum(self.proxies[w].admin, name, **labels)


BOOKINFO = {"sleep-v1": ("sleep", "v1"), "productpage-v1": ("productpage", "v1"),
            "details-v1": ("details", "v1"), "reviews-v3": ("reviews", "v3")}

GO_DURATION = re.compile(r'^\d+(\.\d+)?(ns|µs|ms|s)$')
RFC3339_US = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$')


def test_seed000_stdio_lines_exact(keel, backend_factory, tmp_path):
    m = Mesh(keel, backend_factory, tmp_path, BOOKINFO)
    m.add("000-newlog-stdio.yaml")
    m.start()
    assert m.call("sleep-v1", "productpage:9080") == 200
    client = m.stdout_json("sleep-v1", 1)
    server = m.stdout_json("productpage-v1", 1)
    assert len(client) == 1 and len(server) == 1
    keys = ["level", "time", "instance", "destination", "destinationName", "latency",
            "responseCode", "responseSize", "source", "sourceName"]
    for line in client + server:
        assert list(line) == keys
        assert line["level"] == "warn"
        assert line["instance"] == "newlog.logentry.istio-system"
        assert RFC3339_US.match(line["time"]), line["time"]
        assert GO_DURATION.match(line["latency"]), line["latency"]
        assert (line["source"], line["sourceName"]) == ("sleep", "sleep-v1")
        assert (line["destination"], line["destinationName"]) == ("productpage", "productpage-v1")
        assert line["responseCode"] == 200 and line["responseSize"] == len(b"status 200\n")
    # and the raw text keeps the seed's exact rendering (no spaces, ints unquoted)
    raw = [l for l in m.proxies["sleep-v1"].proc.output().splitlines() if l.startswith("{")][0]
    assert raw.startswith('{"level":"warn","time":"') and '"responseCode":200,' in raw


def test_seed001_double_request_count_and_log_variants(keel, backend_factory, tmp_path):
    m = Mesh(keel, backend_factory, tmp_path, BOOKINFO)
    m.add("001-doublerequestcount.yaml")
    m.add("001-newlog-user.yaml")
    m.add("001-mesh-access-log.yaml")
    m.start()
    for _ in range(3):
        assert m.call("sleep-v1", "productpage:9080") == 200
    for w, reporter in (("sleep-v1", "client"), ("productpage-v1", "server")):
        labels = {"reporter": reporter, "source": "sleep-v1", "destination": "productpage-v1",
                  "message": "twice the fun!"}
        assert m.wait_metric(w, "istio_double_request_count", 6, **labels) == 6
    # one more call adds exactly 2 per reporter
    m.call("sleep-v1", "productpage:9080")
    assert m.wait_metric("sleep-v1", "istio_double_request_count", 8, reporter="client") == 8
    assert m.wait_metric("productpage-v1", "istio_double_request_count", 8, reporter="server") == 8
    # the user variant: `user` falls back to "unknown"
    lines = m.stdout_json("productpage-v1", 4)
    assert len(lines) == 4 and all(l["user"] == "unknown" for l in lines)
    assert list(lines[0]) == ["level", "time", "instance", "destination", "latency", "responseCode",
                              "responseSize", "source", "user"]
    # the mesh access log (accessLogFile: /dev/stdout) on both ends of a 418
    assert m.call("sleep-v1", "productpage:9080", "/status/418") == 418
    for w in ("sleep-v1", "productpage-v1"):
        deadline = time.time() + 3
        while '"GET /status/418 HTTP/1.1" 418' not in m.proxies[w].proc.output() and time.time() < deadline:
            time.sleep(0.05)
        assert '"GET /status/418 HTTP/1.1" 418' in m.proxies[w].proc.output()

    # re-apply newlog with fewer variables and a match on details, into the running mesh
    p = subprocess.run([KEEL, "apply", "-f", os.path.join(SEEDS, "001-newlog-details-only.yaml"),
                        "--config-dir", str(m.dir)], capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    deadline = time.time() + 5
    while time.time() < deadline and any(
            m.metric(w, "keel_config_generation") < 2 for w in m.proxies):
        time.sleep(0.05)
    before = {w: len(m.stdout_json(w, 0)) for w in m.proxies}
    assert m.call("productpage-v1", "details:9080") == 200
    assert m.call("productpage-v1", "reviews:9080") == 200
    assert m.call("sleep-v1", "productpage:9080") == 200
    time.sleep(0.3)
    new = {w: m.stdout_json(w, before[w] + 1, timeout=1)[before[w]:] for w in m.proxies}
    # exactly 2 lines: the client and the server report of the productpage -> details call
    assert [len(new[w]) for w in ("sleep-v1", "productpage-v1", "details-v1", "reviews-v3")] == [0, 1, 1, 0]
    for line in new["productpage-v1"] + new["details-v1"]:
        assert list(line) == ["level", "time", "instance", "latency", "service"]
        assert line["service"] == "details"


PODINFO_WASM = """apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: podinfo-wasmplugin
  namespace: podinfo
spec:
  selector:
    matchLabels:
      mesh: podinfo
  url: https://storage.googleapis.com/istio-build/proxy/attributegen-359dcd3a19f109c50e97517fe6b1e2676e870c4d.wasm
  phase: AUTHN
  pluginConfig:
    attributes:
      - output_attribute: "istio_operationId"
        match:
          - value: "GET /healthz"
            condition: request.method == 'GET' && request.url_path == '/healthz'
          - value: "POST /echo"
            condition: request.method == 'POST' && request.url_path == '/echo'
"""


def test_seed004_route_names(keel, backend_factory, tmp_path):
    m = Mesh(keel, backend_factory, tmp_path, {"client-v1": ("client", "v1"), "podinfo-v1": ("podinfo", "v1")},
             ns="podinfo", extra_labels=", mesh: podinfo")
    # the seed's Telemetry resource verbatim; its WasmPlugin with targetRefs swapped for
    # a workload selector (a sidecar is not the waypoint)
    telemetry = seed("004-route-metrics.yaml").split("---\n", 1)[1]
    (m.dir / "telemetry.yaml").write_text(telemetry)
    (m.dir / "wasm.yaml").write_text(PODINFO_WASM)
    m.start()
    assert m.call("client-v1", "podinfo:9080", "/healthz") == 200
    assert m.call("client-v1", "podinfo:9080", "/healthz") == 200
    assert m.call("client-v1", "podinfo:9080", "/echo", "POST", b"hi") == 200
    for w, reporter in (("client-v1", "source"), ("podinfo-v1", "destination")):
        assert m.metric(w, "istio_requests_total", reporter=reporter, route_name="GET /healthz") == 2
        assert m.metric(w, "istio_requests_total", reporter=reporter, route_name="POST /echo") == 1
        assert m.metric(w, "istio_requests_total", reporter=reporter, destination_app="podinfo") == 3


def prometheus_query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(q))
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(procs, tmp_path):
    from conftest import Proc
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is installed by scripts/deps.sh"

    def start(targets):
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
                       "scrape_configs:\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n"
                       "  static_configs:\n  - targets: [%s]\n" % ", ".join("'127.0.0.1:%d'" % t for t in targets))
        p = Proc([binary, "--config.file", str(cfg), "--storage.tsdb.path", str(tmp_path / "tsdb"),
                  "--web.listen-address", "127.0.0.1:%d" % port], str(tmp_path / "prometheus.log"))
        procs.append(p)
        deadline = time.time() + 40
        while time.time() < deadline:
            try:
                if len(prometheus_query(port, 'up == 1')) == len(targets):
                    return port
            except OSError:
                pass
            time.sleep(0.2)
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/targets" % port, timeout=5) as r:
            health = [(t["scrapeUrl"], t["health"], t["lastError"])
                      for t in json.loads(r.read())["data"]["activeTargets"]]
        raise AssertionError("prometheus did not scrape all targets: %s" % health)
    return start


def wait_query(port, q, want, timeout=15):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = prometheus_query(port, q)
        if want(got):
            return got
        time.sleep(0.3)
    raise AssertionError("%s -> %s" % (q, got))


def test_prometheus_scrapes_the_seed_queries(keel, backend_factory, tmp_path, prometheus):
    # istio-telemetry: in seed 001 the Mixer workload itself was the destination counted
    m = Mesh(keel, backend_factory, tmp_path, dict(BOOKINFO, **{"istio-telemetry": ("telemetry", "v1")}))
    m.add("001-doublerequestcount.yaml")
    m.start()
    port = prometheus([k.admin for k in m.proxies.values()])
    for _ in range(3):  # spread over scrapes, so that rate() sees the counters move
        assert m.call("sleep-v1", "productpage:9080") == 200
        assert m.call("productpage-v1", "reviews:9080") == 200
        assert m.call("productpage-v1", "details:9080") == 200
        assert m.call("productpage-v1", "telemetry:9080") == 200
        time.sleep(1.2)

    def value(res):
        return sum(float(r["value"][1]) for r in res)
    got = wait_query(port, 'istio_requests_total{destination_service="productpage.default.svc.cluster.local"}',
                     lambda r: len(r) == 2 and value(r) == 6)
    assert {r["metric"]["reporter"] for r in got} == {"source", "destination"}
    got = wait_query(port, 'istio_requests_total{destination_service="reviews.default.svc.cluster.local", '
                           'destination_version="v3"}', lambda r: value(r) == 6)
    assert {r["metric"]["source_workload"] for r in got} == {"productpage-v1"}
    wait_query(port, 'istio_requests_total', lambda r: value(r) == 24)
    got = wait_query(port, 'istio_double_request_count{destination="istio-telemetry"}',
                     lambda r: value(r) == 12)
    assert {(r["metric"]["reporter"], r["metric"]["source"]) for r in got} == {
        ("client", "productpage-v1"), ("server", "productpage-v1")}
    wait_query(port, 'rate(istio_requests_total{destination_service=~"productpage.*", response_code="200"}[5m])',
               lambda r: len(r) == 2 and all(float(x["value"][1]) > 0 for x in r))
    got = wait_query(port, 'istio_double_request_count{destination="productpage-v1"}',
                     lambda r: value(r) == 12)
    assert {(r["metric"]["reporter"], r["metric"]["message"]) for r in got} == {
        ("client", "twice the fun!"), ("server", "twice the fun!")}


def test_prometheus_route_name_query(keel, backend_factory, tmp_path, prometheus):
    m = Mesh(keel, backend_factory, tmp_path, {"client-v1": ("client", "v1"), "podinfo-v1": ("podinfo", "v1")},
             ns="podinfo", extra_labels=", mesh: podinfo")
    (m.dir / "telemetry.yaml").write_text(seed("004-route-metrics.yaml").split("---\n", 1)[1])
    (m.dir / "wasm.yaml").write_text(PODINFO_WASM)
    m.start()
    port = prometheus([k.admin for k in m.proxies.values()])
    deadline = time.time() + 4
    while time.time() < deadline:
        m.call("client-v1", "podinfo:9080", "/healthz")
        m.call("client-v1", "podinfo:9080", "/echo", "POST", b"x")
        time.sleep(0.1)
    got = wait_query(port, 'sum(rate(istio_requests_total{destination_app="podinfo", route_name!="unknown"}[1m])) '
                           'by (route_name)', lambda r: len(r) == 2)
    assert {r["metric"]["route_name"] for r in got} == {"GET /healthz", "POST /echo"}


def test_exact_counts_under_load(keel, backend_factory, tmp_path):
    n = int(os.environ.get("KEEL_LOAD_REQUESTS", "100000"))
    m = Mesh(keel, backend_factory, tmp_path, {"client-v1": ("client", "v1"), "server-v1": ("server", "v1")})
    m.add("000-newlog-stdio.yaml")
    # h2load speaks HTTP/1.1 to the client's outbound listener with Host 127.0.0.1:PORT,
    # which a --route sends to the server's sidecar
    m.start("--concurrency", "2", "--route", "127.0.0.1=127.0.0.1:%d" % m.ports["server-v1"])
    client = m.proxies["client-v1"]
    p = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "16",
                        "http://127.0.0.1:%d/status/200" % client.outbound],
                       capture_output=True, text=True, timeout=600)
    assert re.search(r"requests: %d total, %d started, %d done, %d succeeded" % (n, n, n, n), p.stdout), p.stdout
    time.sleep(0.5)
    assert m.metric("client-v1", "istio_requests_total", reporter="source") == n
    assert m.metric("server-v1", "istio_requests_total", reporter="destination") == n
    for w in ("client-v1", "server-v1"):
        deadline = time.time() + 10
        count = 0
        while time.time() < deadline:
            count = sum(1 for l in m.proxies[w].proc.output().splitlines() if l.startswith('{"level"'))
            if count >= n:
                break
            time.sleep(0.2)
        assert count == n
        assert m.metric(w, "keel_access_log_lines_total", result="dropped") == 0


def test_series_limit_and_telemetry_off(keel, backend):
    k = keel("--metric-series-limit", "3", upstream=backend)
    for code in (200, 201, 202, 203, 204, 205):
        raw_exchange(k.inbound, b"GET /status/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % code)
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)
    series = [l for l in text.splitlines() if l.startswith("istio_requests_total{")]
    assert len(series) == 3
    assert 'keel_metrics_series_overflow_total{metric="istio_requests_total"} 3' in text
    off = keel("--telemetry", "off", upstream=backend)
    raw_exchange(off.inbound, b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % off.admin)
    assert "istio_requests_total{" not in text
    assert 'keel_downstream_rq_total{response_code_class="2xx"} 1' in text


def test_metric_expiry(keel, backend):
    k = keel("--metric-expiry", "300", upstream=backend)
    raw_exchange(k.inbound, b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)
    assert "istio_requests_total{" in text
    deadline = time.time() + 5
    while time.time() < deadline and "istio_requests_total{" in text:
        time.sleep(0.2)
        _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)
    assert "istio_requests_total{" not in text
    raw_exchange(k.inbound, b"GET /status/201 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)
    assert 'response_code="201"' in text and 'response_code="200"' not in text
