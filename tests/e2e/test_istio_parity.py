"""Istio parity of the telemetry, tried as an Istio user would: real keel sidecars, a real
Prometheus scraping them, and the PromQL of Istio's service and workload dashboards (our
own copy of the HTTP and TCP panels that need neither mTLS nor gRPC).

The mesh (all on 127.0.0.1):
    client --> sleep's outbound --> productpage's inbound --> productpage app     (HTTP)
    client --> sleep's --tcp-route --> mongodb's --tcp-inbound --> echo server     (TCP)
"""
import json
import os
import socket
import threading
import time

from conftest import free_port, http_get, raw_exchange
from test_telemetry_mesh import prometheus, prometheus_query, wait_query  # noqa: F401 (fixture)

REGISTRY = """apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: mongodb, namespace: default}
spec:
  selector: {app: mongodb}
  ports: [{name: tcp, port: 27017}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep-v1, namespace: default}
spec:
  address: 127.0.0.1
  labels: {app: sleep, version: v1}
  serviceAccount: sleep
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(pp)d}
  labels: {app: productpage, version: v1}
  serviceAccount: bookinfo-productpage
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mongodb-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {tcp: %(mongo)d}
  labels: {app: mongodb, version: v1}
  serviceAccount: mongodb
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 2s
"""


class EchoServer:
    """A TCP echo server (a stand-in for mongodb) on a thread of the test."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(c,), daemon=True).start()

    @staticmethod
    def echo(c):
        with c:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                c.sendall(data)


class ParityMesh:
    def __init__(self, keel, backend_factory, tmp_path, extra_yaml=""):
        self.dir = tmp_path / "keel.d"
        self.dir.mkdir()
        self.pp_port, self.mongo_port, self.tcp_listen = free_port(), free_port(), free_port()
        (self.dir / "registry.yaml").write_text(
            REGISTRY % {"pp": self.pp_port, "mongo": self.mongo_port} + extra_yaml)
        self.echo = EchoServer()
        self.pp = keel("--config-dir", str(self.dir), "--workload", "productpage-v1.default",
                       upstream=backend_factory("productpage"), access_log=False, inbound_port=self.pp_port)
        self.mongo = keel("--config-dir", str(self.dir), "--workload", "mongodb-v1.default",
                          "--inbound", "off", "--outbound", "off",
                          "--tcp-inbound", "127.0.0.1:%d=127.0.0.1:%d" % (self.mongo_port, self.echo.port),
                          access_log=False)
        self.sleep = keel("--config-dir", str(self.dir), "--workload", "sleep-v1.default", "--inbound", "off",
                          "--tcp-route", "127.0.0.1:%d=127.0.0.1:%d" % (self.tcp_listen, self.mongo_port),
                          access_log=False)

    def call(self, path="/status/200", host="productpage:9080"):
        req = b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode())
        out = raw_exchange(self.sleep.outbound, req)
        return int(out.split(b" ", 2)[1])


def scrape(k):
    return http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)[1]


def samples(text, name, **labels):
    """[(labels, value)] of `name` whose labels include `labels`."""
    import re
    out = []
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            out.append((have, float(m.group(3))))
    return out


def total(k, name, **labels):
    return sum(v for _, v in samples(scrape(k), name, **labels))


def wait_total(k, name, pred, timeout=10, **labels):
    deadline = time.time() + timeout
    v = total(k, name, **labels)
    while not pred(v) and time.time() < deadline:
        time.sleep(0.1)
        v = total(k, name, **labels)
    return v


PP = "productpage.default.svc.cluster.local"
MONGO = "mongodb.default.svc.cluster.local"

# Istio's service dashboard (HTTP and TCP panels without mTLS/gRPC), $qrep = destination
SERVICE_PANELS = {
    "client request volume":
        'round(sum(irate(istio_requests_total{reporter=~"destination",destination_service=~"%s"}[5m])), 0.001)' % PP,
    "client success rate (non-5xx responses)":
        'sum(irate(istio_requests_total{reporter=~"destination",destination_service=~"%s",response_code!~"5.*"}[5m]))'
        ' / sum(irate(istio_requests_total{reporter=~"destination",destination_service=~"%s"}[5m]))' % (PP, PP),
    "client request duration":
        'histogram_quantile(0.50, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"destination",'
        'destination_service=~"%s"}[1m])) by (le))' % PP,
    "incoming requests by source and response code":
        'round(sum(irate(istio_requests_total{connection_security_policy!="mutual_tls",destination_service=~"%s",'
        'reporter=~"destination"}[5m])) by (source_workload, source_workload_namespace, response_code), 0.001)' % PP,
    "incoming request size by source":
        'histogram_quantile(0.50, sum(irate(istio_request_bytes_bucket{reporter=~"destination",'
        'connection_security_policy!="mutual_tls",destination_service=~"%s"}[1m])) by (source_workload, '
        'source_workload_namespace, le))' % PP,
    "response size by source":
        'histogram_quantile(0.50, sum(irate(istio_response_bytes_bucket{reporter=~"destination",'
        'connection_security_policy!="mutual_tls",destination_service=~"%s"}[1m])) by (source_workload, '
        'source_workload_namespace, le))' % PP,
    "service workloads incoming requests":
        'round(sum(irate(istio_requests_total{connection_security_policy!="mutual_tls",destination_service=~"%s",'
        'reporter=~"destination"}[5m])) by (destination_workload, destination_workload_namespace, response_code),'
        ' 0.001)' % PP,
}
# labels each panel's series must have, beyond returning data
SERVICE_WANT = {
    "incoming requests by source and response code": {"source_workload": "sleep-v1",
                                                       "source_workload_namespace": "default",
                                                       "response_code": "200"},
    "service workloads incoming requests": {"destination_workload": "productpage-v1",
                                            "destination_workload_namespace": "default"},
    "incoming request size by source": {"source_workload": "sleep-v1"},
    "response size by source": {"source_workload": "sleep-v1"},
}

TCP_PANELS = {  # service dashboard's TCP panels and the workload dashboard's outbound TCP
    "tcp received bytes (destination)":
        'sum(irate(istio_tcp_received_bytes_total{reporter=~"destination",destination_service=~"%s"}[1m]))' % MONGO,
    "tcp sent bytes by source (destination)":
        'round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy!="mutual_tls",reporter=~"destination",'
        'destination_service=~"%s"}[1m])) by (source_workload, source_workload_namespace), 0.001)' % MONGO,
    "workload outbound tcp sent by destination (source)":
        'round(sum(irate(istio_tcp_sent_bytes_total{reporter=~"source",source_workload=~"sleep-v1",'
        'source_workload_namespace=~"default"}[1m])) by (destination_service), 0.001)',
    "workload outbound tcp received by destination (source)":
        'round(sum(irate(istio_tcp_received_bytes_total{reporter=~"source",source_workload=~"sleep-v1",'
        'source_workload_namespace=~"default"}[1m])) by (destination_workload, destination_service), 0.001)',
}
TCP_WANT = {
    "workload outbound tcp sent by destination (source)": {"destination_service": MONGO},
    "workload outbound tcp received by destination (source)": {"destination_workload": "mongodb-v1",
                                                                 "destination_service": MONGO},
}

WORKLOAD_PANELS = {  # Istio's workload dashboard, HTTP
    "incoming request volume":
        'round(sum(irate(istio_requests_total{reporter=~"destination",destination_workload_namespace=~"default",'
        'destination_workload=~"productpage-v1"}[5m])), 0.001)',
    "outbound requests by destination":
        'round(sum(irate(istio_requests_total{reporter=~"source",source_workload=~"sleep-v1",'
        'source_workload_namespace=~"default"}[5m])) by (destination_service, response_code), 0.001)',
    "outbound request duration":
        'histogram_quantile(0.90, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"source",'
        'source_workload=~"sleep-v1",source_workload_namespace=~"default"}[1m])) by (destination_service, le))',
    "component versions": 'sum(istio_build{component="proxy"}) by (tag)',
}
WORKLOAD_WANT = {"outbound requests by destination": {"destination_service": PP, "response_code": "200"}}


def test_dashboards_http_and_tcp_with_open_connection_rates(keel, backend_factory, tmp_path, prometheus):
    m = ParityMesh(keel, backend_factory, tmp_path)
    port = prometheus([m.pp.admin, m.mongo.admin, m.sleep.admin])
    # a TCP connection held open ~12 s, bytes every 0.25 s; reportingInterval 2 s
    c = socket.create_connection(("127.0.0.1", m.tcp_listen), timeout=5)
    stop = time.time() + 12
    sent = 0
    first_reports = {}
    for i in range(4):  # HTTP traffic spread over scrapes
        assert m.call() == 200
    while time.time() < stop:
        c.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += c.recv(65536)
        sent += 1000
        if time.time() > stop - 6 and not first_reports:
            # while open: both reporters have reported bytes already (periodic reports)
            for name, k in (("source", m.sleep), ("destination", m.mongo)):
                first_reports[name] = total(k, "istio_tcp_received_bytes_total", reporter=name)
            assert m.call() == 200
        time.sleep(0.25)
    # still open: the byte *rates* show on both reporters, and no connection closed yet
    for rep in ("source", "destination"):
        q = 'sum(rate(istio_tcp_received_bytes_total{reporter="%s",destination_service="%s"}[10s]))' % (rep, MONGO)
        res = wait_query(port, q, lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0)
        assert float(res[0]["value"][1]) > 0, (rep, res)
        assert first_reports[rep] > 0, first_reports
    assert total(m.sleep, "istio_tcp_connections_opened_total", reporter="source") == 1
    assert total(m.mongo, "istio_tcp_connections_opened_total", reporter="destination") == 1
    assert total(m.sleep, "istio_tcp_connections_closed_total") == 0
    # the panels use irate (the last two samples): keep HTTP and TCP traffic flowing
    flowing = threading.Event()
    counts = {"tcp": 0}

    def traffic():
        while not flowing.is_set():
            m.call()
            c.sendall(b"y" * 100)
            got = b""
            while len(got) < 100:
                got += c.recv(65536)
            counts["tcp"] += 100
            time.sleep(0.1)
    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    for name, q in list(SERVICE_PANELS.items()) + list(TCP_PANELS.items()) + list(WORKLOAD_PANELS.items()):
        want = dict(SERVICE_WANT, **TCP_WANT, **WORKLOAD_WANT).get(name, {})
        res = wait_query(port, q, lambda r, w=want: len(r) > 0 and any(
            all(x["metric"].get(k) == v for k, v in w.items()) and x["value"][1] != "NaN" for x in r))
        assert res, name
    flowing.set()
    t.join()
    sent += counts["tcp"]
    c.close()
    assert wait_total(m.sleep, "istio_tcp_connections_closed_total", lambda v: v == 1, reporter="source") == 1
    assert wait_total(m.mongo, "istio_tcp_connections_closed_total", lambda v: v == 1,
                      reporter="destination") == 1
    # every byte counted once on each side: the periodic reports and the last one add up
    assert wait_total(m.sleep, "istio_tcp_received_bytes_total", lambda v: v == sent, reporter="source") == sent
    assert wait_total(m.sleep, "istio_tcp_sent_bytes_total", lambda v: v == sent, reporter="source") == sent
    assert wait_total(m.mongo, "istio_tcp_received_bytes_total", lambda v: v == sent,
                      reporter="destination") == sent


def test_labels_cluster_principal_build_and_le(keel, backend_factory, tmp_path):
    m = ParityMesh(keel, backend_factory, tmp_path)
    assert m.call() == 200
    text = scrape(m.sleep)
    (lab, v), = samples(text, "istio_requests_total", reporter="source")
    assert v == 1
    assert lab["source_cluster"] == "Kubernetes" and lab["destination_cluster"] == "Kubernetes"
    # plaintext: no certificate proves anyone's identity
    assert lab["source_principal"] == "unknown" and lab["destination_principal"] == "unknown"
    assert lab["destination_workload"] == "productpage-v1" and lab["destination_service"] == PP
    assert 'istio_build{component="proxy",tag="' in text
    assert 'le="1800000"' in text and 'le="3600000"' in text and 'le="0.5"' in text
    assert "e+06" not in text
    # the server side knows its cluster and the client's (peer metadata)
    # (the inbound report trails the response: wait for it)
    assert wait_total(m.pp, "istio_requests_total", lambda x: x == 1, reporter="destination",
                      source_cluster="Kubernetes", destination_cluster="Kubernetes",
                      source_workload="sleep-v1") == 1


def test_cluster_id_from_flag_and_environment(keel, backend_factory, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    pp = free_port()
    (d / "registry.yaml").write_text(REGISTRY % {"pp": pp, "mongo": free_port()})
    server = keel("--config-dir", str(d), "--workload", "productpage-v1.default", "--cluster-id", "east",
                  upstream=backend_factory("productpage"), access_log=False, inbound_port=pp)
    client = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off",
                  access_log=False, env=dict(os.environ, ISTIO_META_CLUSTER_ID="west"))
    req = b"GET /status/200 HTTP/1.1\r\nHost: productpage:9080\r\nConnection: close\r\n\r\n"
    assert b" 200 " in raw_exchange(client.outbound, req)
    assert total(client, "istio_requests_total", source_cluster="west", destination_cluster="east") == 1
    assert wait_total(server, "istio_requests_total", lambda x: x == 1, source_cluster="west",
                      destination_cluster="east") == 1


def test_local_reply_503_uf_names_the_destination(keel, backend_factory, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    pp = free_port()
    (d / "registry.yaml").write_text(REGISTRY % {"pp": pp, "mongo": free_port()})
    dead = free_port()  # the app behind productpage's sidecar is down
    server = keel("--config-dir", str(d), "--workload", "productpage-v1.default",
                  upstream=dead, access_log=False, inbound_port=pp)
    client = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off", access_log=False)
    req = b"GET / HTTP/1.1\r\nHost: productpage:9080\r\nConnection: close\r\n\r\n"
    out = raw_exchange(client.outbound, req)
    assert b" 503 " in out and b"x-keel-peer-metadata" not in out.lower()
    # the server sidecar answered 503 UF itself, and still said who it is
    (lab, v), = samples(scrape(client), "istio_requests_total", reporter="source")
    assert lab["response_code"] == "503" and lab["destination_workload"] == "productpage-v1"
    assert lab["destination_app"] == "productpage" and lab["destination_cluster"] == "Kubernetes"
    assert wait_total(server, "istio_requests_total", lambda x: x == 1, reporter="destination",
                      response_code="503", response_flags="UF", source_workload="sleep-v1") == 1
    server.proc.stop()
    # no sidecar answers at all: the client's own 503 UF names the registry endpoint
    assert b" 503 " in raw_exchange(client.outbound, req)
    lab = [l for l, _ in samples(scrape(client), "istio_requests_total", reporter="source", response_flags="UF")]
    assert len(lab) == 1 and lab[0]["destination_workload"] == "productpage-v1", lab
    assert lab[0]["destination_version"] == "v1" and lab[0]["destination_service"] == PP


MESH_LOGS = """---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: errors-text
      envoyFileAccessLog:
        path: %(text)s
        logFormat: {text: "%%RESPONSE_CODE%% %%REQ(:PATH)%% %%RESPONSE_FLAGS%%\\n"}
    - name: all-json
      envoyFileAccessLog:
        path: %(json)s
        logFormat:
          labels: {code: "%%RESPONSE_CODE%%", path: "%%REQ(:PATH)%%", workload: "%%UPSTREAM_CLUSTER%%"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: default}
spec:
  accessLogging:
  - providers: [{name: errors-text}]
    filter: {expression: "response.code >= 400"}
  - providers: [{name: all-json}]
    match: {mode: SERVER}
"""


def read_lines(path, n, timeout=5):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    return lines


def test_telemetry_access_logging_filter_mode_providers(keel, backend_factory, tmp_path):
    text, js = str(tmp_path / "errors.log"), str(tmp_path / "all.json")
    m = ParityMesh(keel, backend_factory, tmp_path, MESH_LOGS % {"text": text, "json": js})
    for path in ("/status/200", "/status/404", "/status/200", "/status/503"):
        m.call(path)
    # filter response.code >= 400, both sides (CLIENT_AND_SERVER): 2 errors x 2 sidecars
    lines = read_lines(text, 4)
    assert sorted(lines) == sorted(["404 /status/404 -", "503 /status/503 -"] * 2), lines
    # all-json: the server side only (productpage's inbound), every request, JSON labels
    recs = [json.loads(l) for l in read_lines(js, 4)]
    assert [r["path"] for r in recs] == ["/status/200", "/status/404", "/status/200", "/status/503"]
    assert all(r["workload"].startswith("inbound|") for r in recs), recs
    time.sleep(0.3)  # nothing else trails: still exactly these lines
    assert len(read_lines(text, 4)) == 4 and len(read_lines(js, 4)) == 4
