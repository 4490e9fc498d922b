"""The outbound listener routes by the registry (Services + WorkloadEntries) loaded from
a config dir, and the dir is reloaded live: a bad config is refused, the old one serves."""
import json
import time

from conftest import http_get, raw_exchange

REGISTRY = """
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: mysql, namespace: default}
spec:
  selector: {app: mysql}
  ports: [{port: 3306}]
"""

ENDPOINT = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %(name)s, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(port)d}
  labels: {app: details, version: %(name)s}
"""


def get(k, host, path="/name"):
    out = raw_exchange(k.outbound, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                       % (path.encode(), host.encode()))
    status = int(out.split(b" ", 2)[1])
    return status, out.split(b"\r\n\r\n", 1)[1]


def wait_generation(k, gen, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if k.stats().get("keel_config_generation", 0) >= gen:
            return
        time.sleep(0.05)
    raise AssertionError("generation %d never went live" % gen)


def test_registry_routing_and_live_reload(keel, backend_factory, tmp_path):
    v1, v2 = backend_factory("v1"), backend_factory("v2")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    (d / "details-v1.yaml").write_text(ENDPOINT % {"name": "v1", "port": v1})
    k = keel("--config-dir", str(d), "--workload", "v1.default", "--inbound", "off")
    for host in ("details", "details:9080", "details.default", "details.default.svc.cluster.local:9080"):
        assert get(k, host) == (200, b"v1"), host
    # a service without endpoints: 503 UH; no such service: passed through (the mesh's
    # default ALLOW_ANY), and "nosuch" resolves neither as an IP nor in /etc/hosts
    assert get(k, "ratings:9080")[0] == 503
    assert get(k, "nosuch:9080")[0] == 503
    lines = k.log_lines(6)
    assert " outbound|9080||details.default.svc.cluster.local " in lines[0]
    assert " 503 UH no_healthy_upstream " in lines[4]
    assert " 503 DF dns_resolution_failure " in lines[5]
    dump = json.loads(http_get("http://127.0.0.1:%d/config_dump" % k.admin)[1])
    svcs = {s["name"]: s for s in dump["registry"]["services"]}
    assert set(svcs) == {"details", "ratings", "mysql"}
    assert "HTTP" in json.dumps(svcs["details"]) and "TCP" in json.dumps(svcs["mysql"])
    gen = k.stats()["keel_config_generation"]

    # add a second endpoint: round robin over both
    (d / "details-v2.yaml").write_text(ENDPOINT % {"name": "v2", "port": v2})
    wait_generation(k, gen + 1)
    seen = {get(k, "details:9080")[1] for _ in range(4)}
    assert seen == {b"v1", b"v2"}

    # a broken file: refused with its position, counted, the running config keeps serving
    (d / "broken.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: nope\n")
    deadline = time.time() + 5
    while k.stats()['keel_config_reloads_total{result="failure"}'] < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert k.stats()['keel_config_reloads_total{result="failure"}'] == 1
    deadline = time.time() + 5  # keel's own log goes through a non-blocking sink
    while "broken.yaml:5:" not in k.proc.output() and time.time() < deadline:
        time.sleep(0.05)
    assert "broken.yaml:5:" in k.proc.output()
    assert {get(k, "details:9080")[1] for _ in range(4)} == {b"v1", b"v2"}

    # fixed: the next generation goes live
    (d / "broken.yaml").unlink()
    (d / "details-v1.yaml").unlink()
    wait_generation(k, gen + 2)
    assert {get(k, "details:9080")[1] for _ in range(4)} == {b"v2"}


def test_requests_in_flight_finish_on_their_config(keel, backend_factory, tmp_path):
    v1 = backend_factory("v1")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    (d / "details-v1.yaml").write_text(ENDPOINT % {"name": "v1", "port": v1})
    k = keel("--config-dir", str(d), "--inbound", "off")
    import threading
    out = []
    t = threading.Thread(target=lambda: out.append(get(k, "details:9080", "/slow?ms=700")))
    t.start()
    time.sleep(0.2)
    (d / "details-v1.yaml").unlink()  # the endpoint disappears mid-request
    wait_generation(k, 2)
    t.join()
    assert out == [(200, b"slow\n")]
    assert get(k, "details:9080")[0] == 503


def test_mesh_access_log_file_from_config(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    log = tmp_path / "mesh-access.log"
    (d / "mesh.yaml").write_text("""apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: %s
""" % log)
    k = keel("--config-dir", str(d), upstream=backend, access_log=False)
    raw_exchange(k.inbound, b"GET /status/418 HTTP/1.1\r\nHost: httpbin:8000\r\nConnection: close\r\n\r\n")
    deadline = time.time() + 3
    while time.time() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    assert '"GET /status/418 HTTP/1.1" 418' in log.read_text()


def test_invalid_config_at_startup_is_refused(tmp_path):
    import subprocess
    from conftest import KEEL
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "bad.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  portz: []\n")
    p = subprocess.run([KEEL, "proxy", "--config-dir", str(d), "--inbound", "off"],
                       capture_output=True, timeout=10)
    assert p.returncode != 0
    assert b"bad.yaml:5:3: error:" in p.stderr


MESH = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: "%s"
    accessLogEncoding: %s
"""


def test_mesh_access_log_follows_reloads(keel, backend, tmp_path):
    # seed 001: `--set global.proxy.accessLogFile="/dev/stdout"` turns the access log on,
    # an empty value turns it off again -- at runtime, on the next config generation
    d = tmp_path / "keel.d"
    d.mkdir()
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    (d / "mesh.yaml").write_text(MESH % (a, "TEXT"))
    k = keel("--config-dir", str(d), upstream=backend, access_log=False)

    def call(path):
        raw_exchange(k.inbound, b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path)

    def lines(p):
        return p.read_text().splitlines() if p.exists() else []

    call(b"/status/201")
    assert wait_for_lines(a, 1) and '"GET /status/201 HTTP/1.1" 201' in lines(a)[0]
    gen = k.stats()["keel_config_generation"]
    (d / "mesh.yaml").write_text(MESH % ("", "TEXT"))            # off
    wait_generation(k, gen + 1)
    call(b"/status/202")
    (d / "mesh.yaml").write_text(MESH % (b, "JSON"))             # on, elsewhere, as JSON
    wait_generation(k, gen + 2)
    call(b"/status/203")
    assert wait_for_lines(b, 1)
    assert len(lines(a)) == 1                                    # nothing while it was off
    assert json.loads(lines(b)[0])["response_code"] == 203
    assert k.stats()['keel_access_log_lines_total{result="written"}'] == 2


def wait_for_lines(p, n, timeout=3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.exists() and len(p.read_text().splitlines()) >= n:
            return True
        time.sleep(0.05)
    return False
