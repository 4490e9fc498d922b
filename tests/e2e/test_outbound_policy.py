"""The mesh's outboundTrafficPolicy on a sidecar's outbound listener, as Istio's sidecar
behaves: a host that no route and no registry service names is passed through to itself
(ALLOW_ANY, the default: PassthroughCluster, route allow_any) or answered 502 by the proxy
(REGISTRY_ONLY: BlackHoleCluster, route block_all, no response flag). Also the cluster id
from the mesh config's defaultConfig.proxyMetadata."""
import os
import re
import time

from conftest import free_port, raw_exchange

REGISTRY = """apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: %(details)d}
  labels: {app: details, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep-v1, namespace: default}
spec:
  address: 127.0.0.1
  labels: {app: sleep, version: v1}
"""

MESH = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy: {mode: %(mode)s}
    defaultConfig:
      proxyMetadata: {ISTIO_META_CLUSTER_ID: east}
"""


def get(k, host, path="/status/200"):
    out = raw_exchange(k.outbound, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                       % (path.encode(), host.encode()))
    return int(out.split(b" ", 2)[1])


def series(k, **labels):
    """Sum of istio_requests_total over the series carrying every given label value."""
    total = 0.0
    for name, value in k.stats().items():
        if name.startswith("istio_requests_total{") and all(
                '%s="%s"' % kv in name for kv in labels.items()):
            total += value
    return total


def config_dir(tmp_path, details, mode=None):
    d = tmp_path / "keel.d"
    d.mkdir(exist_ok=True)
    (d / "registry.yaml").write_text(REGISTRY % {"details": details})
    if mode is not None:
        (d / "mesh.yaml").write_text(MESH % {"mode": mode})
    return d


def test_default_is_allow_any_passthrough(keel, backend_factory, tmp_path):
    details, external = backend_factory("details"), backend_factory("external")
    d = config_dir(tmp_path, details)  # no mesh config at all: Istio's default, ALLOW_ANY
    k = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off")
    ext = "127.0.0.1:%d" % external  # reachable only by IP:port, in no registry
    assert get(k, ext) == 200
    assert get(k, "details:9080") == 200  # the registry still routes
    lines = k.log_lines(2)
    assert ' "%s" "%s" PassthroughCluster ' % (ext, ext) in lines[0], lines[0]
    assert lines[0].endswith(" allow_any"), lines[0]
    assert series(k, destination_service_name="PassthroughCluster", destination_service=ext,
                  response_code="200", reporter="source", response_flags="-",
                  destination_service_namespace="unknown") == 1
    assert series(k, destination_service_name="details", response_code="200") == 1
    # a name is resolved from /etc/hosts (never DNS on a worker); unknown names are 503 DF
    with open("/etc/hosts") as f:
        assert re.search(r"^\s*127\.0\.0\.1\s.*\blocalhost\b", f.read(), re.M)
    assert get(k, "localhost:%d" % external) == 200
    assert get(k, "no-such-host.invalid:%d" % external) == 503
    # a Host naming the outbound listener itself would loop: refused
    assert get(k, "127.0.0.1:%d" % k.outbound) == 503
    lines = k.log_lines(5)
    assert " 503 DF dns_resolution_failure " in lines[3], lines[3]
    assert " 503 UH no_healthy_upstream " in lines[4], lines[4]
    # many distinct passthrough addresses (connection refused): their upstream pools are
    # freed with their last connection once a worker holds more than 256, never a crash
    closed = free_port()
    for i in range(300):
        assert get(k, "127.0.%d.%d:%d" % (1 + i // 250, 2 + i % 250, closed)) == 503
    assert get(k, ext) == 200
    # without any config dir, too
    k2 = keel("--inbound", "off")
    assert get(k2, ext) == 200
    assert series(k2, destination_service_name="PassthroughCluster", response_code="200") == 1


def test_registry_only_blackhole_and_live_switch(keel, backend_factory, tmp_path):
    details, external = backend_factory("details"), backend_factory("external")
    d = config_dir(tmp_path, details, "REGISTRY_ONLY")
    k = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off")
    ext = "127.0.0.1:%d" % external
    assert get(k, ext) == 502
    assert get(k, "details:9080") == 200
    lines = k.log_lines(2)
    # Envoy's direct response of Istio's block_all route: no flag, no upstream cluster
    assert '502 - direct_response - "-" 0 0 ' in lines[0], lines[0]
    assert ' "%s" "-" - ' % ext in lines[0] and lines[0].endswith(" block_all"), lines[0]
    assert series(k, destination_service_name="BlackHoleCluster", destination_service=ext,
                  response_code="502", response_flags="-", reporter="source") == 1
    # the mesh config's proxyMetadata names this cluster
    assert series(k, source_cluster="east", destination_service_name="details") == 1
    # the policy follows the mesh config at reload: ALLOW_ANY passes through again
    gen = k.stats()["keel_config_generation"]
    (d / "mesh.yaml").write_text(MESH % {"mode": "ALLOW_ANY"})
    deadline = time.time() + 5
    while k.stats().get("keel_config_generation", 0) <= gen:
        assert time.time() < deadline, "the reload never went live"
        time.sleep(0.05)
    assert get(k, ext) == 200
    assert series(k, destination_service_name="PassthroughCluster", response_code="200") == 1


def test_cluster_id_precedence(keel, backend_factory, tmp_path):
    details = backend_factory("details")
    d = config_dir(tmp_path, details, "ALLOW_ANY")
    # the proxy's own environment wins over the mesh config's proxyMetadata
    k = keel("--config-dir", str(d), "--workload", "sleep-v1.default", "--inbound", "off",
             env=dict(os.environ, ISTIO_META_CLUSTER_ID="west"))
    assert get(k, "details:9080") == 200
    assert series(k, source_cluster="west") == 1 and series(k, source_cluster="east") == 0
