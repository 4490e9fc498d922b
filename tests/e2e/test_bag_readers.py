"""The attribute bag is filled lean (no response.headers, no uids) only when nothing but
the standard metrics reads it (then it holds only what they read): every reader that is
an expression still sees everything -- a tagOverrides value, a Telemetry access-log
filter, a %CEL% operator."""
import os
import time

from conftest import raw_exchange, scraped_sum

TAG_OVERRIDE = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides:
        response_type: {value: "response.headers['content-type']"}
"""

FILTERED_LOG = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: json-only
      envoyFileAccessLog:
        path: %(path)s
        logFormat: {text: "%%RESPONSE_CODE%% %%REQ(:PATH)%%\\n"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: json-only}]
    filter: {expression: "response.headers['content-type'] == 'application/json'"}
"""


def get(k, path):
    out = raw_exchange(k.outbound, b"GET %s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n" % path.encode())
    return int(out.split(b" ", 2)[1])


def wait_sum(k, name, want, **labels):
    deadline = time.time() + 5
    got = scraped_sum(k.admin, name, **labels)
    while got != want and time.time() < deadline:
        time.sleep(0.02)
        got = scraped_sum(k.admin, name, **labels)
    return got


def test_tag_override_reads_response_headers(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "telemetry.yaml").write_text(TAG_OVERRIDE)
    k = keel("--config-dir", str(d), "--route", "web=127.0.0.1:%d" % backend, upstream=backend)
    assert get(k, "/headers") == 200
    assert get(k, "/status/200") == 200
    assert wait_sum(k, "istio_requests_total", 1, response_type="application/json") == 1
    assert wait_sum(k, "istio_requests_total", 2) == 2


def test_access_log_filter_reads_response_headers(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    log = str(tmp_path / "filtered.log")
    (d / "mesh.yaml").write_text(FILTERED_LOG % {"path": log})
    k = keel("--config-dir", str(d), "--route", "web=127.0.0.1:%d" % backend, upstream=backend,
             access_log=False)
    for path, code in (("/status/200", 200), ("/headers", 200), ("/status/201", 201), ("/headers", 200)):
        assert get(k, path) == code
    # lines are written in order: a line logged wrongly comes before the last one
    deadline = time.time() + 5
    lines = []
    while time.time() < deadline and (len(lines) < 2 or lines[-1] != "200 /headers"):
        if os.path.exists(log):
            with open(log) as f:
                lines = f.read().splitlines()
        time.sleep(0.02)
    assert lines == ["200 /headers", "200 /headers"]


def test_cel_operator_reads_response_headers(keel, backend):
    k = keel("--route", "web=127.0.0.1:%d" % backend, "--access-log-format",
             "%CEL(response.headers['content-type'])% %CEL(request.url_path)% "
             "%CEL(response.code_details)% %RESPONSE_CODE%\n", upstream=backend)
    assert get(k, "/headers") == 200
    assert get(k, "/status/200?x=1") == 200
    assert k.log_lines(2) == ["application/json /headers via_upstream 200", "- /status/200 via_upstream 200"]


def istio_series(k):
    """The istio_* samples a proxy exposes, without what depends on timing (latency
    buckets and sums) or on the build."""
    from conftest import http_get
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % k.admin)
    keep = []
    for line in text.splitlines():
        if not line.startswith("istio_") or line.startswith(("istio_build", "istio_double_request_count")):
            continue
        if "duration_milliseconds_bucket" in line or "duration_milliseconds_sum" in line:
            continue
        keep.append(line)
    return sorted(keep)


def test_lean_bag_gives_the_standard_metrics_a_full_bag_gives(keel, backend, tmp_path):
    """The lean bag's attribute list is kept by hand beside the standard metrics' reads: a
    proxy filling it lean and one filling it whole (a Mixer rule reads the bag) must
    expose the same series for the same traffic, errors and upstream failures included."""
    full = tmp_path / "full.d"
    full.mkdir()
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "seeds",
                           "001-doublerequestcount.yaml")) as f:
        (full / "rule.yaml").write_text(f.read())
    from conftest import free_port
    dead = free_port()  # nothing listens: upstream connect failures (UF)
    routes = ("--route", "web=127.0.0.1:%d" % backend, "--route", "dead=127.0.0.1:%d" % dead)
    lean_k = keel(*routes, upstream=backend)
    full_k = keel("--config-dir", str(full), *routes, upstream=backend)
    for k in (lean_k, full_k):
        for path in ("/status/200", "/status/404", "/status/503", "/headers", "/status/200?q=1"):
            get(k, path)
        out = raw_exchange(k.outbound, b"GET / HTTP/1.1\r\nHost: dead\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503"), out
        out = raw_exchange(k.inbound, b"POST /status/201 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                      b"Connection: close\r\n\r\nabc")
        assert out.startswith(b"HTTP/1.1 201"), out
        # request_protocol reads content-type, any case, the first one only (a lean bag
        # holds just that header of the request's)
        for cts in ([b"Content-TYPE: Application/GRPC+proto"], [b"content-type: text/plain",
                                                                b"Content-Type: application/grpc"]):
            out = raw_exchange(k.outbound, b"GET /status/200 HTTP/1.1\r\nHost: web\r\n" + b"\r\n".join(cts) +
                               b"\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200"), out
        assert wait_sum(k, "istio_requests_total", 9) == 9
    assert scraped_sum(full_k.admin, "istio_double_request_count") > 0  # the rule did read a bag
    lean, whole = istio_series(lean_k), istio_series(full_k)
    assert any('response_flags="UF"' in s for s in lean), lean
    assert scraped_sum(lean_k.admin, "istio_requests_total", request_protocol="grpc") == 1
    assert lean == whole
