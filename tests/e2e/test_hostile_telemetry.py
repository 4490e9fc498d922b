"""Hostile input against the telemetry outputs: raw clients send peer metadata, paths and
headers with invalid UTF-8, quotes, backslashes and control bytes, or thousands of
distinct peer names; the Prometheus scrape must still parse (promtool), the stdio and
access-log JSON lines must stay valid JSON in valid UTF-8, the text access log must keep
one line per request, and memory and the scrape must stay bounded. A YAML alias bomb
must not take `keel validate` anywhere.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import KEEL, ROOT, SANITIZED, WRAPPER, http_get, raw_exchange

# Lint remarks promtool makes on Istio's canonical names (not parse errors)
ISTIO_LINT_EXCEPTIONS = ("istio_request_duration_milliseconds use base unit",
                         "istio_requests_total", "istio_request_bytes", "istio_response_bytes",
                         "istio_tcp_", "istio_hostile_count")

MIXER = """apiVersion: config.istio.io/v1alpha2
kind: metric
metadata: {name: hostile, namespace: istio-system}
spec:
  value: "1"
  dimensions:
    path: request.path | "none"
    ua: request.useragent | "none"
---
apiVersion: config.istio.io/v1alpha2
kind: prometheus
metadata: {name: hostilehandler, namespace: istio-system}
spec:
  metrics:
  - name: hostile_count
    instance_name: hostile.metric.istio-system
    kind: COUNTER
    label_names: [path, ua]
---
apiVersion: config.istio.io/v1alpha2
kind: logentry
metadata: {name: hostilelog, namespace: istio-system}
spec:
  severity: '"info"'
  variables:
    path: request.path | "none"
    ua: request.useragent | "none"
    hdr: request.headers["x-hostile"] | "none"
    source: source.workload.name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {name: hostilestdio, namespace: istio-system}
spec:
  outputAsJson: true
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: hostilerule, namespace: istio-system}
spec:
  actions:
  - handler: hostilehandler.prometheus
    instances: [hostile.metric]
  - handler: hostilestdio.stdio
    instances: [hostilelog.logentry]
"""

# Bytes a header value may carry on the wire (of the controls only HTAB: the HTTP parser
# refuses requests with others, so no log line or series ever sees them from a header).
HOSTILE = b'ev\xff"il\\x \x09[31m \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \xc2\x9b \xe2\x82'
HOSTILE_PEERS = [
    b"name=ev\xff\"il\\x;namespace=default",
    b"name=good;namespace=def\xc3\x28ault",
    b"name=good;label.app=a\"b\xed\xa0\x80",
    b"name=x\x09y",
    b"name=" + b"a" * 300,
]


def request(port, path=b"/status/200", headers=b""):
    return raw_exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + headers +
                        b"Connection: close\r\n\r\n")


def scrape(k):
    with urllib.request.urlopen("http://127.0.0.1:%d/stats/prometheus" % k.admin, timeout=30) as r:
        return r.headers, r.read()


def promtool_parses(body):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian prometheus) is installed by scripts/deps.sh"
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    # exit 1 = unparsable; 3 = lint remarks only, which must all be Istio's names
    assert p.returncode in (0, 3), (p.stdout + p.stderr).decode(errors="replace")
    for finding in (p.stdout + p.stderr).decode().splitlines():
        assert finding.startswith(ISTIO_LINT_EXCEPTIONS), finding


def series(text, name):
    return [l for l in text.splitlines() if l.startswith(name + "{")]


def value(text, line_prefix):
    for l in text.splitlines():
        if l.startswith(line_prefix):
            return float(l.rsplit(" ", 1)[1])
    return None


def wait_for(pred, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    return pred()


def test_hostile_label_values_keep_the_scrape_parsable(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "mixer.yaml").write_text(MIXER)
    k = keel("--config-dir", str(d), upstream=backend, access_log=False)
    for peer in HOSTILE_PEERS:
        assert request(k.inbound, headers=b"x-keel-peer-metadata: " + peer + b"\r\n").startswith(
            b"HTTP/1.1 200")
    assert request(k.inbound, headers=b"x-keel-peer-metadata: name=good-one;namespace=default\r\n"
                   ).startswith(b"HTTP/1.1 200")
    # hostile bytes also reach label values through Mixer dimensions (path, user agent)
    assert request(k.inbound, path=b'/status/200/a"b\\c', headers=b"User-Agent: " + HOSTILE + b"\r\n"
                   ).startswith(b"HTTP/1.1 200")
    headers, body = scrape(k)
    assert headers["transfer-encoding"] == "chunked"  # streamed, never built whole
    text = body.decode("utf-8")  # strict: valid UTF-8
    promtool_parses(body)
    # invalid metadata: counted, and the peer is unknown; the valid one is taken
    assert value(text, "keel_peer_metadata_rejected_total ") == len(HOSTILE_PEERS)
    req = series(text, "istio_requests_total")
    assert any('source_workload="good-one"' in l for l in req), req
    assert not any("ev" in l.split("source_workload=")[1][:4] for l in req)
    # the Mixer dimensions: escaped quote/backslash, U+FFFD for every invalid sequence
    hc = series(text, "istio_hostile_count")
    ua_line = [l for l in hc if "ev\ufffd" in l]
    assert len(ua_line) == 1, hc
    assert '\\"il\\\\x' in ua_line[0]
    assert 'path="/status/200/a\\"b\\\\c"' in "".join(hc)


def test_json_outputs_stay_valid_with_hostile_bytes(keel, backend, tmp_path):
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "mixer.yaml").write_text(MIXER)
    k = keel("--config-dir", str(d), "--access-log-encoding", "JSON", upstream=backend)
    n = 0
    for path in (b"/status/200/\xff\xfe", b'/status/200/"\\', b"/status/200/caf\xc3\xa9/\xed\xa0\x80",
                 b"/status/200/%00\xc0\xaf"):
        for ua in (HOSTILE, b'"\\"\\\\', b"\x80\x81\xbf\xc0\xc1\xf5\xff"):
            r = request(k.inbound, path=path, headers=b"User-Agent: " + ua + b"\r\nX-Hostile: " + ua +
                        b"\x09x\r\n")
            if r.startswith(b"HTTP/1.1 400"):
                continue  # a path the HTTP parser refuses makes no log line
            assert r.startswith(b"HTTP/1.1 200"), r[:80]
            n += 1
    assert n >= 9
    lines = k.log_lines(n)
    assert len(lines) == n
    with open(k.access_log, "rb") as f:
        raw = f.read()
    raw.decode("utf-8")  # strict
    seen_fffd = False
    for line in raw.splitlines():
        obj = json.loads(line.decode("utf-8"))
        seen_fffd |= "\ufffd" in obj["user_agent"]
    assert seen_fffd
    # the stdio handler's JSON lines on keel's stdout
    stdio = wait_for(lambda: [l for l in k.proc.output().splitlines() if '"instance":"hostilelog' in l]
                     if len([l for l in k.proc.output().splitlines() if '"instance":"hostilelog' in l]) >= n
                     else None)
    assert stdio and len(stdio) >= n
    with open(k.proc.log_path, "rb") as f:
        out = f.read()
    for line in out.splitlines():
        if b'"instance":"hostilelog' not in line:
            continue
        line.decode("utf-8")  # strict
        obj = json.loads(line)
        assert set(obj) >= {"path", "ua", "hdr"}
        assert not any(c < 0x20 or c == 0x7f for c in line)


def test_text_access_log_cannot_forge_lines_or_fields(keel, backend):
    k = keel(upstream=backend)
    ua = b'x" 200 - "forged\x09[2J\xc2\x9b\xff \\x0a'
    n = 3
    for _ in range(n):
        assert request(k.inbound, headers=b"User-Agent: " + ua + b"\r\n").startswith(b"HTTP/1.1 200")
    lines = k.log_lines(n)
    assert len(lines) == n
    with open(k.access_log, "rb") as f:
        raw = f.read()
    assert raw.count(b"\n") == n
    for line in raw.splitlines():
        # the value is one field: no raw quote, control byte or invalid UTF-8 from it
        assert b'"x\\x22 200 - \\x22forged\\x09[2J\\xc2\\x9b\\xff \\x5cx0a"' in line, line
        assert not any(c < 0x20 or c == 0x7f for c in line)
        line.decode("utf-8")
        # Istio's default format has 7 quoted fields: 14 quotes, none forged
        assert line.count(b'"') == 14


def rss_peak_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            if l.startswith("VmHWM:"):
                return int(l.split()[1])
    return 0


def blast_peer_names(port, n, prefix):
    """n requests on keep-alive connections, each with a distinct valid peer name."""
    done = 0
    while done < n:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        f = s.makefile("rb")
        batch = min(500, n - done)
        for i in range(done, done + batch):
            s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: a\r\nx-keel-peer-metadata: name=%s-%d;"
                      b"namespace=ns-%d\r\n\r\n" % (prefix, i, i))
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            f.read(length)
        s.close()
        done += batch


def test_cardinality_attack_keeps_memory_and_scrape_bounded(keel, backend):
    limit, names = 1000, 10000
    k = keel("--metric-series-limit", str(limit), upstream=backend, access_log=False)
    blast_peer_names(k.inbound, names, b"peer")
    # a scrape in the middle of it: it streams, and must parse
    headers, body = scrape(k)
    assert headers["transfer-encoding"] == "chunked"
    text = body.decode("utf-8")
    promtool_parses(body)
    req = series(text, "istio_requests_total")
    assert limit - 5 <= len(req) <= limit  # one per peer name, capped at the limit
    for fam in ("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"):
        assert len(series(text, fam + "_count")) <= limit
    overflow = value(text, 'keel_metrics_series_overflow_total{metric="istio_requests_total"} ')
    assert overflow is not None and overflow >= names - limit
    # bounded scrape: per series ~25 labels, histograms (3 x 22 lines) and the counter
    assert len(body) < limit * 70 * 800, len(body)
    if not WRAPPER and not SANITIZED:
        peak = rss_peak_kb(k.proc.p.pid)
        assert peak < 60 * 1024, "peak RSS %d KiB" % peak


def run_validate(path, timeout=10):
    """`keel validate path` under /usr/bin/time (Debian time, scripts/deps.sh): a child
    forked from pytest would inherit pytest's RSS high-water mark across exec.
    Returns (exit code, output, seconds, peak RSS KiB)."""
    p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + WRAPPER + [KEEL, "validate", path],
                       capture_output=True, timeout=timeout)
    out = (p.stdout + p.stderr).decode(errors="replace")
    stats = [l for l in out.splitlines() if l.startswith("TIME ")][-1].split()
    return p.returncode, out, float(stats[1]), int(stats[2])


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    corpus = os.path.join(ROOT, "tests", "config-errors", "91-yaml-billion-laughs.yaml")
    # and a deeper one: 10^12 nodes once expanded
    lines = ["apiVersion: v1", "kind: List", "items:",
             "- &a {apiVersion: v1, kind: Service, metadata: {name: lol, namespace: default}}"]
    prev = "a"
    for name in "bcdefghijklm":
        lines.append("- &%s {apiVersion: v1, kind: List, items: [%s]}" % (name, ",".join(["*" + prev] * 10)))
        prev = name
    deep = tmp_path / "deep.yaml"
    deep.write_text("\n".join(lines) + "\n")
    for path in (corpus, str(deep)):
        rc, out, secs, rss = run_validate(path)
        assert rc == 1, out
        assert "error: YAML aliases expand to more than" in out, out
        if not WRAPPER:
            assert secs < 1.0, secs
        if not WRAPPER and not SANITIZED:
            assert rss < 64 * 1024, rss
