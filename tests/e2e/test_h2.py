"""HTTP/2 through keel: h2c by prior knowledge on the listeners (h2load, nghttp, curl, raw
frames), HTTP/2 to gRPC apps and between sidecars (python3-grpcio), and the HTTP/2 attacks
of recent years refused cheaply while other clients are served."""
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import Proc, free_port, http_get, rss_kib, wait_port, scraped_sum

HERE = os.path.dirname(os.path.abspath(__file__))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def run(args, timeout=60):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- raw frames

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def lit(name, value):
    """HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name) + s(value)


def get_block(path=b"/status/200", authority=b"svc"):
    return lit(b":method", b"GET") + lit(b":scheme", b"http") + lit(b":path", path) + \
        lit(b":authority", authority)


class RawH2:
    """A client speaking frames by hand: what attackers send."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.sendall(PREFACE + frame(4, 0, 0))
        self.buf = b""

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def frames(self, timeout=5.0):
        """Read frames until the server closes (or timeout); return [(type, flags, sid, payload)]."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    break
                self.buf += d
        except (socket.timeout, ConnectionResetError):
            pass
        out, b = [], self.buf
        while len(b) >= 9:
            n = int.from_bytes(b[:3], "big")
            if len(b) < 9 + n:
                break
            out.append((b[3], b[4], int.from_bytes(b[5:9], "big") & 0x7fffffff, b[9:9 + n]))
            b = b[9 + n:]
        return out

    def close(self):
        self.s.close()


def goaway_code(frames):
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == 7]
    return codes[-1] if codes else None


# ---------------------------------------------------------------- h2c to an HTTP/1.1 app

def test_h2load_prior_knowledge_to_http1_backend(keel, backend):
    """h2load: 4 connections x 10 streams; every stream answered, logged once as HTTP/2."""
    k = keel(upstream=backend, concurrency=2)
    n = 4000
    p = run(["h2load", "-n", str(n), "-c", "4", "-m", "10", k.url("/status/200")])
    assert re.search(r"requests: %d total, %d started, %d done, %d succeeded" % (n, n, n, n), p.stdout), p.stdout
    assert "status codes: %d 2xx" % n in p.stdout
    lines = k.log_lines(n, timeout=10)
    assert len(lines) == n
    assert all('"GET /status/200 HTTP/2" 200' in l for l in lines)
    st = k.stats()
    assert st["keel_h2_cx_total"] == 4
    assert st["keel_h2_streams_total"] == n
    assert st['keel_downstream_rq_total{response_code_class="2xx"}'] == n
    assert st["keel_downstream_cx_active"] == 0


def test_nghttp_and_curl_bodies_both_ways(keel, backend):
    k = keel(upstream=backend)
    # nghttp: a GET, response headers lower-cased and no hop-by-hop ones
    p = run(["nghttp", "-v", k.url("/headers")])
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r":status: 200", p.stdout)
    assert "content-type: application/json" in p.stdout
    assert not re.search(r"recv \(.*\) (connection|transfer-encoding|keep-alive):", p.stdout)
    got = json.JSONDecoder().raw_decode(p.stdout[p.stdout.index('{"line"'):])[0]
    assert got["line"] == "GET /headers HTTP/1.1"
    names = [h[0].lower() for h in got["headers"]]
    assert "host" in names and "x-forwarded-for" in names and "x-request-id" in names
    # a 1 MiB upload streamed through flow control (chunked to the HTTP/1.1 app)
    blob = os.urandom(1 << 20)
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-X", "POST", "--data-binary", "@-",
                        "-H", "transfer-encoding:", k.url("/count")], input=blob, capture_output=True,
                       timeout=30)
    assert json.loads(p.stdout) == {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    # and 8 MiB down
    p = subprocess.run(["curl", "-s", "--http2-prior-knowledge", k.url("/big?n=8388608")],
                       capture_output=True, timeout=30)
    assert p.stdout == b"x" * 8388608
    # HTTP/1.1 on the same port still works
    assert http_get(k.url("/status/200"))[0] == 200
    lines = k.log_lines(4)
    assert '"POST /count HTTP/2" 200' in lines[1] and " %d " % len(blob) in lines[1]
    assert '"GET /status/200 HTTP/1.1" 200' in lines[3]


def test_chunked_response_and_local_replies_over_h2(keel, backend):
    k = keel(upstream=backend, access_log=True)
    p = run(["curl", "-s", "-i", "--http2-prior-knowledge", k.url("/chunked")])
    assert p.stdout.startswith("HTTP/2 200")
    assert "transfer-encoding" not in p.stdout.lower()
    assert p.stdout.endswith("hello chunked world\n")
    # an upstream that drops the connection: 503 from keel, as over HTTP/1.1
    p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", k.url("/drop")])
    assert p.stdout == "503"
    # a HEAD: the length it describes, no body
    p = run(["curl", "-s", "-I", "--http2-prior-knowledge", k.url("/status/200")])
    assert p.stdout.startswith("HTTP/2 200")


def test_client_reset_mid_response_is_logged_dc(keel, backend):
    """The client cancels a stream while the app is slow: the exchange ends as a
    downstream disconnect, the connection carries on."""
    k = keel(upstream=backend)
    c = RawH2(k.inbound)
    c.send(frame(1, 0x5, 1, get_block(b"/slow?ms=300")))
    time.sleep(0.05)
    c.send(frame(3, 0, 1, struct.pack(">I", 8)))  # RST_STREAM CANCEL
    c.send(frame(1, 0x5, 3, get_block(b"/status/200")))
    deadline = time.time() + 5
    frames = []
    while time.time() < deadline and not any(t == 1 and sid == 3 for t, _, sid, _ in frames):
        frames = c.frames(timeout=0.5)
    assert any(t == 1 and sid == 3 for t, _, sid, _ in frames)
    c.close()
    lines = k.log_lines(2, timeout=5)
    slow = [l for l in lines if "/slow" in l]
    assert slow and " DC " in slow[0], lines


# ---------------------------------------------------------------- attacks

def served(k):
    p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
             k.url("/status/200")])
    return p.stdout == "200"


def test_rapid_reset_ends_the_connection(keel, backend):
    """CVE-2023-44487: HEADERS + RST_STREAM pairs, thousands a second, end with
    GOAWAY(ENHANCE_YOUR_CALM); the proxy stays small and serves others."""
    k = keel(upstream=backend)
    before = rss_kib(k.proc.p.pid)
    c = RawH2(k.inbound)
    burst = b"".join(frame(1, 0x5, sid, get_block()) + frame(3, 0, sid, struct.pack(">I", 8))
                     for sid in range(1, 2001, 2))
    c.send(burst)
    frames = c.frames()
    assert goaway_code(frames) == 0xb
    c.close()
    assert served(k)
    st = k.stats()
    assert st['keel_h2_refused_total{reason="rapid_reset"}'] == 1
    # no stream of the failed connection reached the backend (only served()'s request):
    # with its GOAWAY waiting for the loop's batched send, the connection went on running
    # until it was sent, and 200 reset streams connected upstream first
    assert st["keel_upstream_cx_total"] == 1
    assert rss_kib(k.proc.p.pid) - before < 20000


def test_ping_and_settings_flood(keel, backend):
    k = keel(upstream=backend)
    for flood in (b"".join(frame(6, 0, 0, struct.pack(">Q", i)) for i in range(5000)),
                  b"".join(frame(4, 0, 0) for _ in range(5000))):
        c = RawH2(k.inbound)
        c.send(flood)
        assert goaway_code(c.frames()) == 0xb
        c.close()
    assert served(k)
    assert k.stats()['keel_h2_refused_total{reason="control_flood"}'] == 2


def test_continuation_flood(keel, backend):
    """2024's CONTINUATION flood: a header block that never ends is cut off."""
    k = keel(upstream=backend)
    c = RawH2(k.inbound)
    data = frame(1, 0x0, 1, get_block())
    data += b"".join(frame(9, 0, 1, lit(b"x-f", b"a" * 100)) for _ in range(10000))
    c.send(data)
    assert goaway_code(c.frames()) == 0xb
    c.close()
    assert served(k)
    assert k.stats()['keel_h2_refused_total{reason="continuation_flood"}'] == 1


def test_header_list_too_large_and_hpack_bomb(keel, backend):
    """A header block over 64 KiB decoded, whether sent in full or as a few bytes that
    reference one big table entry many times (HPACK bomb), resets that stream only."""
    k = keel(upstream=backend)
    c = RawH2(k.inbound)
    # a 4000-byte value indexed into the dynamic table (4035 of its 4096 bytes), then
    # referenced 100 times at 1 byte each: 400 KB decoded from 4 KB sent.
    # 4000 as a 7-bit prefixed integer: 127 + 3873 -> 0x7f, 0xa1 0x1e
    big = b"\x40\x03x-b\x7f\xa1\x1e" + b"v" * 4000
    block = get_block() + big + bytes([0x80 | 62]) * 100
    c.send(frame(1, 0x5, 1, block) + frame(1, 0x5, 3, get_block()))
    deadline = time.time() + 5
    frames = []
    while time.time() < deadline and not any(t == 1 and sid == 3 for t, _, sid, _ in frames):
        frames = c.frames(timeout=0.5)
    assert any(t == 3 and sid == 1 for t, _, sid, _ in frames), [(t, sid) for t, _, sid, _ in frames]
    assert any(t == 1 and sid == 3 for t, _, sid, _ in frames)  # the next stream answered
    c.close()
    assert k.stats()['keel_h2_refused_total{reason="headers_too_large"}'] == 1


def test_max_concurrent_streams(keel, backend):
    """SETTINGS_MAX_CONCURRENT_STREAMS is 100: the 101st open stream is refused while the
    others are answered."""
    k = keel(upstream=backend)
    c = RawH2(k.inbound)
    frames = c.frames(timeout=0.5)
    settings = [p for t, f, _, p in frames if t == 4 and not f & 1][0]
    got = {int.from_bytes(settings[i:i + 2], "big"): int.from_bytes(settings[i + 2:i + 6], "big")
           for i in range(0, len(settings), 6)}
    assert got[3] == 100  # MAX_CONCURRENT_STREAMS
    # (no SETTINGS ACK: nghttp2 refuses the excess stream; after one it would treat the
    # excess as a connection error, PROTOCOL_ERROR, which test_rapid_reset-style clients get)
    # 101 slow requests at once
    c.send(b"".join(frame(1, 0x5, sid, get_block(b"/slow?ms=500")) for sid in range(1, 203, 2)))
    frames = []
    deadline = time.time() + 10
    while time.time() < deadline and sum(1 for t, *_ in frames if t == 1) < 100:
        frames += c.frames(timeout=0.5)
        c.buf = b""
    assert any(t == 3 and sid == 201 for t, _, sid, _ in frames), [(t, sid) for t, _, sid, _ in frames if t != 0]
    assert sum(1 for t, *_ in frames if t == 1) == 100
    c.close()


def test_zero_window_stall_times_out(keel, backend):
    """A client that opens its window to nothing and never reads holds a stream only until
    --stream-idle-timeout; memory stays bounded meanwhile."""
    k = keel("--stream-idle-timeout", "1000", upstream=backend)
    before = rss_kib(k.proc.p.pid)
    c = RawH2(k.inbound)
    # SETTINGS_INITIAL_WINDOW_SIZE 0
    c.send(frame(4, 0, 0, struct.pack(">HI", 4, 0)))
    c.send(frame(1, 0x5, 1, get_block(b"/big?n=67108864")))
    time.sleep(2.5)
    assert served(k)
    lines = k.log_lines(2, timeout=5)
    big = [l for l in lines if "/big" in l]
    assert big and " SI " in big[0], lines
    assert rss_kib(k.proc.p.pid) - before < 20000
    c.close()


def test_drain_sends_goaway_and_finishes_streams(keel, backend):
    k = keel("--drain-timeout", "5000", upstream=backend)
    c = RawH2(k.inbound)
    c.send(frame(1, 0x5, 1, get_block(b"/slow?ms=500")))
    time.sleep(0.1)
    k.proc.p.send_signal(2)  # SIGINT: drain
    frames = c.frames(timeout=5)
    assert goaway_code(frames) == 0
    assert any(t == 1 and sid == 1 for t, _, sid, _ in frames)  # the stream was answered
    assert any(t == 0 and sid == 1 and f & 1 for t, f, sid, _ in frames)
    c.close()
    assert k.proc.p.wait(10) == 0


# ---------------------------------------------------------------- gRPC

GRPC_REGISTRY = """apiVersion: v1
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
  ports: [{name: grpc, port: 9090}]
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
  ports: {grpc: %(echo)d}
  labels: {app: echo, version: v1}
  serviceAccount: echo
---
"""


def grpc_app(procs, tmp_path):
    port = free_port()
    procs.append(Proc(["/usr/bin/python3", os.path.join(HERE, "grpc_app.py"), str(port)],
                      str(tmp_path / "grpc-app.log")))
    wait_port(port, timeout=15)
    return port


@pytest.fixture
def grpc_mesh(keel, backend, procs, tmp_path):
    """gRPC client -> client's outbound -> (h2c) -> echo's inbound -> (h2c) -> gRPC app."""
    app = grpc_app(procs, tmp_path)
    d = tmp_path / "keel.d"
    d.mkdir()
    ports = {"client": free_port(), "echo": free_port()}
    (d / "registry.yaml").write_text(GRPC_REGISTRY % ports)
    client = keel("--config-dir", str(d), "--workload", "client-v1.default", upstream=backend,
                  inbound_port=ports["client"], concurrency=2)
    # no --upstream-protocol: the workload's port is named grpc, so the app gets h2c
    echo = keel("--config-dir", str(d), "--workload", "echo-v1.default", upstream=app,
                inbound_port=ports["echo"], concurrency=2)
    return client, echo, app


def channel(port, authority="echo:9090"):
    import grpc
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=[("grpc.default_authority", authority)])


def method(ch, name, stream=False):
    ident = lambda b: b  # noqa: E731
    f = ch.stream_stream if stream else ch.unary_unary
    return f("/keel.Echo/" + name, request_serializer=ident, response_deserializer=ident)


def metric(k, name, **labels):
    return scraped_sum(k.admin, name, **labels)


def wait_metric(k, name, want, timeout=5.0, **labels):
    deadline = time.time() + timeout
    while metric(k, name, **labels) != want and time.time() < deadline:
        time.sleep(0.05)
    return metric(k, name, **labels)


def test_grpc_unary_stream_errors_deadline_through_two_sidecars(grpc_mesh):
    import grpc
    client, echo, _ = grpc_mesh
    ch = channel(client.outbound)
    assert method(ch, "Unary")(b"hello", timeout=5) == b"hello"
    big = os.urandom(3 << 20)
    assert method(ch, "Unary")(big, timeout=10) == big
    msgs = [os.urandom(n) for n in (1, 100, 70000, 5)]
    assert list(method(ch, "Stream", stream=True)(iter(msgs), timeout=5)) == msgs
    with pytest.raises(grpc.RpcError) as e:
        method(ch, "Fail")(b"5", timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "failed as asked"
    with pytest.raises(grpc.RpcError) as e:
        method(ch, "Slow")(b"3000", timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ch.close()
    # Istio's labels and message counts, at both reporters
    for k, rep in ((client, "source"), (echo, "destination")):
        base = dict(reporter=rep, request_protocol="grpc", destination_service="echo.default.svc.cluster.local")
        assert wait_metric(k, "istio_requests_total", 3, grpc_response_status="0", **base) == 3
        assert wait_metric(k, "istio_requests_total", 1, grpc_response_status="5", **base) == 1
        # the deadline: the client cancels (RST_STREAM) at 300 ms, when the app (told by
        # grpc-timeout) gives up too: each hop saw either the cancel first (a downstream
        # disconnect, no status, as Envoy reports it) or the app's DEADLINE_EXCEEDED
        deadline = time.time() + 5
        while time.time() < deadline:
            dc = metric(k, "istio_requests_total", response_code="0", response_flags="DC",
                        grpc_response_status="", reporter=rep, request_protocol="grpc")
            st4 = metric(k, "istio_requests_total", grpc_response_status="4", **base)
            if dc + st4 == 1:
                break
            time.sleep(0.05)
        assert dc + st4 == 1
        assert wait_metric(k, "istio_request_messages_total", 2 + 4 + 1 + 1, **base) == 8
        assert metric(k, "istio_response_messages_total", **base) == 2 + 4
    # the outbound hop spoke HTTP/2 upstream: one connection for all five calls
    st = client.stats()
    assert st["keel_upstream_cx_total"] == 1
    assert st["keel_h2_streams_total"] == 5


def test_grpc_metrics_exact_over_many_calls(grpc_mesh):
    """KEEL_GRPC_CALLS (10,000) unary calls and as many error calls, 64 in flight: every one
    counted once per reporter with its grpc status, and its messages."""
    import grpc
    n = int(os.environ.get("KEEL_GRPC_CALLS", "10000"))
    client, echo, _ = grpc_mesh
    ch = channel(client.outbound)
    unary, fail = method(ch, "Unary"), method(ch, "Fail")
    pending = []
    ok = errors = 0
    for i in range(n):
        pending.append(unary.future(b"m%d" % i, timeout=30))
        if i % 10 == 0:
            pending.append(fail.future(b"7", timeout=30))
        if len(pending) >= 64:
            for f in pending:
                try:
                    f.result()
                    ok += 1
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
                    errors += 1
            pending = []
    for f in pending:
        try:
            f.result()
            ok += 1
        except grpc.RpcError:
            errors += 1
    ch.close()
    assert ok == n and errors == (n + 9) // 10
    for k, rep in ((client, "source"), (echo, "destination")):
        base = dict(reporter=rep, request_protocol="grpc")
        assert wait_metric(k, "istio_requests_total", ok, timeout=10, grpc_response_status="0", **base) == ok
        assert wait_metric(k, "istio_requests_total", errors, grpc_response_status="7", **base) == errors
        assert wait_metric(k, "istio_request_messages_total", ok + errors, **base) == ok + errors
        assert metric(k, "istio_response_messages_total", **base) == ok
        assert metric(k, "istio_requests_total", reporter=rep) == ok + errors


def test_grpc_access_log_and_curl_http1_to_h2_app(keel, procs, tmp_path):
    """One sidecar before a gRPC app: %GRPC_STATUS% and %PROTOCOL% in the access log; an
    HTTP/1.1 client (curl) reaches the HTTP/2 app, trailers passed on chunked."""
    app = grpc_app(procs, tmp_path)
    k = keel("--upstream-protocol", "h2", "--access-log-format",
             "%PROTOCOL% %RESPONSE_CODE% %GRPC_STATUS% %REQ(:PATH)%\n", upstream=app)
    import grpc
    ch = channel(k.inbound, authority="echo")
    assert method(ch, "Unary")(b"x", timeout=5) == b"x"
    with pytest.raises(grpc.RpcError):
        method(ch, "Fail")(b"16", timeout=5)
    ch.close()
    body = b"\x00\x00\x00\x00\x03abc"
    p = subprocess.run(["curl", "-s", "-i", "--http1.1", "-H", "content-type: application/grpc",
                        "-H", "te: trailers", "--data-binary", "@-", k.url("/keel.Echo/Unary")],
                       input=body, capture_output=True, timeout=10)
    assert p.stdout.startswith(b"HTTP/1.1 200"), p.stdout
    assert b"transfer-encoding: chunked" in p.stdout.lower()
    assert p.stdout.endswith(body + b"grpc-status: 0\r\n")  # the trailer, as curl -i shows it
    lines = k.log_lines(3)
    assert lines[0] == "HTTP/2 200 Ok /keel.Echo/Unary"
    assert lines[1] == "HTTP/2 200 Unauthenticated /keel.Echo/Fail"
    assert lines[2] == "HTTP/1.1 200 Ok /keel.Echo/Unary"
