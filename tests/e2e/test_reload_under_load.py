"""wrk drives the outbound listener while the config dir is replaced 50 times, good and
bad versions alternating: no request fails, every good version goes live, every bad one
is refused and the running config keeps serving."""
import re
import subprocess
import threading
import time

from conftest import raw_exchange

REGISTRY = """apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-%(name)s, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(port)d}
  labels: {app: details}
"""

BAD = REGISTRY + """---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: default}
spec:
  ports: [{name: http, port: "not a number"}]
"""


def name_via(k):
    out = raw_exchange(k.outbound, b"GET /name HTTP/1.1\r\nHost: details:9080\r\nConnection: close\r\n\r\n")
    return out.split(b"\r\n\r\n", 1)[1]


def wait_for(pred, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_fifty_reloads_under_wrk(keel, backend_factory, tmp_path):
    ports = {"v1": backend_factory("v1"), "v2": backend_factory("v2")}
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY % {"name": "v1", "port": ports["v1"]})
    k = keel("--config-dir", str(d), "--inbound", "off", "--concurrency", "2")
    assert name_via(k) == b"v1"
    result = {}

    def load():
        result["wrk"] = subprocess.run(
            ["wrk", "-t1", "-c8", "-d12s", "-H", "Host: details:9080",
             "http://127.0.0.1:%d/status/200" % k.outbound],
            capture_output=True, text=True, timeout=60)
    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.5)
    good = bad = 0
    for i in range(50):
        st = k.stats()
        gen, failures = st["keel_config_generation"], st['keel_config_reloads_total{result="failure"}']
        path = d / ("registry.yaml")
        tmp = d / (".next-%d.tmp" % i)  # written aside, renamed in: what `keel apply` does
        if i % 2 == 0:
            version = "v2" if (i // 2) % 2 == 0 else "v1"
            tmp.write_text(REGISTRY % {"name": version, "port": ports[version]})
            tmp.rename(path)
            assert wait_for(lambda: k.stats()["keel_config_generation"] == gen + 1), i
            assert name_via(k) == version.encode()
            good += 1
        else:
            tmp.write_text(BAD % {"name": "v3", "port": 1})
            tmp.rename(path)
            assert wait_for(lambda: k.stats()['keel_config_reloads_total{result="failure"}'] == failures + 1), i
            assert k.stats()["keel_config_generation"] == gen
            bad += 1
        time.sleep(0.15)
    t.join()
    out = result["wrk"].stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total > 1000, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    assert (good, bad) == (25, 25)
    st = k.stats()
    assert st['keel_config_reloads_total{result="failure"}'] == 25
    assert st['keel_downstream_rq_total{response_code_class="5xx"}'] == 0
