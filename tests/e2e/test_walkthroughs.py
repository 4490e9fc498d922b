"""The seed walkthroughs (examples/seed-*/README.md), run as a user runs them.

Each test starts `keel mesh up` from the example's folder in its own --state-dir, applies
the seed's configs with `keel apply` (no --config-dir: into the running mesh), sends the
README's curls through the client's sidecar (`curl -x http://127.0.0.1:OUT`, what
`kubectl exec curl -- curl URL` becomes) and asserts the output the README shows."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error

from conftest import KEEL, ROOT, free_port, http_get, wait_port
from test_mesh import Mesh

EX = os.path.join(ROOT, "examples")
SEEDS = os.path.join(EX, "seeds")
NEWLOG = '"instance":"newlog.logentry.istio-system"'


class Walk(Mesh):
    """A mesh of the walkthrough: its components, the README's commands."""

    def up(self, timeout=20):
        self.wait_for("ready in", timeout)
        rc, st = self.status()
        assert rc == 0 and st["healthy"], st
        self.comps = {c["name"]: c for c in st["components"]}
        self.gw_url = st["gateway_url"]
        self.env = dict(os.environ, KEEL_MESH_DIR=str(self.state))
        return self

    def admins(self):
        return [c["admin_port"] for c in self.comps.values() if c["admin_port"] > 0]

    def scrape(self, name):
        return http_get("http://127.0.0.1:%d/stats/prometheus" % self.comps[name]["admin_port"])[1]

    def reloads(self, port):
        _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % port)
        return int(re.search(r'^keel_config_reloads_total\{result="success"\} (\d+)', text, re.M).group(1))

    def apply(self, path):
        """keel apply -f PATH into the running mesh; returns once every proxy reloaded."""
        before = {p: self.reloads(p) for p in self.admins()}
        r = subprocess.run([KEEL, "apply", "-f", path], capture_output=True, text=True, env=self.env, timeout=20)
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 10
        while any(self.reloads(p) <= n for p, n in before.items()):
            assert time.time() < deadline, "a proxy did not reload after keel apply -f %s" % path
            time.sleep(0.05)
        return r.stdout

    def curl(self, client, url, *args):
        """kubectl exec CLIENT -- curl URL: through the client's sidecar."""
        out = self.comps[client + "-sidecar"]["outbound_port"]
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-x", "http://127.0.0.1:%d" % out, *args, url],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        body, _, code = r.stdout.rpartition("\n")
        return int(code), body

    def log(self, name):
        return (self.state / "logs" / (name + ".log")).read_text(errors="replace")

    def newlog_lines(self):
        """The stdio JSON lines of every proxy (grep NEWLOG logs/*.log)."""
        lines = []
        for f in sorted(os.listdir(self.state / "logs")):
            lines += [json.loads(l) for l in (self.state / "logs" / f).read_text(errors="replace").splitlines()
                      if NEWLOG in l]
        return lines

    def wait_newlog(self, n, timeout=5):
        deadline = time.time() + timeout
        while len(self.newlog_lines()) < n:
            assert time.time() < deadline, "%d stdio lines, wanted %d" % (len(self.newlog_lines()), n)
            time.sleep(0.05)
        return self.newlog_lines()


def series(text, metric):
    """[(labels, value)] of one metric in a /stats/prometheus text."""
    out = []
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[line.index("{"):line.rindex("}")]))
            out.append((labels, float(line.rsplit(" ", 1)[1])))
    return out


def total(text, metric, **want):
    return sum(v for labels, v in series(text, metric) if all(labels.get(k) == x for k, x in want.items()))


LATENCY = re.compile(r"^\d+(\.\d+)?(ns|µs|ms|s)$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_seed_000_helloworld_newlog_and_double_request_count(tmp_path):
    m = Walk(tmp_path, os.path.join(EX, "seed-000-helloworld")).up()
    try:
        assert set(m.comps) == {"curl-deploy", "curl-deploy-sidecar", "helloworld-v1", "helloworld-v1-sidecar",
                                "helloworld-v2", "helloworld-v2-sidecar"}
        out = m.apply(os.path.join(SEEDS, "000-newlog-stdio.yaml"))
        assert out.splitlines() == ["logentry/newlog (namespace istio-system) created",
                                    "stdio/newhandler (namespace istio-system) created",
                                    "rule/newlogstdio (namespace istio-system) created"]
        m.apply(os.path.join(SEEDS, "001-doublerequestcount.yaml"))
        # kubectl exec curl-deploy -- curl helloworld:5000/hello, four times: v1 and v2 in turn
        versions = []
        for _ in range(4):
            code, body = m.curl("curl-deploy", "http://helloworld:5000/hello")
            assert code == 200
            hit = re.match(r"^Hello version: (v[12]), instance: helloworld-\1-\d+$", body.splitlines()[0])
            assert hit, body
            versions.append(hit.group(1))
        assert sorted(versions) == ["v1", "v1", "v2", "v2"]
        # the seed's stdio lines: one per report, the client's and the server's, in its exact form
        lines = m.wait_newlog(8)
        assert len(lines) == 8
        for j in lines:
            assert list(j) == ["level", "time", "instance", "destination", "destinationName", "latency",
                               "responseCode", "responseSize", "source", "sourceName"]
            assert (j["level"], j["instance"], j["destination"], j["source"], j["sourceName"]) == \
                ("warn", "newlog.logentry.istio-system", "helloworld", "curl", "curl-deploy")
            assert j["destinationName"] in ("helloworld-v1", "helloworld-v2")
            assert j["responseCode"] == 200 and isinstance(j["responseSize"], int) and j["responseSize"] > 0
            assert LATENCY.match(j["latency"]) and TIME.match(j["time"]), j
        # istio_double_request_count: 2 per request on each side, client (curl-deploy's sidecar)
        # and server (the helloworld that answered)
        def counts():
            c = m.scrape("curl-deploy-sidecar")
            s = {v: m.scrape("helloworld-%s-sidecar" % v) for v in ("v1", "v2")}
            return ({v: total(c, "istio_double_request_count", reporter="client", source="curl-deploy",
                              destination="helloworld-" + v, message="twice the fun!") for v in ("v1", "v2")},
                    {v: total(s[v], "istio_double_request_count", reporter="server", source="curl-deploy",
                              destination="helloworld-" + v, message="twice the fun!") for v in ("v1", "v2")})
        assert counts() == ({"v1": 4, "v2": 4}, {"v1": 4, "v2": 4})
        code, body = m.curl("curl-deploy", "http://helloworld:5000/hello")
        v = re.match(r"^Hello version: (v[12])", body).group(1)
        deadline = time.time() + 3  # the server side reports just after it has answered
        client, server = counts()
        while not (client[v] == 6 and server[v] == 6) and time.time() < deadline:
            time.sleep(0.05)
            client, server = counts()
        assert client[v] == 6 and server[v] == 6
        assert sum(client.values()) == 10 and sum(server.values()) == 10
    finally:
        assert m.stop() == 0, m.text()


def test_seed_001_bookinfo_metrics_logs_and_access_log(tmp_path):
    m = Walk(tmp_path, os.path.join(EX, "bookinfo", "bookinfo.yaml"), os.path.join(EX, "bookinfo", "bookinfo-gateway.yaml"),
             os.path.join(EX, "seed-001-bookinfo")).up()
    gw = "istio-ingressgateway"

    def head_productpage():
        r = subprocess.run(["curl", "-sI", m.gw_url + "/productpage"], capture_output=True, text=True, timeout=10)
        assert r.stdout.startswith("HTTP/1.1 200 OK"), r.stdout

    try:
        assert m.gw_url.startswith("http://127.0.0.1:")
        # Collect metrics: istio_double_request_count, 2 per /productpage per report
        m.apply(os.path.join(SEEDS, "001-doublerequestcount.yaml"))
        for calls in (1, 2):
            head_productpage()
            assert total(m.scrape(gw), "istio_double_request_count", reporter="client", source=gw,
                         destination="productpage-v1") == 2 * calls
            assert total(m.scrape("productpage-v1-sidecar"), "istio_double_request_count", reporter="server",
                         source=gw, destination="productpage-v1") == 2 * calls
        head_productpage()  # three calls: reviews v1, v2, v3 in turn
        # the seed's Prometheus queries, here summed over every proxy's endpoint
        texts = [m.scrape(n) for n, c in m.comps.items() if c["admin_port"] > 0]
        pp = "productpage.default.svc.cluster.local"
        assert sum(total(t, "istio_requests_total", destination_service=pp, reporter="destination") for t in texts) == 3
        assert sum(total(t, "istio_requests_total", destination_service="reviews.default.svc.cluster.local",
                         destination_version="v3", reporter="destination") for t in texts) == 1
        assert sum(total(t, "istio_requests_total", destination_service=pp, response_code="200") for t in texts) == 6

        # Logs: the newlog stream with `user`: every report of a call (gateway -> productpage,
        # productpage -> details, productpage -> reviews, reviews -> ratings), two each
        m.apply(os.path.join(SEEDS, "001-newlog-user.yaml"))
        _, page = http_get(m.gw_url + "/productpage")
        reviews = next(c["body"] for c in json.loads(page)["calls"] if c["url"].startswith("http://reviews"))
        hops = {("istio-ingressgateway", "productpage"), ("productpage", "details"), ("productpage", "reviews")}
        if reviews["version"] != "v1":  # reviews v2 and v3 call ratings
            hops.add(("reviews", "ratings"))
        lines = m.wait_newlog(2 * len(hops))
        assert len(lines) == 2 * len(hops) and {(j["source"], j["destination"]) for j in lines} == hops
        for j in lines:
            assert list(j) == ["level", "time", "instance", "destination", "latency", "responseCode",
                               "responseSize", "source", "user"]
            assert j["user"] == "unknown" and j["responseCode"] == 200
        # the details-only rule: exactly 2 lines per call, with the fewer variables
        m.apply(os.path.join(SEEDS, "001-newlog-details-only.yaml"))
        before = len(lines)
        for calls in (1, 2):
            head_productpage()
            m.wait_newlog(before + 2 * calls)
        time.sleep(0.5)  # nothing more arrives: the other hops match no rule
        every = m.newlog_lines()
        new = [j for j in every if "service" in j]
        assert len(every) == before + 4 and len(new) == 4
        for j in new:
            assert list(j) == ["level", "time", "instance", "latency", "service"] and j["service"] == "details"

        # Envoy's access logs: sleep -> httpbin /status/418, logged by both sidecars
        m.apply(os.path.join(SEEDS, "001-mesh-access-log.yaml"))
        code, body = m.curl("sleep", "http://httpbin:8000/status/418")
        assert code == 418 and "-=[ teapot ]=-" in body
        teapot = '"GET /status/418 HTTP/1.1" 418 - via_upstream'

        def logged():
            return [sum(teapot in l for l in m.log(n).splitlines()) for n in ("sleep-sidecar", "httpbin-sidecar")]
        deadline = time.time() + 5
        while logged() != [1, 1]:
            assert time.time() < deadline, logged()
            time.sleep(0.05)
        sl = [l for l in m.log("sleep-sidecar").splitlines() if teapot in l][0]
        assert '"httpbin:8000"' in sl and "outbound|8000||httpbin.default.svc.cluster.local" in sl
        hl = [l for l in m.log("httpbin-sidecar").splitlines() if teapot in l][0]
        assert re.search(r" inbound\|\d+\|\| ", hl)
        # accessLogFile "" turns them off again
        m.apply(os.path.join(EX, "seed-001-bookinfo", "mesh-access-log-off.yaml"))
        assert m.curl("sleep", "http://httpbin:8000/status/418")[0] == 418
        time.sleep(0.5)  # a line would be written by now
        assert logged() == [1, 1]
    finally:
        assert m.stop() == 0, m.text()


def test_seed_003_propagation_and_port_protocols(tmp_path):
    m = Walk(tmp_path, os.path.join(EX, "seed-003-tracing"), args=("--tracing",)).up()
    try:
        # --tracing: the collector plays the seed's Zipkin, its URL printed
        zipkin = re.search(r"^ZIPKIN_URL=(http://127\.0\.0\.1:\d+)$", m.text(), re.M).group(1)
        assert re.search(r"^zipkin \(collector\)\s+zipkin\.istio-system\s", m.text(), re.M), m.text()
        assert "keel mesh: 9/9 ready in" in m.text()
        # the mesh config with tracing on (sampling 100, zipkin address) takes effect
        m.apply(os.path.join(SEEDS, "001-mesh-access-log.yaml"))
        # frontend -> backend /headers: the trace headers the app forwards reach the backend
        hdrs = {"x-request-id": "3f1d2b4c-5a6e-4f70-8a9b-0c1d2e3f4a5b", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
                "x-b3-spanid": "e457b5a2e4d86bd1", "x-b3-parentspanid": "05e3ac9a4f6e3b90", "x-b3-sampled": "1"}
        args = sum((["-H", "%s: %s" % kv] for kv in hdrs.items()), [])
        code, body = m.curl("sleep", "http://frontend:8080/", *args)
        assert code == 200
        page = json.loads(body)
        seen = page["calls"][0]["body"]["headers"]
        assert page["calls"][0]["status"] == 200
        # the ids that make one trace; the span ids are each hop's (a traced proxy makes new ones)
        for k in ("x-request-id", "x-b3-traceid", "x-b3-sampled"):
            assert seen[k] == hdrs[k], (k, seen)
        assert re.match(r"^[0-9a-f]{16}$", seen["x-b3-spanid"]) and "x-b3-parentspanid" in seen
        assert seen["x-b3-spanid"] != hdrs["x-b3-spanid"]
        # x-request-id end to end: every sidecar's access log line of this request carries it
        rid = hdrs["x-request-id"]
        deadline = time.time() + 5
        while not all(rid in m.log(n) for n in ("sleep-sidecar", "frontend-sidecar", "backend-sidecar")):
            assert time.time() < deadline
            time.sleep(0.05)
        # the protocol of each port from its name, as /config_dump shows it
        _, dump = http_get("http://127.0.0.1:%d/config_dump" % m.comps["sleep-sidecar"]["admin_port"])
        d = json.loads(dump)
        svc = next(s for s in d["registry"]["services"] if s["name"] == "backend")
        assert {(p["name"], p["protocol"]) for p in svc["ports"]} == {("http", "HTTP"), ("tcp", "TCP")}
        r = subprocess.run([KEEL, "get", "svc", "--config-dir", str(m.state / "config")], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0 and re.search(r"backend .*http:8080->\S*/HTTP,tcp:9000->\S*/TCP", r.stdout), r.stdout
        # 5. the trace in the collector: four spans, one id, each the child of the one before
        tid = hdrs["x-b3-traceid"]
        spans = wait_spans(zipkin, tid, 4)
        kinds = [(s["localEndpoint"]["serviceName"], s["kind"]) for s in spans]
        assert sorted(kinds) == [("backend.default", "SERVER"), ("frontend.default", "CLIENT"),
                                 ("frontend.default", "SERVER"), ("sleep.default", "CLIENT")], kinds
        by = dict(zip(kinds, spans))
        chain = [by[("sleep.default", "CLIENT")], by[("frontend.default", "SERVER")],
                 by[("frontend.default", "CLIENT")], by[("backend.default", "SERVER")]]
        assert chain[0]["parentId"] == hdrs["x-b3-spanid"]  # curl's span, never reported
        for parent, child in zip(chain, chain[1:]):
            assert child["parentId"] == parent["id"]
            assert parent["timestamp"] - 1000 <= child["timestamp"]
            assert child["timestamp"] + child["duration"] <= parent["timestamp"] + parent["duration"] + 1000
        assert {s["traceId"] for s in spans} == {tid}
        assert {s["tags"]["guid:x-request-id"] for s in spans} == {hdrs["x-request-id"]}
        # what backend's /headers showed: its sidecar's span, frontend's CLIENT span as parent
        assert seen["x-b3-spanid"] == chain[3]["id"] and seen["x-b3-parentspanid"] == chain[2]["id"]
        c = chain[2]
        assert c["name"] == "backend.default.svc.cluster.local:8080/*" and c["kind"] == "CLIENT"
        assert c["tags"]["http.url"] == "http://backend:8080/headers"
        assert c["tags"]["upstream_cluster"] == "outbound|8080||backend.default.svc.cluster.local"
        assert c["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": m.comps["backend-sidecar"]["inbound_port"]}
        r = subprocess.run([KEEL, "traces", "--collector", zipkin, tid], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        tree = [re.sub(r"  [0-9.]+ ms  200", "", l) for l in r.stdout.splitlines()]
        assert re.match(r"^trace %s  \(4 spans, [0-9.]+ ms\)$" % tid, tree[0]), r.stdout
        assert tree[1:] == [
            "└─ sleep.default  frontend.default.svc.cluster.local:8080/*  (orphan: parent e457b5a2e4d86bd1 missing)",
            "   └─ frontend.default  frontend.default.svc.cluster.local:8080/*",
            "      └─ frontend.default  backend.default.svc.cluster.local:8080/*",
            "         └─ backend.default  backend.default.svc.cluster.local:8080/*"], r.stdout
        _, body = http_get(zipkin + "/api/v2/services")
        assert json.loads(body) == ["backend.default", "frontend.default", "sleep.default"]
        _, body = http_get(zipkin + "/api/v2/dependencies?endTs=%d&lookback=3600000" % (time.time() * 1000 + 1000))
        assert json.loads(body) == [{"parent": "frontend.default", "child": "backend.default", "callCount": 1},
                                    {"parent": "sleep.default", "child": "frontend.default", "callCount": 1}]
        # 6. legacy forwards nothing: counted by its sidecar, and still one tree
        code, body = m.curl("sleep", "http://legacy:8080/")
        assert code == 200 and json.loads(body)["calls"][0]["status"] == 200
        assert total(m.scrape("legacy-sidecar"), "keel_trace_context_missing_total", workload="legacy.default") == 1
        assert total(m.scrape("frontend-sidecar"), "keel_trace_context_missing_total") == 0
        deadline = time.time() + 10
        while True:
            r = subprocess.run([KEEL, "traces", "--collector", zipkin, "--service", "legacy.default", "--limit", "1"],
                               capture_output=True, text=True, timeout=10)
            if "(4 spans," in r.stdout or time.time() > deadline:
                break
            time.sleep(0.05)
        tree = [re.sub(r"  [0-9.]+ ms  200", "", l) for l in r.stdout.splitlines()]
        assert re.match(r"^trace [0-9a-f]{32}  \(4 spans, [0-9.]+ ms\)$", tree[0]), r.stdout
        assert tree[1:] == [
            "└─ sleep.default  legacy.default.svc.cluster.local:8080/*",
            "   └─ legacy.default  legacy.default.svc.cluster.local:8080/*",
            "      └─ legacy.default  backend.default.svc.cluster.local:8080/*",
            "         └─ backend.default  backend.default.svc.cluster.local:8080/*"], r.stdout
        # the http port: HTTP metrics per request
        text = m.scrape("backend-sidecar")
        assert total(text, "istio_requests_total", reporter="destination", destination_app="backend", source_app="frontend",
                     request_protocol="http") == 1
        assert not series(text, "istio_tcp_sent_bytes_total")
        # a port proxied as TCP: bytes and connections only, no request metrics
        listen, admin = free_port(), free_port()
        tcp = subprocess.Popen([KEEL, "proxy", "--config-dir", str(m.state / "config"), "--workload", "sleep.default",
                                "--inbound", "off", "--outbound", "off", "--admin", "127.0.0.1:%d" % admin,
                                "--tcp-route", "127.0.0.1:%d=127.0.0.1:%d" % (listen, m.comps["backend"]["app_port"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(admin)  # not the TCP port: a probe would be a connection too
            deadline = time.time() + 5
            while http_get("http://127.0.0.1:%d/ready" % admin)[0] != 200:
                assert time.time() < deadline
                time.sleep(0.05)
            r = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/headers" % listen], capture_output=True,
                               text=True, timeout=10)
            assert json.loads(r.stdout)["headers"]["User-Agent"].startswith("curl/")
            deadline = time.time() + 5
            while True:
                text = http_get("http://127.0.0.1:%d/stats/prometheus" % admin)[1]
                if total(text, "istio_tcp_connections_closed_total") == 1:
                    break
                assert time.time() < deadline, text
                time.sleep(0.05)
            assert total(text, "istio_tcp_connections_opened_total") == 1
            assert total(text, "istio_tcp_received_bytes_total") > 0 and total(text, "istio_tcp_sent_bytes_total") > 0
            assert not series(text, "istio_requests_total")
        finally:
            tcp.terminate()
            assert tcp.wait(10) == 0
    finally:
        assert m.stop() == 0, m.text()


def wait_spans(zipkin, trace_id, n, timeout=10):
    """GET /api/v2/trace/ID once it holds n spans."""
    deadline = time.time() + timeout
    while True:
        try:
            spans = json.loads(http_get(zipkin + "/api/v2/trace/" + trace_id)[1])
        except urllib.error.HTTPError as e:  # 404 until the first span is in
            assert e.code == 404
            spans = []
        if len(spans) >= n:
            return spans
        assert time.time() < deadline, spans
        time.sleep(0.05)


def test_seed_004_podinfo_route_metrics_at_the_waypoint(tmp_path):
    m = Walk(tmp_path, os.path.join(EX, "seed-004-podinfo-waypoint"), os.path.join(SEEDS, "004-waypoint.yaml")).up()
    prom = None
    try:
        assert m.comps["podinfo"]["outbound_port"] == 0 and "podinfo-sidecar" not in m.comps  # ambient
        assert "warning" not in m.text()  # the waypoint's WorkloadEntry is mesh up's own
        out = m.apply(os.path.join(SEEDS, "004-route-metrics.yaml"))
        assert "WasmPlugin/podinfo-wasmplugin (namespace podinfo) created" in out
        # while true; do curl http://podinfo-svc.podinfo:9898/healthz; done (and POST /echo)
        for _ in range(10):
            assert m.curl("curl", "http://podinfo-svc.podinfo:9898/healthz") == (200, "ok")
            assert m.curl("curl", "http://podinfo-svc.podinfo:9898/echo", "-X", "POST", "-d", "test") == (200, "test")
        text = m.scrape("podinfo-waypoint")
        routes = {}
        for labels, v in series(text, "istio_requests_total"):
            assert labels["reporter"] == "waypoint" and labels["source_workload"] == "curl"
            assert labels["destination_app"] == "podinfo" and labels["destination_workload"] == "podinfo"
            routes[labels["route_name"]] = v
        assert routes == {"GET /healthz": 10, "POST /echo": 10}
        # the seed's PromQL, through a Prometheus scraping every proxy, while the loops run
        prom = subprocess.Popen([os.path.join(ROOT, "scripts", "mesh-prometheus.sh")], stdout=subprocess.PIPE,
                                text=True, env=dict(m.env, KEEL_BIN=KEEL), start_new_session=True)
        line = prom.stdout.readline()
        assert line.startswith("PROM_URL="), line
        url = line.split()[0].split("=", 1)[1]
        q = 'sum(rate(istio_requests_total{destination_app="podinfo", route_name!="unknown"}[1m])) by (route_name)'
        deadline = time.time() + 20
        while True:
            m.curl("curl", "http://podinfo-svc.podinfo:9898/healthz")
            m.curl("curl", "http://podinfo-svc.podinfo:9898/echo", "-X", "POST", "-d", "test")
            r = subprocess.run(["promtool", "query", "instant", url, q], capture_output=True, text=True, timeout=10)
            got = sorted(re.findall(r'^\{route_name="([^"]*)"\} => ([0-9.e+-]+)', r.stdout, re.M))
            if [g[0] for g in got] == ["GET /healthz", "POST /echo"] and all(float(g[1]) > 0 for g in got):
                break
            assert time.time() < deadline, r.stdout + r.stderr
            time.sleep(0.2)
    finally:
        if prom is not None:
            os.killpg(prom.pid, signal.SIGTERM)
            prom.wait(10)
        assert m.stop() == 0, m.text()
