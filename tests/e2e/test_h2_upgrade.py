"""HTTP/2 by upgrade: `Upgrade: h2c` from HTTP/1.1 clients on keel's listeners (curl --http2,
nghttp -u), and Istio's h2UpgradePolicy: HTTP/1.1 between two sidecars carried as HTTP/2
streams over few connections, with the telemetry of both reporters exact."""
import http.client
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import http_get, scraped_sum


def run(args, timeout=30):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def metric(k, name, **labels):
    return scraped_sum(k.admin, name, **labels)


def wait_metric(k, name, want, timeout=5.0, **labels):
    deadline = time.time() + timeout
    while metric(k, name, **labels) != want and time.time() < deadline:
        time.sleep(0.05)
    return metric(k, name, **labels)


def raw_exchange(port, request, timeout=5.0):
    """Send request bytes; read until the server has sent a complete small response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"status 200"):
            d = s.recv(65536)
            if not d:
                break
            data += d
    except socket.timeout:
        pass
    s.close()
    return data


# ---------------------------------------------------------------- Upgrade: h2c

def test_curl_http2_upgrades_and_reuses_the_connection(keel, backend):
    """curl --http2 on http:// sends Upgrade: h2c: 101, the first request answered as stream
    1, the second on the same connection as stream 3; both logged HTTP/2."""
    k = keel(upstream=backend, concurrency=2)
    p = run(["curl", "-sv", "--http2", k.url("/status/200"), k.url("/headers")])
    assert p.returncode == 0, p.stderr
    assert "< HTTP/1.1 101 Switching Protocols" in p.stderr
    assert "< upgrade: h2c" in p.stderr.lower()
    assert p.stderr.count("< HTTP/2 200") == 2, p.stderr
    assert "Re-using existing connection" in p.stderr
    assert p.stdout.startswith("status 200")
    # the app got plain HTTP/1.1 without the connection's upgrade headers
    tail = p.stdout[p.stdout.index('{"line"'):]
    assert '"GET /headers HTTP/1.1"' in tail
    lines = k.log_lines(2)
    assert len(lines) == 2
    assert '"GET /status/200 HTTP/2" 200' in lines[0]
    assert '"GET /headers HTTP/2" 200' in lines[1]
    st = k.stats()
    assert st["keel_h2_cx_total"] == 1
    assert st["keel_h2_streams_total"] == 2
    assert st["keel_downstream_cx_total"] == 1


def test_upgraded_request_reaches_the_app_without_upgrade_headers(keel, backend):
    k = keel(upstream=backend)
    p = run(["curl", "-s", "--http2", "-H", "x-mark: 1", k.url("/headers")])
    assert p.returncode == 0
    got = p.stdout.lower()
    assert '"x-mark", "1"' in got
    for h in ("http2-settings", '"upgrade"', '"connection"'):
        assert h not in got, got


def test_nghttp_upgrade(keel, backend):
    k = keel(upstream=backend)
    p = run(["nghttp", "-uv", k.url("/status/200")])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "HTTP Upgrade response" in p.stdout and "HTTP/1.1 101" in p.stdout
    assert "recv (stream_id=1) :status: 200" in p.stdout
    assert "status 200" in p.stdout
    assert '"GET /status/200 HTTP/2" 200' in k.log_lines(1)[0]


def test_head_request_upgrades(keel, backend):
    k = keel(upstream=backend)
    p = run(["curl", "-s", "-I", "--http2", k.url("/status/200")])
    assert p.stdout.startswith("HTTP/1.1 101"), p.stdout
    assert "HTTP/2 200" in p.stdout
    assert '"HEAD /status/200 HTTP/2" 200' in k.log_lines(1)[0]


def test_requests_that_do_not_upgrade_are_served_as_http11(keel, backend):
    """A body, a malformed HTTP2-Settings, HTTP2-Settings not named by Connection, HTTP/1.0:
    the upgrade is ignored and the request served as HTTP/1.1 (no 101)."""
    k = keel(upstream=backend)
    p = run(["curl", "-sv", "--http2", "--data-binary", "abc", k.url("/count")])
    assert p.returncode == 0
    assert "101" not in p.stderr and "< HTTP/1.1 200" in p.stderr
    assert '"bytes": 3' in p.stdout
    base = "GET /status/200 HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: close, %s\r\n%s\r\n"
    for conn, extra in (("Upgrade, HTTP2-Settings", "HTTP2-Settings: !!!!\r\n"),  # not base64url
                        ("Upgrade", "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"),     # not hop-by-hop
                        ("Upgrade, HTTP2-Settings", "")):                        # missing
        got = raw_exchange(k.inbound, (base % (conn, extra)).encode())
        assert got.startswith(b"HTTP/1.1 200"), (conn, extra, got)
    got = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.0\r\nHost: x\r\nUpgrade: h2c\r\n"
                       b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200"), got
    lines = k.log_lines(5)
    assert all(" HTTP/1.1\" 200" in l or " HTTP/1.0\" 200" in l for l in lines), lines
    assert k.stats()["keel_h2_cx_total"] == 0


# ---------------------------------------------------------------- h2UpgradePolicy

REGISTRY = """apiVersion: v1
kind: Service
metadata: {name: client, namespace: default}
spec:
  selector: {app: client}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(client)d}
  labels: {app: client, version: v1}
  serviceAccount: client
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(echo)d}
  labels: {app: echo, version: v1}
  serviceAccount: echo
"""

MESH = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    h2UpgradePolicy: %s
"""

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  trafficPolicy:
%s
"""

N_REQUESTS, N_CONNS = 1000, 20


def two_sidecars(keel, backend, tmp_path, mesh=None, dr=None):
    from conftest import free_port
    d = tmp_path / "keel.d"
    d.mkdir()
    ports = {"client": free_port(), "echo": free_port()}
    (d / "registry.yaml").write_text(REGISTRY % ports)
    if mesh is not None:
        (d / "mesh.yaml").write_text(MESH % mesh)
    if dr is not None:
        (d / "dr.yaml").write_text(DR % dr)
    client = keel("--config-dir", str(d), "--workload", "client-v1.default", upstream=backend,
                  inbound_port=ports["client"], concurrency=2)
    echo = keel("--config-dir", str(d), "--workload", "echo-v1.default", upstream=backend,
                inbound_port=ports["echo"], concurrency=2)
    return client, echo


def load(port, n=N_REQUESTS, conns=N_CONNS):
    """n HTTP/1.1 requests over `conns` keep-alive connections; returns the statuses."""
    statuses = []
    lock = threading.Lock()

    def worker(count):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        got = []
        for _ in range(count):
            c.request("GET", "/status/200", headers={"Host": "echo:9080"})
            r = c.getresponse()
            r.read()
            got.append(r.status)
        c.close()
        with lock:
            statuses.extend(got)

    ts = [threading.Thread(target=worker, args=(n // conns,)) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return statuses


def assert_exact(client, echo, n):
    for k, rep in ((client, "source"), (echo, "destination")):
        got = wait_metric(k, "istio_requests_total", n, timeout=10, reporter=rep,
                          request_protocol="http", response_code="200")
        assert got == n, (rep, got)
        assert metric(k, "istio_requests_total", reporter=rep) == n


def test_upgrade_policy_carries_http11_as_h2_between_sidecars(keel, backend, tmp_path):
    client, echo = two_sidecars(keel, backend, tmp_path, mesh="UPGRADE")
    statuses = load(client.outbound)
    assert statuses == [200] * N_REQUESTS
    st = echo.stats()
    assert 1 <= st["keel_h2_cx_total"] <= 4, st["keel_h2_cx_total"]  # a handful per worker
    assert st["keel_h2_streams_total"] >= N_REQUESTS
    assert client.stats()["keel_h2_cx_total"] == 0  # the client spoke HTTP/1.1 to its sidecar
    assert_exact(client, echo, N_REQUESTS)
    # %PROTOCOL%: what each sidecar's downstream spoke
    echo_lines = echo.log_lines(N_REQUESTS, timeout=10)
    assert len(echo_lines) == N_REQUESTS
    assert all('"GET /status/200 HTTP/2" 200' in l for l in echo_lines)
    client_lines = client.log_lines(N_REQUESTS, timeout=10)
    assert all('"GET /status/200 HTTP/1.1" 200' in l for l in client_lines)


def test_destination_rule_do_not_upgrade_overrides_the_mesh(keel, backend, tmp_path):
    dr = "    connectionPool:\n      http: {h2UpgradePolicy: DO_NOT_UPGRADE}"
    client, echo = two_sidecars(keel, backend, tmp_path, mesh="UPGRADE", dr=dr)
    assert load(client.outbound, n=200) == [200] * 200
    assert echo.stats()["keel_h2_cx_total"] == 0
    assert_exact(client, echo, 200)
    assert all('"GET /status/200 HTTP/1.1" 200' in l for l in echo.log_lines(200, timeout=10))


def test_port_level_upgrade_over_mesh_default(keel, backend, tmp_path):
    dr = ("    portLevelSettings:\n    - port: {number: 9080}\n"
          "      connectionPool:\n        http: {h2UpgradePolicy: UPGRADE}\n"
          "      loadBalancer: {simple: ROUND_ROBIN}")
    client, echo = two_sidecars(keel, backend, tmp_path, mesh="DO_NOT_UPGRADE", dr=dr)
    assert load(client.outbound, n=200) == [200] * 200
    st = echo.stats()
    assert st["keel_h2_cx_total"] >= 1 and st["keel_h2_streams_total"] == 200
    assert_exact(client, echo, 200)


def test_no_policy_stays_http11(keel, backend, tmp_path):
    client, echo = two_sidecars(keel, backend, tmp_path)
    assert load(client.outbound, n=200) == [200] * 200
    assert echo.stats()["keel_h2_cx_total"] == 0
    assert_exact(client, echo, 200)


def test_websocket_between_upgrading_sidecars_stays_http11(keel, backend, tmp_path):
    """HTTP/2 has no Upgrade: a WebSocket request keeps HTTP/1.1 to the next sidecar and
    tunnels, while plain requests on the same sidecars go as HTTP/2."""
    client, echo = two_sidecars(keel, backend, tmp_path, mesh="UPGRADE")
    s = socket.create_connection(("127.0.0.1", client.outbound), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: echo:9080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        assert d, head
        head += d
    assert head.startswith(b"HTTP/1.1 101"), head
    rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(b"\x81\x05hello raw frame bytes")
    while len(rest) < 23:
        d = s.recv(4096)
        assert d, rest
        rest += d
    assert rest == b"\x81\x05hello raw frame bytes"
    s.close()
    assert '"GET /ws HTTP/1.1" 101' in echo.log_lines(1)[-1]
    assert load(client.outbound, n=40, conns=2) == [200] * 40
    assert echo.stats()["keel_h2_streams_total"] == 40
