"""HTTP/1.1 proxying through a real keel and a real origin server."""
import hashlib
import http.client
import json
import os
import socket
import time

from conftest import free_port, raw_exchange


def conn(port, timeout=5):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def test_keepalive_reused_on_both_sides(keel, backend):
    k = keel(upstream=backend)
    c = conn(k.inbound)
    ids = []
    for _ in range(5):
        c.request("GET", "/conn")
        r = c.getresponse()
        assert r.status == 200
        ids.append(r.read())
    # one downstream connection carried all five; the upstream connection was pooled
    assert len(set(ids)) == 1
    st = k.wait_stats(lambda st: st['keel_downstream_rq_total{response_code_class="2xx"}'] >= 5)
    assert st["keel_downstream_cx_total"] == 1
    assert st["keel_upstream_cx_total"] == 1
    assert st["keel_upstream_cx_reused_total"] == 4
    assert st['keel_downstream_rq_total{response_code_class="2xx"}'] == 5


def test_chunked_request_and_response(keel, backend):
    k = keel(upstream=backend)
    c = conn(k.inbound)
    body = [b"first piece,", b"second,", b"x" * 100000]
    c.request("POST", "/count", body=iter(body), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    got = json.loads(r.read())
    joined = b"".join(body)
    assert got == {"bytes": len(joined), "sha256": hashlib.sha256(joined).hexdigest()}
    c.request("GET", "/chunked")
    r = c.getresponse()
    assert r.getheader("transfer-encoding") == "chunked"
    assert r.read() == b"hello chunked world\n"


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1])


def test_ten_megabytes_stream_with_bounded_memory(keel, backend):
    k = keel(upstream=backend)
    c = conn(k.inbound, timeout=60)
    c.request("GET", "/status/200")
    c.getresponse().read()
    before = peak_rss_kib(k.proc.p.pid)
    n = 10 * 1024 * 1024
    block = os.urandom(1 << 20)

    def gen():
        for _ in range(10):
            yield block
    c.request("POST", "/count", body=gen(), headers={"Content-Length": str(n)})
    got = json.loads(c.getresponse().read())
    assert got == {"bytes": n, "sha256": hashlib.sha256(block * 10).hexdigest()}
    # download through a slow reader so the proxy must apply backpressure
    c.request("GET", "/big?n=%d" % n)
    r = c.getresponse()
    total = 0
    while True:
        piece = r.read(256 * 1024)
        if not piece:
            break
        total += len(piece)
        if total < 2 * 1024 * 1024:
            time.sleep(0.01)
    assert total == n
    # streamed, not buffered: the peak grows by far less than the 10 MiB that went
    # through each way (sanitizers and valgrind add their own shadow memory)
    growth = peak_rss_kib(k.proc.p.pid) - before
    tooled = os.environ.get("KEEL_WRAPPER") or "asan" in os.environ.get("KEEL_BIN", "")
    assert growth < (24 if tooled else 4) * 1024, "peak RSS grew by %d KiB" % growth


def test_status_passthrough_and_bodyless_responses(keel, backend):
    k = keel(upstream=backend)
    c = conn(k.inbound)
    c.request("GET", "/status/418")
    r = c.getresponse()
    assert (r.status, r.read()) == (418, b"status 418\n")
    for code in (204, 304):
        c.request("GET", "/status/%d" % code)
        r = c.getresponse()
        assert r.status == code and r.read() == b""
    c.request("HEAD", "/status/200")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-length") == "11" and r.read() == b""
    # the connection is still usable after all the bodyless answers
    c.request("GET", "/status/201")
    assert c.getresponse().status == 201


def test_request_id_forwarded_headers_and_hop_by_hop(keel, backend):
    k = keel(upstream=backend)
    c = conn(k.inbound)
    c.request("GET", "/headers", headers={"Connection": "keep-alive, X-Private",
                                          "X-Private": "secret", "Keep-Alive": "timeout=5",
                                          "TE": "trailers", "X-Forwarded-For": "10.1.2.3"})
    got = json.loads(c.getresponse().read())
    names = {k.lower(): v for k, v in got["headers"]}
    assert "x-private" not in names and "keep-alive" not in names and "te" not in names
    assert "connection" not in names
    rid = names["x-request-id"]
    assert len(rid) == 36 and rid[14] == "4"
    assert names["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    c.request("GET", "/headers", headers={"X-Request-Id": "my-own-id"})
    got = json.loads(c.getresponse().read())
    names = {k.lower(): v for k, v in got["headers"]}
    assert names["x-request-id"] == "my-own-id"


def test_expect_100_continue(keel, backend):
    k = keel(upstream=backend)
    s = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"hello")
    data = first[25:]
    while b"hello" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200")
    s.close()


def test_expect_is_answered_here_and_not_forwarded(keel, backend):
    """keel answers 100 Continue itself, so the upstream must not be asked again (as Envoy
    strips Expect). It used to be forwarded: its hop-by-hop entry sat under the wrong
    length."""
    k = keel(upstream=backend)
    s = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
    s.sendall(b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"Expect: 100-continue\r\nX-Kept: yes\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"hi")
    data = first[25:]
    while not data.endswith(b"}"):
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    s.close()
    got = json.loads(data.split(b"\r\n\r\n", 1)[1])
    names = [n.lower() for n, _ in got["headers"]]
    assert "x-kept" in names and "expect" not in names, names


def test_connection_close_and_http10(keel, backend):
    k = keel(upstream=backend)
    out = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"connection: close" in out.lower()
    out = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"status 200\n")
    # an HTTP/1.0 client gets a close-delimited body when the origin streams without length
    out = raw_exchange(k.inbound, b"GET /chunked HTTP/1.0\r\n\r\n")
    assert b"transfer-encoding" not in out.lower() and out.endswith(b"hello chunked world\n")
    # ...and a chunked one when it speaks HTTP/1.1
    out = raw_exchange(k.inbound, b"GET /eof HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in out.lower() and b"until the end" in out


def test_pipelined_requests(keel, backend):
    k = keel(upstream=backend)
    out = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"GET /status/201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and out.count(b"HTTP/1.1 201") == 1
    assert out.index(b"HTTP/1.1 200") < out.index(b"HTTP/1.1 201")


def test_websocket_upgrade_is_tunnelled(keel, backend):
    k = keel(upstream=backend)
    s = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"upgrade: websocket" in head.lower()
    rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(b"\x81\x05hello raw frame bytes")
    while len(rest) < 23:
        rest += s.recv(4096)
    assert rest == b"\x81\x05hello raw frame bytes"
    s.close()
    lines = k.log_lines(1)
    assert '"GET /ws HTTP/1.1" 101' in lines[-1]


def test_outbound_absolute_form_and_host_routing(keel, backend):
    k = keel("--route", "details:9080=127.0.0.1:%d" % backend, "--route",
             "reviews=127.0.0.1:%d" % backend, upstream=backend)
    out = raw_exchange(k.outbound, b"GET http://details:9080/headers HTTP/1.1\r\nHost: details:9080\r\n"
                                   b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    got = json.loads(out.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[-1] if False else out.split(b"\r\n\r\n", 1)[1])
    assert got["line"] == "GET /headers HTTP/1.1"
    out = raw_exchange(k.outbound, b"GET /status/202 HTTP/1.1\r\nHost: reviews:80\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 202")
    # another port is not that route: the mesh's outboundTrafficPolicy (ALLOW_ANY by default)
    # passes it through to its host, and "details" resolves neither as an IP nor in /etc/hosts
    out = raw_exchange(k.outbound, b"GET /status/202 HTTP/1.1\r\nHost: details:9999\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503")
    lines = k.log_lines(3)
    assert " 503 DF dns_resolution_failure " in lines[-1] and lines[-1].endswith(" allow_any")
    assert "outbound|9080||details" in lines[0]


def test_tcp_route_proxies_bytes(keel, backend):
    from conftest import free_port
    listen = free_port()
    k = keel("--tcp-route", "127.0.0.1:%d=127.0.0.1:%d" % (listen, backend), upstream=backend)
    req = b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(listen, req)
    assert out.startswith(b"HTTP/1.1 200 X\r\n")  # the origin's own reason phrase: untouched
    line = k.log_lines(1)[-1]
    st = k.stats()
    assert st["keel_tcp_cx_total"] == 1
    assert st["keel_tcp_received_bytes_total"] == len(req)
    assert st["keel_tcp_sent_bytes_total"] == len(out)
    assert line.split('"')[1] == "- - -"
    assert " %d %d " % (len(req), len(out)) in line


def test_upstream_service_time_is_set_once_across_two_hops(keel, backend):
    """Each hop sets x-envoy-upstream-service-time (as Envoy does): through outbound ->
    inbound the client sees one header, the outer hop's, not one per hop."""
    inbound = free_port()
    k = keel("--route", "svc=127.0.0.1:%d" % inbound, upstream=backend, inbound_port=inbound)
    out = raw_exchange(k.outbound, b"GET /status/200 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert head.count(b"x-envoy-upstream-service-time:") == 1, head
