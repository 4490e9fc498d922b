"""Failures and limits: Envoy's status codes and response flags, smuggling refused."""
import socket
import time

import pytest

from conftest import free_port, raw_exchange


def status_of(out):
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else None


def test_418_passthrough_logged_like_istio(keel, backend):
    k = keel(upstream=backend)
    out = raw_exchange(k.inbound, b"GET /status/418 HTTP/1.1\r\nHost: httpbin:8000\r\n"
                                  b"User-Agent: curl/8.5.0\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 418
    line = k.log_lines(1)[-1]
    assert '"GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 11 ' in line
    assert '"curl/8.5.0"' in line and '"httpbin:8000"' in line
    assert '"127.0.0.1:%d" inbound|%d|| ' % (backend, backend) in line
    assert line.endswith(" - default")


def test_upstream_down_is_503_uf(keel):
    dead = free_port()
    k = keel(upstream=dead)
    out = raw_exchange(k.inbound, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 503
    assert out.endswith(b"upstream connect error or disconnect/reset before headers. "
                        b"reset reason: connection failure")
    line = k.log_lines(1)[-1]
    assert '" 503 UF upstream_reset_before_response_started{connection_failure} ' in line
    assert k.stats()["keel_upstream_cx_connect_fail_total"] == 1


def test_slow_upstream_is_504_ut(keel, backend):
    k = keel("--upstream-timeout", "300", upstream=backend)
    t0 = time.time()
    out = raw_exchange(k.inbound, b"GET /slow?ms=2000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 504 and out.endswith(b"upstream request timeout")
    assert time.time() - t0 < 1.5
    line = k.log_lines(1)[-1]
    assert '" 504 UT upstream_response_timeout ' in line


def test_downstream_disconnect_is_dc(keel, backend):
    k = keel(upstream=backend)
    s = socket.create_connection(("127.0.0.1", k.inbound))
    s.sendall(b"GET /slow?ms=600 HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(0.1)
    s.close()
    line = k.log_lines(1)[-1]
    assert '"GET /slow?ms=600 HTTP/1.1" 0 DC downstream_remote_disconnect ' in line


SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
]


@pytest.mark.parametrize("req", SMUGGLING)
def test_smuggling_attempts_get_400_and_close(keel, backend, req):
    k = keel(upstream=backend)
    # a second request follows in the same bytes: it must never be answered
    out = raw_exchange(k.inbound, req + b"GET /status/202 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status_of(out) == 400, out
    assert b"connection: close" in out.lower()
    assert b"202" not in out
    assert k.stats()["keel_downstream_rq_malformed_total"] == 1
    assert " 400 DPE " in k.log_lines(1)[-1]


def test_header_limits(keel, backend):
    k = keel("--max-request-headers-kb", "4", "--max-headers", "20", "--max-uri-bytes", "200",
             upstream=backend)
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert status_of(raw_exchange(k.inbound, big)) == 431
    many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(30)) + b"\r\n"
    assert status_of(raw_exchange(k.inbound, many)) == 431
    long_url = b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert status_of(raw_exchange(k.inbound, long_url)) == 414
    assert status_of(raw_exchange(k.inbound, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")) == 505
    # at the limits, requests pass
    ok = b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + \
        b"".join(b"X-%d: v\r\n" % i for i in range(18)) + b"\r\n"
    assert status_of(raw_exchange(k.inbound, ok)) == 200


def test_request_header_timeout_is_408(keel, backend):
    k = keel("--request-headers-timeout", "300", upstream=backend)
    t0 = time.time()
    out = raw_exchange(k.inbound, b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert status_of(out) == 408 and time.time() - t0 < 2


def test_stale_pooled_connection_is_retried(keel, backend):
    k = keel(upstream=backend)
    # /close makes the origin close after answering: the pool must not hand that
    # connection to the next request (or must retry it transparently)
    for _ in range(3):
        out = raw_exchange(k.inbound, b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status_of(out) == 200
        out = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status_of(out) == 200


def test_upstream_timeout_starts_after_the_request_body(keel, backend):
    # a slow upload longer than --upstream-timeout is fine: the timer starts once the
    # whole request is upstream, as Envoy's route timeout does
    k = keel("--upstream-timeout", "400", upstream=backend)
    s = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nConnection: close\r\n\r\n")
    for piece in (b"abc", b"def", b"ghi"):
        time.sleep(0.3)
        s.sendall(piece)
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    assert status_of(out) == 200 and out.endswith(b"abcdefghi")


def test_upstream_connect_timeout_is_503_uf(keel):
    # a listener that never accepts, its queue filled: further SYNs go unanswered
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.1)
    k = keel("--connect-timeout", "300", upstream=port)
    t0 = time.time()
    out = raw_exchange(k.inbound, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 503
    assert 0.25 < time.time() - t0 < 2
    assert '" 503 UF upstream_reset_before_response_started{connection_failure} ' in k.log_lines(1)[-1]
    for c in fillers:
        c.close()
    ls.close()


def test_upstream_closing_before_response_is_503_uc(keel, backend):
    k = keel(upstream=backend)
    out = raw_exchange(k.inbound, b"GET /drop HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 503
    assert out.endswith(b"reset reason: connection termination")
    line = k.log_lines(1)[-1]
    assert '"GET /drop HTTP/1.1" 503 UC upstream_reset_before_response_started{connection_termination} ' in line


def test_garbage_never_hurts_the_proxy(keel, backend):
    import random
    rng = random.Random(1234)
    k = keel(upstream=backend, concurrency=2)
    seeds = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
             b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"]
    for i in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):  # flip, insert or cut bytes
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                data[pos:pos] = bytes([rng.randrange(256)])
            else:
                del data[pos:pos + rng.randint(1, 4)]
        try:
            raw_exchange(k.inbound, bytes(data), timeout=0.3)
        except OSError:
            pass
    assert k.proc.p.poll() is None
    out = raw_exchange(k.inbound, b"GET /status/200 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 200


def test_early_answer_then_reset_reaches_the_client(keel):
    """The origin answers 413 as soon as it has the head of a 4 MB upload and closes
    without reading the body, so its kernel resets the connection. The reset could reach
    keel's write of the body before keel read the answer: the client then got 503 UC for a
    413 the origin had sent (a quarter to a half of tries here). The answer must win."""
    import threading

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    answer = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n"
              b"\r\ntoo big\n")

    def origin():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            with c:
                got = b""
                while b"\r\n\r\n" not in got:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    got += piece
                c.sendall(answer)
                # closed with the body unread: the kernel answers with a reset

    threading.Thread(target=origin, daemon=True).start()
    k = keel(upstream=ls.getsockname()[1])
    body = b"x" * (4 << 20)
    statuses = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))

        def upload(sock=s):
            try:
                sock.sendall(body)
            except OSError:
                pass

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        out = b""
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                out += piece
        except OSError:
            pass
        t.join(10)  # before the close: a send still running could land in the next socket
        s.close()
        statuses.append(status_of(out))
    ls.close()
    assert statuses == [413] * 20, (statuses, [l for l in k.log_lines(20) if " 413 " not in l])
