"""keel sample-app: the demo service of the local mesh, driven by real clients (python
http.client and sockets, curl, wrk), alone, in a chain, and behind keel sidecars."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import KEEL, WRAPPER, Proc, free_port, raw_exchange

# Under valgrind everything is ~20x slower: time bounds scale with it.
SLOW = 10 if WRAPPER else 1


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "port")}
    env.update(extra)
    return env


def wait_healthy(proc, port, timeout=10.0 * SLOW):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError("sample-app exited %d:\n%s" % (proc.p.returncode, proc.output()))
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("sample-app not healthy:\n" + proc.output())


@pytest.fixture
def app(procs, tmp_path):
    """Start `keel sample-app ARGS` on a free port; returns the port."""
    def start(*args, env=None, port=None, listen=True):
        port = port or free_port()
        argv = WRAPPER + [KEEL, "sample-app"] + list(args)
        if listen:
            argv += ["--listen", "127.0.0.1:%d" % port]
        p = Proc(argv, str(tmp_path / ("app-%d.out" % port)), env=env or clean_env(),
                 must_exit_clean=True)
        procs.append(p)
        wait_healthy(p, port)
        start.last = p
        return port
    return start


def get(port, path, headers=None, method="GET", body=None, timeout=10 * SLOW):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def test_health_status_headers_hello_echo_delay(app):
    port = app("--name", "httpbin", "--version", "v7")
    r, body = get(port, "/healthz")
    assert (r.status, body) == (200, b"ok")

    r, body = get(port, "/status/418")
    assert r.status == 418
    assert b"-=[ teapot ]=-" in body
    assert r.getheader("x-more-info") == "http://tools.ietf.org/html/rfc2324"
    r, body = get(port, "/status/503")
    assert (r.status, body) == (503, b"")
    r, body = get(port, "/status/204")
    assert (r.status, body, r.getheader("content-length")) == (204, b"", None)
    r, _ = get(port, "/status/abc")
    assert r.status == 400
    seen = {get(port, "/status/201,202")[0].status for _ in range(40)}
    assert seen == {201, 202}

    r, body = get(port, "/headers", headers={"X-Custom": "one", "x-custom": "two"})
    assert r.getheader("content-type") == "application/json"
    h = json.loads(body)["headers"]
    assert h["Host"] == "127.0.0.1:%d" % port
    assert h["X-Custom"] == "one,two"

    r, body = get(port, "/hello")
    assert r.status == 200
    assert re.fullmatch(rb"Hello version: v7, instance: httpbin-v7-\d+\n", body)

    r, body = get(port, "/echo", method="POST", body=b'{"x": [1, 2]}',
                  headers={"Content-Type": "application/json"})
    assert (r.status, body, r.getheader("content-type")) == (
        200, b'{"x": [1, 2]}', "application/json")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    c.request("POST", "/echo", body=iter([b"chunk one, ", b"chunk two"]), encode_chunked=True)
    r = c.getresponse()
    assert r.read() == b"chunk one, chunk two"

    t0 = time.monotonic()
    r, body = get(port, "/delay/150")
    assert time.monotonic() - t0 >= 0.15
    assert (r.status, json.loads(body)) == (200, {"delay_ms": 150})

    r, body = get(port, "/productpage", method="HEAD")
    assert r.status == 200 and body == b""
    assert int(r.getheader("content-length")) > 0


def test_keepalive_pipelining_http10_and_bad_requests(app):
    port = app()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    for path in ("/healthz", "/details/0", "/headers"):
        c.request("GET", path)
        r = c.getresponse()
        assert r.status == 200 and not r.will_close
        r.read()
    # two pipelined requests in one write, both answered in order on one connection
    out = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                             b"GET /status/202 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\nokHTTP/1.1 202 " in out
    # HTTP/1.0: closed after the answer unless keep-alive is asked for
    out = raw_exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nok")
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    first = s.recv(4096)
    assert b"Connection: keep-alive\r\n" in first and first.endswith(b"ok")
    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert s.recv(4096).endswith(b"ok")
    s.close()
    out = raw_exchange(port, b"GET http://a/status/418 HTTP/1.1\r\nHost: a\r\n\r\n", shut=True)
    assert out.startswith(b"HTTP/1.1 418 ")
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


def test_port_from_env_and_bad_arguments(app, procs, tmp_path):
    port = free_port()
    app("--name", "p", env=clean_env(PORT=str(port)), port=port, listen=False)
    assert get(port, "/healthz")[0].status == 200

    def run(*args, env=None):
        return subprocess.run(WRAPPER + [KEEL, "sample-app"] + list(args), env=env or clean_env(),
                              capture_output=True, text=True, timeout=30 * SLOW)
    r = run()
    assert r.returncode == 1 and "--listen ADDR or set PORT" in r.stderr
    r = run("--listen", "127.0.0.1:0", "--error-rate", "1.5")
    assert r.returncode == 2 and "--error-rate" in r.stderr
    r = run("--listen", "127.0.0.1:0", "--call", "ftp://x/")
    assert r.returncode == 1 and "--call 'ftp://x/'" in r.stderr
    r = run("--listen", "127.0.0.1:0", env=clean_env(HTTP_PROXY="http://no:port:x"))
    assert r.returncode == 1 and "HTTP_PROXY" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "--call URL" in r.stdout


def test_chain_direct_returns_nested_json(app):
    c = app("--name", "ratings", "--version", "v2")
    b = app("--name", "reviews", "--call", "http://127.0.0.1:%d/ratings/0" % c)
    a = app("--name", "productpage", "--call", "http://127.0.0.1:%d/reviews/0" % b,
            "--call", "http://127.0.0.1:%d/headers" % c)
    r, body = get(a, "/productpage", headers={"x-b3-traceid": "80f198ee56343ba8",
                                              "x-request-id": "req-42", "end-user": "jason",
                                              "x-not-forwarded": "1"})
    assert r.status == 200
    page = json.loads(body)
    assert page["name"] == "productpage" and page["path"] == "/productpage"
    reviews = page["calls"][0]
    assert reviews["url"] == "http://127.0.0.1:%d/reviews/0" % b
    assert reviews["status"] == 200
    assert reviews["body"]["name"] == "reviews"
    assert reviews["body"]["path"] == "/reviews/0"
    ratings = reviews["body"]["calls"][0]["body"]
    assert (ratings["name"], ratings["version"], ratings["calls"]) == ("ratings", "v2", [])
    headers = page["calls"][1]["body"]["headers"]
    assert headers["x-b3-traceid"] == "80f198ee56343ba8"
    assert headers["x-request-id"] == "req-42"
    assert headers["end-user"] == "jason"
    assert headers["Host"] == "127.0.0.1:%d" % c
    assert "x-not-forwarded" not in headers


def test_calls_keep_alive_and_read_every_framing(app, backend):
    kept = app("--call", "http://127.0.0.1:%d/conn" % backend,
               "--call", "http://127.0.0.1:%d/chunked" % backend,
               "--call", "http://127.0.0.1:%d/status/404" % backend,
               "--call", "http://127.0.0.1:%d/conn" % backend)
    closing = app("--call", "http://127.0.0.1:%d/eof" % backend,
                  "--call", "http://127.0.0.1:%d/close" % backend,
                  "--call", "http://127.0.0.1:%d/name" % backend)
    c = http.client.HTTPConnection("127.0.0.1", kept, timeout=10 * SLOW)
    d = http.client.HTTPConnection("127.0.0.1", closing, timeout=10 * SLOW)
    conns = []
    for _ in range(4):
        c.request("GET", "/")
        r = c.getresponse()
        calls = json.loads(r.read())["calls"]
        assert r.status == 200
        conns += [calls[0]["body"], calls[3]["body"]]
        assert calls[1] == {"url": "http://127.0.0.1:%d/chunked" % backend, "status": 200,
                            "body": "hello chunked world\n"}
        assert calls[2]["status"] == 404
        # bodies up to EOF, then Connection: close, then a new connection
        d.request("GET", "/")
        r = d.getresponse()
        calls = json.loads(r.read())["calls"]
        assert [x["body"] for x in calls] == ["until the end\n", "bye\n", "backend"]
    # every call of one client connection went over one downstream connection
    assert len(set(conns)) == 1


def test_failed_call_listed_and_strict_calls_503(app):
    dead = free_port()
    url = "http://127.0.0.1:%d/x" % dead
    a = app("--call", url)
    r, body = get(a, "/")
    assert r.status == 200
    call = json.loads(body)["calls"][0]
    assert (call["url"], call["status"]) == (url, 0)
    assert "refused" in call["error"]
    strict = app("--strict-calls", "--call", url)
    assert get(strict, "/")[0].status == 503
    failing = app("--error-rate", "1")
    assert get(app("--strict-calls", "--call", "http://127.0.0.1:%d/" % failing), "/")[0].status == 503


def test_error_rate(app):
    always = app("--error-rate", "1", "--name", "ratings")
    r, body = get(always, "/ratings/0")
    assert r.status == 500
    assert json.loads(body)["error"] == "injected fault (--error-rate)"
    assert get(always, "/healthz")[0].status == 200  # only main pages fail
    never = app("--error-rate", "0")
    assert all(get(never, "/")[0].status == 200 for _ in range(20))
    half = app("--error-rate", "0.5")
    c = http.client.HTTPConnection("127.0.0.1", half, timeout=10 * SLOW)
    codes = []
    for _ in range(200):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        codes.append(r.status)
    assert set(codes) == {200, 500}
    assert 40 < codes.count(500) < 160


def test_latency_delays_each_response_without_blocking_others(app):
    port = app("--latency", "300")
    results = []

    def one():
        t0 = time.monotonic()
        r, _ = get(port, "/productpage")
        results.append((r.status, time.monotonic() - t0))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    assert [s for s, _ in results] == [200] * 5
    assert min(d for _, d in results) >= 0.3
    # five in parallel take about one delay, not five in a row
    assert wall < 1.2 * SLOW
    # a long delay in flight does not hold up the health check
    slow = threading.Thread(target=lambda: get(port, "/delay/2000"))
    slow.start()
    t0 = time.monotonic()
    assert get(port, "/healthz")[0].status == 200
    assert time.monotonic() - t0 < 0.5 * SLOW
    assert slow.is_alive()
    slow.join()


def test_concurrency_caps_connections_and_sheds_idle_ones(app):
    port = app("--concurrency", "1")
    # the one slot is busy: a second client waits until it is free
    # the slow request is sent from this thread, so it is queued first; its answer is
    # read in another
    first = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    t0 = time.monotonic()
    first.request("GET", "/delay/1500")
    slow = threading.Thread(target=lambda: first.getresponse().read())
    slow.start()
    time.sleep(0.3)  # the app accepts it and takes its one slot
    assert get(port, "/healthz")[0].status == 200
    assert time.monotonic() - t0 >= 1.2
    slow.join()
    first.close()
    # the slot is held by an idle kept-alive connection: it is closed for the newcomer
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() == b"ok"
    t0 = time.monotonic()
    assert get(port, "/healthz")[0].status == 200
    assert time.monotonic() - t0 < 1.0 * SLOW
    assert idle.sock.recv(1) == b""  # the server closed the idle one
    idle.close()


def test_sigterm_exits_zero_with_requests_in_flight(app):
    port = app()
    p = app.last
    waiter = threading.Thread(target=lambda: raw_exchange(
        port, b"GET /delay/20000 HTTP/1.1\r\nHost: a\r\n\r\n", timeout=30))
    waiter.start()
    idle = socket.create_connection(("127.0.0.1", port))  # a kept-alive, idle connection
    time.sleep(0.2)  # let the delay request reach its wait
    t0 = time.monotonic()
    p.p.send_signal(signal.SIGTERM)
    assert p.p.wait(timeout=5 * SLOW) == 0
    assert time.monotonic() - t0 < 2 * SLOW
    waiter.join()
    idle.close()


def test_call_through_keel_sidecars_carries_trace_headers(app, keel):
    # B behind its sidecar's inbound; A's sidecar routes b.mesh:9080 to it; A calls
    # http://b.mesh:9080/headers through its sidecar's outbound listener (HTTP_PROXY).
    b = app("--name", "b")
    kb = keel(upstream=b)
    a_port = free_port()
    ka = keel("--route", "b.mesh:9080=127.0.0.1:%d" % kb.inbound, upstream=a_port)
    app("--name", "a", "--call", "http://b.mesh:9080/headers", port=a_port,
        env=clean_env(HTTP_PROXY="http://127.0.0.1:%d" % ka.outbound))
    trace = {
        "x-request-id": "6f1c5e9a-trace-test",
        "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
        "x-b3-spanid": "a2fb4a1d1a96d312",
        "x-b3-parentspanid": "0020000000000001",
        "x-b3-sampled": "1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "congo=t61rcWkgMzE",
        "end-user": "jason",
    }
    c = http.client.HTTPConnection("127.0.0.1", ka.inbound, timeout=10 * SLOW)
    for _ in range(10):
        c.request("GET", "/productpage", headers=trace)
        r = c.getresponse()
        page = json.loads(r.read())
        assert r.status == 200
        call = page["calls"][0]
        assert (call["url"], call["status"]) == ("http://b.mesh:9080/headers", 200)
        got = call["body"]["headers"]
        assert got["Host"] == "b.mesh:9080"
        for k, v in trace.items():  # tracing: each sidecar is a hop with its own span
            if k not in ("x-b3-spanid", "x-b3-parentspanid"):
                assert got[k] == v, k
        assert re.match(r"^[0-9a-f]{16}$", got["x-b3-spanid"])
        assert got["x-b3-parentspanid"] not in (trace["x-b3-spanid"], got["x-b3-spanid"])
    # A's ten calls rode one kept-alive connection to its sidecar: the sidecar saw the
    # client's connection and that one
    deadline = time.monotonic() + 3  # the last exchange is counted just after its answer
    st = ka.stats()
    while st['keel_downstream_rq_total{response_code_class="2xx"}'] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
        st = ka.stats()
    assert st["keel_downstream_cx_total"] == 2
    assert st['keel_downstream_rq_total{response_code_class="2xx"}'] == 20
    lines = kb.log_lines(10)
    assert sum("6f1c5e9a-trace-test" in l for l in lines) == 10


def test_call_retries_once_when_the_proxy_closed_an_idle_connection(app, keel):
    b = app("--name", "b")
    k = keel("--route", "b.mesh:9080=127.0.0.1:%d" % b, "--idle-timeout", "300", upstream=b)
    a = app("--call", "http://b.mesh:9080/x",
            env=clean_env(HTTP_PROXY="http://127.0.0.1:%d" % k.outbound))
    c = http.client.HTTPConnection("127.0.0.1", a, timeout=10 * SLOW)
    c.request("GET", "/")
    assert json.loads(c.getresponse().read())["calls"][0]["status"] == 200
    # the sidecar closes A's kept-alive connection once idle; wait until it has
    deadline = time.time() + 10 * SLOW
    while k.stats()["keel_downstream_cx_active"] > 0:
        assert time.time() < deadline
        time.sleep(0.05)
    c.request("GET", "/")
    r = c.getresponse()
    assert (r.status, json.loads(r.read())["calls"][0]["status"]) == (200, 200)
    assert k.stats()["keel_downstream_cx_total"] == 2


def test_two_hundred_connections_through_a_chain(app):
    c = app("--name", "ratings")
    b = app("--name", "reviews", "--call", "http://127.0.0.1:%d/ratings/0" % c)
    a = app("--name", "productpage", "--call", "http://127.0.0.1:%d/reviews/0" % b)
    out = subprocess.run(["wrk", "-t2", "-c200", "-d3s", "--timeout", "10s",
                          "http://127.0.0.1:%d/productpage" % a],
                         capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    assert int(m.group(1)) > (200 if WRAPPER else 3000), out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
