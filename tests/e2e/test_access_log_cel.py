"""%CEL(expr)% in access-log formats (Envoy's CEL formatter): from --access-log-format and
from a Telemetry envoyFileAccessLog provider's text format, evaluated per line over the
exchange's attribute bag; a broken expression stops the load with its column."""
import json
import os
import subprocess
import time

from conftest import KEEL, raw_exchange


def get(k, path, headers=b""):
    out = raw_exchange(k.outbound, b"GET %s HTTP/1.1\r\nHost: web\r\n%sConnection: close\r\n\r\n"
                       % (path.encode(), headers))
    return int(out.split(b" ", 2)[1])


def test_cel_operator_in_access_log_format(keel, backend):
    k = keel("--route", "web=127.0.0.1:%d" % backend, "--access-log-format",
             '%CEL(request.headers["x-user"])% %CEL(response.code >= 400)% '
             '%CEL(request.url_path.size()):1% %CEL(request.headers)%\n', upstream=backend)
    assert get(k, "/status/200", b"x-user: alice\r\n") == 200
    assert get(k, "/status/503") == 503
    lines = k.log_lines(2)
    # a header that is absent is an evaluation error: "-", as Envoy prints it
    assert lines[0].startswith("alice false 1 {"), lines
    assert lines[1].startswith("- true 1 {"), lines
    # a map is JSON; its quotes are escaped as any quote from a request is in text logs
    assert "\\x22x-user\\x22:\\x22alice\\x22" in lines[0], lines[0]


def test_cel_useragent_and_referer_first_header_any_case(keel, backend):
    # request.useragent / request.referer: the first such header, whatever its case
    k = keel("--route", "web=127.0.0.1:%d" % backend, "--access-log-format",
             '%CEL(request.useragent)% %CEL(request.referer)% %CEL(request.headers["referer"])%\n',
             upstream=backend)
    assert get(k, "/status/200", b"USER-Agent: ua-1\r\nReferer: ref-1\r\nuser-agent: ua-2\r\n"
                                 b"REFERER: ref-2\r\n") == 200
    assert get(k, "/status/200", b"x-other: 1\r\n") == 200
    lines = k.log_lines(2)
    assert lines[0] == "ua-1 ref-1 ref-1", lines
    assert lines[1] == "- - -", lines


MESH = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: cel-text
      envoyFileAccessLog:
        path: %(path)s
        logFormat: {text: "%%CEL(request.headers['x-user'])%% %%CEL(response.code)%% %%CEL(request.method == 'GET')%%\\n"}
    - name: cel-json
      envoyFileAccessLog:
        path: %(json)s
        logFormat:
          labels: {user: "%%CEL(request.headers['x-user'])%%", code: "%%CEL(response.code)%%"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: cel-text}, {name: cel-json}]
"""


def read_lines(path, n):
    """Lines of a provider's file once n are there (the writer thread batches)."""
    deadline = time.time() + 5
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.02)
    return lines


def test_cel_operator_in_telemetry_provider_formats(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    text, js = str(tmp_path / "cel.log"), str(tmp_path / "cel.json")
    (d / "mesh.yaml").write_text(MESH % {"path": text, "json": js})
    k = keel("--config-dir", str(d), "--route", "web=127.0.0.1:%d" % backend, upstream=backend,
             access_log=False)
    assert get(k, "/status/201", b"x-user: bob\r\n") == 201
    assert get(k, "/status/404") == 404
    assert read_lines(text, 2) == ["bob 201 true", "- 404 true"]
    # JSON: Envoy's CEL formatter gives strings; an error is null
    recs = [json.loads(l) for l in read_lines(js, 2)]
    assert recs == [{"user": "bob", "code": "201"}, {"user": None, "code": "404"}]


def test_cel_compile_error_stops_the_load_with_its_column(tmp_path):
    r = subprocess.run([KEEL, "proxy", "--inbound", "off", "--outbound", "127.0.0.1:0", "--admin",
                        "127.0.0.1:0", "--access-log", str(tmp_path / "x.log"),
                        "--access-log-format", "%RESPONSE_CODE% %CEL(request.hedaers['a'])%"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    # "%RESPONSE_CODE% %CEL(" is 21 bytes: the expression starts at column 22
    assert "column 22: CEL: " in r.stderr, r.stderr
    assert "request.hedaers" in r.stderr and "request.headers" in r.stderr, r.stderr
