"""Hostile I/O: peers that close together with their last bytes, reset mid-response or
stall; file-descriptor exhaustion; a connection limit; a stderr nobody reads.

The backends here are raw sockets in threads of the test process, so that the exact
order of bytes, FIN and RST is under the test's control."""
import http.client
import os
import resource
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import KEEL, cpu_seconds, free_port, http_get, raw_exchange


class RawBackend:
    """Accepts connections and hands each to handler(conn) on its own thread."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.results = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            r = self.handler(c)
            if r is not None:
                with self.lock:
                    self.results.append(r)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def read_request_head(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


BODY = b"".join(b"line %04d of a body delimited by the close\n" % i for i in range(100))


def close_delimited(mode):
    """An HTTP/1.0-style response without a length; the body, and then the FIN, go out
    in one burst."""

    def handler(c):
        if read_request_head(c) is None:
            return
        if mode == "linger":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BODY)
        if mode == "shutdown":
            c.shutdown(socket.SHUT_WR)
    return handler


def start_keel(procs_list, tmp_path, *extra, upstream=None, stderr=None, preexec_fn=None,
               concurrency=1):
    """keel with its own stderr (a file or a pipe) and process limits."""
    inbound, outbound, admin = free_port(), free_port(), free_port()
    log = str(tmp_path / ("access-%d.log" % inbound))
    args = [KEEL, "proxy", "--inbound", "127.0.0.1:%d" % inbound,
            "--outbound", "127.0.0.1:%d" % outbound, "--admin", "127.0.0.1:%d" % admin,
            "--concurrency", str(concurrency), "--access-log", log]
    if upstream is not None:
        args += ["--upstream", "127.0.0.1:%d" % upstream]
    args += list(extra)
    err = stderr if stderr is not None else open(str(tmp_path / ("keel-%d.err" % inbound)), "wb")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=preexec_fn)
    procs_list.append(p)
    deadline = time.time() + 10
    while True:
        assert p.poll() is None, "keel exited %d" % p.returncode
        try:
            if http_get("http://127.0.0.1:%d/ready" % admin, timeout=1)[0] == 200:
                break
        except OSError:
            pass
        assert time.time() < deadline, "keel not ready"
        time.sleep(0.02)
    return p, inbound, admin, log


def stats_of(admin):
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % admin)
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def log_lines(path, n, timeout=3.0):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.02)
    return lines


# ---------------------------------------------------------------- lost upstream close

def test_close_delimited_response_ends_promptly(keel):
    """The backend's last bytes and its FIN arrive together: every response still ends
    at once, complete, with its access-log line."""
    n = 0
    for mode in ("close", "shutdown", "linger"):
        be = RawBackend(close_delimited(mode))
        k = keel(upstream=be.port)
        for i in range(10):
            c = http.client.HTTPConnection("127.0.0.1", k.inbound, timeout=2)
            t0 = time.time()
            c.request("GET", "/r%d" % i, headers={"Host": "a"})
            r = c.getresponse()
            assert r.status == 200
            assert r.read() == BODY, (mode, i)  # the whole body, then its end, in time
            assert time.time() - t0 < 2
            c.close()
            n += 1
        lines = k.log_lines(10)
        assert len(lines) == 10
        for line in lines:
            assert '" 200 - via_upstream ' in line and " 0 %d " % len(BODY) in line, line
        be.close()


def test_truncated_body_aborts_client_with_uc(keel):
    """Content-Length promises 100000 bytes, 5000 come, then the FIN: the client's
    connection is closed (not left hanging) and the log says UC, at once."""
    def handler(c):
        read_request_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 5000)

    be = RawBackend(handler)
    k = keel(upstream=be.port)
    for i in range(10):
        t0 = time.time()
        out = raw_exchange(k.inbound, b"GET /t HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert time.time() - t0 < 1.5, "client connection not closed"
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"y" * 5000)
        assert len(k.log_lines(i + 1)) == i + 1
    for line in k.log_lines(10):
        assert '" 200 UC upstream_reset_after_response_started{connection_termination} ' in line


def test_upstream_reset_mid_response_aborts_client(keel):
    def handler(c):
        read_request_head(c)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 3000)
        time.sleep(0.05)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST

    be = RawBackend(handler)
    k = keel(upstream=be.port)
    for i in range(5):
        t0 = time.time()
        out = raw_exchange(k.inbound, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert time.time() - t0 < 1.5
        assert out.startswith(b"HTTP/1.1 200")
        assert len(out) < 100000
    for line in k.log_lines(5):
        assert ('" 200 UC ' in line) or ('" 200 UR ' in line), line


def test_tcp_route_client_data_and_fin_together(keel):
    """`printf x | nc -N`: the client's byte and FIN arrive together; the backend must see
    both, and the connection must end on both sides and be logged and counted."""
    def handler(c):
        got = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
        c.sendall(b"ok:" + got)
        return got

    be = RawBackend(handler)
    listen = free_port()
    k = keel("--tcp-route", "127.0.0.1:%d=127.0.0.1:%d" % (listen, be.port), upstream=be.port)
    for i in range(30):
        t0 = time.time()
        s = socket.create_connection(("127.0.0.1", listen), timeout=2)
        s.sendall(b"x%d" % i)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)  # a hang here is the bug: socket.timeout fails the test
            if not chunk:
                break
            out += chunk
        s.close()
        assert out == b"ok:x%d" % i
        assert time.time() - t0 < 2
    lines = k.log_lines(30)
    assert len(lines) == 30
    deadline = time.time() + 3
    while time.time() < deadline:
        st = k.stats()
        closed = sum(v for n, v in st.items() if n.startswith("istio_tcp_connections_closed_total"))
        if closed == 30 and st["keel_downstream_cx_active"] == 0:
            break
        time.sleep(0.05)
    assert closed == 30
    assert st["keel_downstream_cx_active"] == 0
    assert sorted(be.results) == sorted(b"x%d" % i for i in range(30))


def read_to_eof(s):
    out = b""
    while True:
        chunk = s.recv(65536)  # a hang here is the bug: socket.timeout fails the test
        if not chunk:
            return out
        out += chunk


WS_REQ = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


def test_websocket_fin_with_data_both_ways(keel, backend):
    """After a 101, bytes and FIN arriving together are passed on, FIN included, in
    either direction."""
    def upstream_closes(c):
        read_request_head(c)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\nbye from upstream")

    be = RawBackend(upstream_closes)
    k = keel(upstream=be.port)
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", k.inbound), timeout=2)
        s.sendall(WS_REQ)
        out = read_to_eof(s)
        s.close()
        assert out.startswith(b"HTTP/1.1 101") and out.endswith(b"bye from upstream")
    k2 = keel(upstream=backend)  # backend.py echoes until our FIN, then closes
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", k2.inbound), timeout=2)
        s.sendall(WS_REQ)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        s.sendall(b"ping %d" % i)
        s.shutdown(socket.SHUT_WR)
        out = head + read_to_eof(s)
        s.close()
        assert out.endswith(b"ping %d" % i)
    assert len(k2.log_lines(10)) == 10


def test_eof_pending_behind_backpressure(keel):
    """A big close-delimited body and its FIN arrive while the client does not read:
    keel stops reading the upstream (its buffer toward the client is full) and must still
    see the FIN when it resumes."""
    big = b"0123456789abcdef" * 65536  # 1 MiB

    def handler(c):
        read_request_head(c)
        c.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + big)

    be = RawBackend(handler)
    k = keel(upstream=be.port)
    for i in range(5):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(2)
        s.connect(("127.0.0.1", k.inbound))
        s.sendall(b"GET /big HTTP/1.0\r\nHost: a\r\n\r\n")
        time.sleep(0.3)  # the backend has sent everything and closed; we read nothing yet
        out = read_to_eof(s)
        s.close()
        assert out.endswith(big), len(out)
    lines = k.log_lines(5)
    assert len(lines) == 5
    for line in lines:
        assert '" 200 - via_upstream ' in line and " 0 %d " % len(big) in line, line


def test_client_half_close_is_ended_like_envoy(keel, backend):
    """A client that shuts its write side after a complete request: Envoy takes the FIN
    for a disconnect (DC). Whatever the order of bytes and FIN, the exchange must end at
    once, logged, never wait for a timeout."""
    k = keel(upstream=backend)
    for i in range(10):
        t0 = time.time()
        raw_exchange(k.inbound, b"GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2,
                     shut=True)
        assert time.time() - t0 < 1.5
    for line in k.log_lines(10):
        assert '" 0 DC downstream_remote_disconnect ' in line, line


def test_stream_idle_timeout_on_stalled_body(keel, backend):
    """Half a body, then nothing: --stream-idle-timeout answers 408 with flag SI."""
    k = keel("--stream-idle-timeout", "300", upstream=backend)
    t0 = time.time()
    out = raw_exchange(k.inbound, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
                                  b"hello", timeout=3)
    assert time.time() - t0 < 1.5
    assert out.startswith(b"HTTP/1.1 408"), out
    assert b"connection: close" in out.lower()
    line = k.log_lines(1)[-1]
    assert '" 408 SI stream_idle_timeout ' in line, line


# ---------------------------------------------------------------- descriptors, limits

@pytest.fixture
def own_procs():
    started = []
    yield started
    unclean = []
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.returncode != 0:  # keel drains and exits 0; a sanitizer finding makes it not
            unclean.append(p.returncode)
    assert not unclean


def request_ok(port, timeout=1.0):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/status/200", headers={"Host": "a"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status == 200
    except OSError:
        return False


def test_fd_exhaustion_backs_off(own_procs, tmp_path, backend):
    """64 descriptors, 100 clients: accepting pauses instead of spinning, the warning is
    rate-limited, the pauses are counted, and service resumes once clients leave."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    errpath = tmp_path / "keel.err"
    p, inbound, admin, _ = start_keel(own_procs, tmp_path, upstream=backend,
                                      stderr=open(str(errpath), "wb"), preexec_fn=limit)
    clients = []
    for _ in range(100):
        s = socket.socket()
        s.settimeout(2)
        s.connect(("127.0.0.1", inbound))  # completes in the kernel's backlog
        clients.append(s)
    deadline = time.time() + 3  # the worker accepts what it can, then hits EMFILE
    while b"Too many open files" not in errpath.read_bytes() and time.time() < deadline:
        time.sleep(0.02)
    cpu0, err0 = cpu_seconds(p.pid), errpath.stat().st_size
    time.sleep(2)
    cpu = cpu_seconds(p.pid) - cpu0
    grown = errpath.stat().st_size - err0
    assert grown < 10 * 1024, "stderr grew by %d bytes in 2 s" % grown
    assert cpu < 0.3, "keel spun: %.2f s CPU in 2 s" % cpu
    assert b"Too many open files" in errpath.read_bytes()
    for s in clients:
        s.close()
    deadline = time.time() + 5
    while not request_ok(inbound) and time.time() < deadline:
        time.sleep(0.05)
    assert request_ok(inbound)
    st = stats_of(admin)
    assert st["keel_downstream_cx_fd_exhausted_total"] >= 1


def test_max_connections_closes_the_excess(keel, backend):
    k = keel("--max-connections", "5", upstream=backend)
    held = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", k.inbound), timeout=2)
        held.append(s)
    deadline = time.time() + 3
    while k.stats()["keel_downstream_cx_active"] < 5 and time.time() < deadline:
        time.sleep(0.02)
    sixth = socket.create_connection(("127.0.0.1", k.inbound), timeout=2)
    sixth.sendall(b"GET /status/200 HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        assert sixth.recv(65536) == b""  # closed without an answer
    except ConnectionResetError:
        pass
    sixth.close()
    st = k.stats()
    assert st["keel_downstream_cx_overflow_total"] == 1
    assert st["keel_downstream_cx_active"] == 5
    held.pop().close()
    deadline = time.time() + 3
    while k.stats()["keel_downstream_cx_active"] > 4 and time.time() < deadline:
        time.sleep(0.02)
    assert request_ok(k.inbound)  # a slot is free again
    for s in held:
        s.close()


# ---------------------------------------------------------------- a stderr nobody reads

def fill_pipe(pid):
    """Fill keel's stderr pipe from our side, through /proc: nobody will ever read it."""
    fd = os.open("/proc/%d/fd/2" % pid, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(fd, b"#" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def test_stalled_stderr_never_stalls_requests(own_procs, tmp_path):
    """stderr is a full pipe; every request logs a line (debug) or a rate-limited one
    (info): requests are still answered at once, and the lost lines are counted."""
    dead = free_port()
    p, inbound, admin, _ = start_keel(own_procs, tmp_path, "--log-level", "debug",
                                      upstream=dead, stderr=subprocess.PIPE)
    fill_pipe(p.pid)
    c = http.client.HTTPConnection("127.0.0.1", inbound, timeout=2)
    t0 = time.time()
    for i in range(2000):
        c.request("GET", "/x%d" % i, headers={"Host": "a"})
        r = c.getresponse()
        r.read()
        assert r.status == 503
    c.close()
    for i in range(50):  # malformed: one rate-limited info line each
        assert raw_exchange(inbound, b"GET / HTTP/1.1\r\n\r\n", timeout=2).startswith(
            b"HTTP/1.1 400")
    took = time.time() - t0
    assert took < 10, took
    st = stats_of(admin)
    assert st['keel_log_lines_total{result="dropped"}'] > 0
    assert st['keel_log_lines_total{result="suppressed"}'] > 0
    p.terminate()
    assert p.wait(10) == 0  # the stuck writer is given up on at exit
