"""Istio traffic routing through real keel proxies: bookinfo's traffic-management tasks
(reviews v1/v2/v3 by weight and by the end-user header, uri matches, rewrite, fault abort
and delay, timeout, retries), the ingress gateway (bookinfo-gateway.yaml) and an ambient
waypoint (seed 004). The reviews "versions" are separate backend processes that answer
their name on /name.
"""
import http.client
import json
import math
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port, http_get, scraped_sum

SEEDS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "examples", "seeds")

LOG_FORMAT = "%RESPONSE_CODE% %RESPONSE_FLAGS% %ROUTE_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %DURATION%\n"

REVIEWS = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep-v1, namespace: default}
spec: {address: 127.0.0.1, labels: {app: sleep, version: v1}, serviceAccount: sleep}
---
"""

WE = """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %(name)s, namespace: %(ns)s}
spec:
  address: 127.0.0.1
  ports: {http: %(port)d}
  labels: {%(labels)s}
---
"""


class Reviews:
    """reviews-v1..v3 backends, a config dir, and the sleep sidecar that calls them."""

    def __init__(self, keel, backend_factory, tmp_path, vs, extra="", versions=("v1", "v2", "v3")):
        self.dir = tmp_path / "keel.d"
        self.dir.mkdir()
        yaml = REVIEWS
        for v in versions:
            port = backend_factory("reviews-" + v)
            yaml += WE % {"name": "reviews-" + v, "ns": "default", "port": port,
                          "labels": "app: reviews, version: " + v}
        (self.dir / "reviews.yaml").write_text(yaml + extra)
        (self.dir / "vs.yaml").write_text(vs)
        self.sleep = keel("--config-dir", str(self.dir), "--workload", "sleep-v1.default",
                          "--inbound", "off", "--access-log-format", LOG_FORMAT)
        self.conn = None

    def get(self, path="/name", headers=None, host="reviews:9080", method="GET"):
        """One request on a kept-alive connection to the sleep sidecar's outbound."""
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.sleep.outbound, timeout=10)
            try:
                h = {"Host": host}
                h.update(headers or {})
                self.conn.request(method, path, headers=h)
                r = self.conn.getresponse()
                body = r.read().decode()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
        raise RuntimeError("no answer")

    def log(self, n):
        lines = self.sleep.log_lines(n)
        assert len(lines) >= n, lines
        return [l.split(" ") for l in lines]


def within_3_sigma(count, n, p):
    sigma = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 3 * sigma


def metric(admin, name, want=None, **labels):
    """Sum of the samples of name with labels. With want: wait up to 3 s for that value
    (a destination-side report lands just after the response it reports)."""
    deadline = time.time() + 3
    while want is not None and metric(admin, name, **labels) != want and time.time() < deadline:
        time.sleep(0.02)
    return scraped_sum(admin, name, **labels)


def test_weighted_50_50_v1_v3(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: split
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    counts = {}
    for _ in range(1000):
        status, body = r.get()
        assert status == 200
        counts[body] = counts.get(body, 0) + 1
    assert set(counts) == {"reviews-v1", "reviews-v3"}, counts
    assert within_3_sigma(counts["reviews-v1"], 1000, 0.5), counts
    lines = r.log(1000)
    assert {l[2] for l in lines} == {"split"}  # %ROUTE_NAME% is the http[].name


def test_header_end_user_jason_to_v2(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    for _ in range(20):
        assert r.get(headers={"end-user": "jason"}) == (200, "reviews-v2")
        assert r.get(headers={"end-user": "jasonx"}) == (200, "reviews-v1")
        assert r.get() == (200, "reviews-v1")
    # the FQDN and the short name with the port reach the same routes
    assert r.get(host="reviews.default.svc.cluster.local:9080",
                 headers={"End-User": "jason"}) == (200, "reviews-v2")


def test_uri_exact_prefix_regex_and_no_route(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: exact
    match: [{uri: {exact: /exact}}]
    rewrite: {uri: /name}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: prefix
    match: [{uri: {prefix: /pre/}}, {method: {exact: PUT}}]
    rewrite: {uri: /name}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: regex
    match: [{uri: {regex: '/re/[0-9]+'}}]
    rewrite: {uri: /name}
    route: [{destination: {host: reviews, subset: v3}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    assert r.get("/exact") == (200, "reviews-v1")
    assert r.get("/exact?q=1") == (200, "reviews-v1")  # an exact match ignores the query
    assert r.get("/pre/") == (200, "reviews-v2")  # the matched prefix is what is replaced
    assert r.get("/pre/x")[0] == 404  # -> /namex
    assert r.get("/whatever", method="PUT") == (200, "reviews-v2")  # any match of a route
    assert r.get("/re/123") == (200, "reviews-v3")
    # a regex matches the whole path, as Envoy's safe_regex
    assert r.get("/re/123x")[0] == 404
    assert r.get("/exactly")[0] == 404
    assert r.get("/name")[0] == 404  # the VS owns the host: no match is no route
    lines = r.log(8)
    nr = [l for l in lines if l[1] == "NR"]
    assert len(nr) == 3 and all(l[0] == "404" for l in nr)


def test_rewrite_seen_by_the_backend(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /, authority: reviews.internal}
    route: [{destination: {host: reviews, subset: v1}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    status, body = r.get("/api/v1/headers?x=1")
    assert status == 200
    seen = json.loads(body)
    assert seen["line"] == "GET /headers?x=1 HTTP/1.1"
    assert ["host", "reviews.internal"] in [[k.lower(), v] for k, v in seen["headers"]]


def test_fault_abort_half(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: abort-half
    fault:
      abort:
        httpStatus: 500
        percentage: {value: 50}
    route: [{destination: {host: reviews, subset: v1}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    n = 400
    statuses = [r.get()[0] for _ in range(n)]
    aborted = statuses.count(500)
    assert aborted + statuses.count(200) == n
    assert within_3_sigma(aborted, n, 0.5), aborted
    lines = r.log(n)
    assert sum(1 for l in lines if l[0] == "500" and l[1] == "FI") == aborted
    assert sum(1 for l in lines if l[0] == "200" and l[1] == "-") == n - aborted
    assert metric(r.sleep.admin, "istio_requests_total", response_flags="FI", response_code="500",
                  reporter="source") == aborted


def test_fault_delay(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - fault:
      delay:
        fixedDelay: 0.3s
        percentage: {value: 100.0}
    route: [{destination: {host: reviews, subset: v2}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    t0 = time.time()
    assert r.get() == (200, "reviews-v2")
    assert time.time() - t0 >= 0.3
    line = r.log(1)[0]
    assert line[1] == "DI" and int(line[4]) >= 300
    assert metric(r.sleep.admin, "istio_requests_total", response_flags="DI") == 1


def test_timeout_504_ut(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 0.3s
    route: [{destination: {host: reviews, subset: v1}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    t0 = time.time()
    assert r.get("/slow?ms=3000")[0] == 504
    assert time.time() - t0 < 2.0
    assert r.get("/slow?ms=10")[0] == 200
    line = r.log(1)[0]
    assert line[:2] == ["504", "UT"]


class Flaky:
    """An origin that answers 503 to the first `fails` requests, then 200 "ok"."""

    def __init__(self, fails):
        self.hits = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.hits += 1
                code, body = (503, b"busy") if outer.hits <= fails else (200, b"ok")
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_retries_on_503(keel, tmp_path):
    flaky = Flaky(fails=2)
    try:
        d = tmp_path / "keel.d"
        d.mkdir()
        (d / "r.yaml").write_text(REVIEWS + WE % {"name": "ratings-v1", "ns": "default", "port": flaky.port,
                                                  "labels": "app: ratings"} + """apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: retried
    match: [{uri: {prefix: /retry}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    route: [{destination: {host: ratings}}]
  - name: once
    route: [{destination: {host: ratings}}]
""")
        k = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off",
                 "--access-log-format", LOG_FORMAT)
        c = http.client.HTTPConnection("127.0.0.1", k.outbound, timeout=10)
        c.request("GET", "/retry", headers={"Host": "ratings"})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"ok")
        assert flaky.hits == 3
        line = k.log_lines(1)[0].split(" ")
        assert line[:4] == ["200", "-", "retried", "3"]
        # without retries the 503 goes back as it came (the origin is healthy by now: reset it)
        flaky.hits = 0
        c.request("GET", "/once", headers={"Host": "ratings"})
        r = c.getresponse()
        assert r.status == 503 and r.read() == b"busy"
        assert k.log_lines(2)[1].split(" ")[:4] == ["503", "-", "once", "1"]
    finally:
        flaky.close()


def test_unknown_subset_is_503_nc(keel, backend_factory, tmp_path):
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v9}}]
"""
    r = Reviews(keel, backend_factory, tmp_path, vs)
    assert r.get()[0] == 503
    assert r.log(1)[0][:2] == ["503", "NC"]


# ---- ingress gateway: samples/bookinfo/networking/bookinfo-gateway.yaml ----

BOOKINFO_GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  # The selector matches the ingress gateway pod labels.
  # If you installed Istio using Helm following the standard documentation, this would be "istio=ingress"
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"""


class App:
    """An origin answering 200 "<name> <path>" to anything."""

    def __init__(self, name):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = ("%s %s" % (name, self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def get(port, path, host):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    out = r.status, r.read().decode()
    c.close()
    return out


def test_gateway_bookinfo(keel, tmp_path):
    app = App("productpage")
    try:
        d = tmp_path / "keel.d"
        d.mkdir()
        pp_inbound = free_port()
        (d / "bookinfo.yaml").write_text("""apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
""" + WE % {"name": "productpage-v1", "ns": "default", "port": pp_inbound,
            "labels": "app: productpage, version: v1"} + """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  address: 127.0.0.1
  labels: {istio: ingressgateway, app: istio-ingressgateway}
  serviceAccount: istio-ingressgateway-service-account
""")
        (d / "bookinfo-gateway.yaml").write_text(BOOKINFO_GATEWAY)
        pp = keel("--config-dir", str(d), "--workload", "productpage-v1.default", "--outbound", "off",
                  upstream=app.port, inbound_port=pp_inbound, access_log=False)
        gw = keel("--config-dir", str(d), "--workload", "istio-ingressgateway.istio-system",
                  "--role", "gateway", "--inbound", "off", "--access-log-format", LOG_FORMAT)
        assert get(gw.outbound, "/productpage", "bookinfo.example.com") == (200, "productpage /productpage")
        assert get(gw.outbound, "/api/v1/products/1", "192.0.2.1:8080") == (200, "productpage /api/v1/products/1")
        assert get(gw.outbound, "/reviews", "bookinfo.example.com")[0] == 404
        # the registry is not a route at the gateway: only Gateway-bound VirtualServices are
        assert get(gw.outbound, "/static/x", "productpage:9080")[0] == 200
        assert get(gw.outbound, "/details/0", "productpage:9080")[0] == 404
        lines = [l.split(" ") for l in gw.log_lines(5)]
        assert [l[:2] for l in lines] == [["200", "-"], ["200", "-"], ["404", "NR"], ["200", "-"], ["404", "NR"]]
        labels = dict(reporter="source", source_workload="istio-ingressgateway",
                      source_workload_namespace="istio-system", destination_workload="productpage-v1",
                      destination_service="productpage.default.svc.cluster.local", response_code="200")
        assert metric(gw.admin, "istio_requests_total", **labels) == 3
        # the productpage sidecar saw the gateway as its source
        assert metric(pp.admin, "istio_requests_total", want=3, reporter="destination",
                      source_workload="istio-ingressgateway", destination_workload="productpage-v1") == 3
    finally:
        app.close()


def test_gateway_selector_must_match(keel, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "gw.yaml").write_text(BOOKINFO_GATEWAY.replace("istio: ingressgateway #", "istio: other #") + """---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec: {address: 127.0.0.1, labels: {istio: ingressgateway}}
""")
    gw = keel("--config-dir", str(d), "--workload", "istio-ingressgateway.istio-system",
              "--role", "gateway", "--inbound", "off")
    assert get(gw.outbound, "/productpage", "x")[0] == 404


# ---- waypoint (seed 004) ----

def test_waypoint_podinfo(keel, backend_factory, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    podinfo_inbound, waypoint_port = free_port(), free_port()
    with open(os.path.join(SEEDS, "004-waypoint.yaml")) as f:
        (d / "004-waypoint.yaml").write_text(f.read())
    with open(os.path.join(SEEDS, "004-route-metrics.yaml")) as f:
        (d / "004-route-metrics.yaml").write_text(f.read())
    (d / "podinfo.yaml").write_text("""apiVersion: v1
kind: Namespace
metadata:
  name: podinfo
  labels: {istio.io/use-waypoint: podinfo-waypoint}
---
apiVersion: v1
kind: Service
metadata: {name: podinfo, namespace: podinfo}
spec:
  selector: {app: podinfo}
  ports: [{name: http, port: 9898}]
---
""" + WE % {"name": "podinfo-v1", "ns": "podinfo", "port": podinfo_inbound,
            "labels": "app: podinfo, version: v1"}
        + WE % {"name": "podinfo-waypoint", "ns": "podinfo", "port": waypoint_port,
                "labels": "gateway.networking.k8s.io/gateway-name: podinfo-waypoint"}
        + """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-v1, namespace: default}
spec: {address: 127.0.0.1, labels: {app: client, version: v1}, serviceAccount: client}
""")
    app = backend_factory("podinfo")
    pod = keel("--config-dir", str(d), "--workload", "podinfo-v1.podinfo", "--outbound", "off",
               upstream=app, inbound_port=podinfo_inbound, access_log=False)
    wp = keel("--config-dir", str(d), "--workload", "podinfo-waypoint.podinfo", "--role", "waypoint",
              "--inbound", "off", "--outbound", "127.0.0.1:%d" % waypoint_port,
              "--access-log-format", LOG_FORMAT)
    client = keel("--config-dir", str(d), "--workload", "client-v1.default", "--inbound", "off",
                  access_log=False)
    for _ in range(3):
        assert get(client.outbound, "/healthz", "podinfo.podinfo:9898") == (200, "ok\n")
    assert get(client.outbound, "/name", "podinfo.podinfo.svc.cluster.local:9898") == (200, "podinfo")
    assert len(wp.log_lines(4)) == 4  # every request went through the waypoint
    wl = dict(reporter="waypoint", source_workload="client-v1", destination_workload="podinfo-v1",
              destination_service="podinfo.podinfo.svc.cluster.local")
    assert metric(wp.admin, "istio_requests_total", want=3, route_name="GET /healthz", **wl) == 3
    assert metric(wp.admin, "istio_requests_total", want=4, **wl) == 4
    # the client's sidecar still reports as the source, and learnt the real destination
    assert metric(client.admin, "istio_requests_total", reporter="source", source_workload="client-v1",
                  destination_workload="podinfo-v1") == 4
    # and the destination saw the client, not the waypoint
    assert metric(pod.admin, "istio_requests_total", want=4, reporter="destination",
                  source_workload="client-v1") == 4


def test_longest_cluster_name_is_not_cut(keel, backend_factory, tmp_path):
    """outbound|PORT|SUBSET|FQDN with a 63-byte subset, name and namespace (224 bytes) is
    the upstream_cluster in the log whole (it was cut at 199 bytes)."""
    name, ns, subset = "r" * 63, "n" * 63, "s" * 63
    fqdn = "%s.%s.svc.cluster.local" % (name, ns)
    d = tmp_path / "keel.d"
    d.mkdir()
    port = backend_factory("long")
    (d / "long.yaml").write_text("""apiVersion: v1
kind: Service
metadata: {name: %(name)s, namespace: %(ns)s}
spec:
  selector: {app: long}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: long, namespace: %(ns)s}
spec:
  host: %(fqdn)s
  subsets: [{name: %(subset)s, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: long, namespace: %(ns)s}
spec:
  hosts: [%(fqdn)s]
  http: [{route: [{destination: {host: %(fqdn)s, subset: %(subset)s}}]}]
---
""" % {"name": name, "ns": ns, "fqdn": fqdn, "subset": subset}
        + WE % {"name": "long-v1", "ns": ns, "port": port, "labels": "app: long, version: v1"})
    k = keel("--config-dir", str(d), "--inbound", "off",
             "--access-log-format", "%RESPONSE_CODE% %UPSTREAM_CLUSTER%\n")
    c = http.client.HTTPConnection("127.0.0.1", k.outbound, timeout=10)
    c.request("GET", "/name", headers={"Host": fqdn + ":9080"})
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"long")
    assert k.log_lines(1) == ["200 outbound|9080|%s|%s" % (subset, fqdn)]
