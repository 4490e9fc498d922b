"""Shared fixtures for the end-to-end tests: real processes on 127.0.0.1.

`backend` starts tests/e2e/backend.py on a free port; `keel` starts build/keel (or
$KEEL_BIN) with the given arguments and waits for its admin /ready. Every process is
stopped at the end of its test; its output is kept in the test's tmp dir.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEEL = os.path.join(ROOT, os.environ.get("KEEL_BIN", "build/keel"))


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports for the processes under test come from below the kernel's ephemeral range: a port
# the kernel hands out with bind(0) and takes back can go to any outgoing connection (keel's
# own upstream connects among them) before the process under test binds it, and that
# process then fails with "Address already in use". Below the range only a listener can
# take a port, and each port is handed out once per test run.
_PORT_LOW = 10000
_PORT_HIGH = max(_PORT_LOW + 1000, _ephemeral_low())
_port_next = _PORT_LOW + (os.getpid() * 7919) % (_PORT_HIGH - _PORT_LOW)


def free_port():
    global _port_next
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _port_next
        _port_next = _PORT_LOW + (_port_next + 1 - _PORT_LOW) % (_PORT_HIGH - _PORT_LOW)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d-%d" % (_PORT_LOW, _PORT_HIGH))


def wait_port(port, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on port %d" % port)


def cpu_seconds(pid, user_only=False):
    """CPU time of process pid (all threads) from /proc, in seconds. user_only leaves out
    kernel time, which for loopback traffic swings with timing: the receive work for
    segments that arrive while keel holds a socket's lock is charged to keel."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + (0 if user_only else int(fields[12]))
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    """VmRSS of a process, KiB."""
    with open("/proc/%d/status" % pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def scraped_sum(admin_port, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`, from an admin port's
    /stats/prometheus."""
    _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % admin_port)
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


# KEEL_WRAPPER runs keel under a tool, e.g. "valgrind --error-exitcode=99 --leak-check=full"
WRAPPER = os.environ.get("KEEL_WRAPPER", "").split()


def _sanitized():
    """A sanitizer build (make test-asan) carries shadow memory and quarantine: RSS
    bounds are for the real build; everything else is checked on every build."""
    try:
        with open(KEEL, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized()


class Proc:
    def __init__(self, args, log_path, env=None, must_exit_clean=False):
        self.must_exit_clean = must_exit_clean
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode


@pytest.fixture
def procs():
    started = []
    yield started
    unclean = []
    for p in reversed(started):
        rc = p.stop()
        # keel drains on SIGTERM and exits 0; a sanitizer or valgrind finding makes it not
        if p.must_exit_clean and rc != 0:
            unclean.append("exit %s:\n%s" % (rc, p.output()[-4000:]))
    assert not unclean, "\n".join(unclean)


def start_backend(procs, tmp_path, name="backend"):
    port = free_port()
    p = Proc([sys.executable, os.path.join(HERE, "backend.py"), str(port), name],
             str(tmp_path / ("backend-%d.log" % port)))
    procs.append(p)
    wait_port(port)
    return port


@pytest.fixture
def backend(procs, tmp_path):
    return start_backend(procs, tmp_path)


@pytest.fixture
def backend_factory(procs, tmp_path):
    return lambda name: start_backend(procs, tmp_path, name)


class Keel:
    """A running `keel proxy` with its ports and files."""

    def __init__(self, proc, ports, access_log):
        self.proc = proc
        self.inbound, self.outbound, self.admin = ports
        self.access_log = access_log

    def url(self, path, port=None):
        return "http://127.0.0.1:%d%s" % (port or self.inbound, path)

    def log_lines(self, n=1, timeout=3.0):
        """Wait until the access log has at least n lines; return them all."""
        deadline = time.time() + timeout
        lines = []
        while time.time() < deadline:
            if os.path.exists(self.access_log):
                with open(self.access_log, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
                if len(lines) >= n:
                    return lines
            time.sleep(0.02)
        return lines

    def wait_stats(self, pred, timeout=5.0):
        """The stats once pred(stats) holds (or at the timeout): an exchange is counted
        just after its answer, a connection just after the accept the client already saw."""
        deadline = time.time() + timeout
        st = self.stats()
        while not pred(st) and time.time() < deadline:
            time.sleep(0.02)
            st = self.stats()
        return st

    def stats(self):
        _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % self.admin)
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


@pytest.fixture
def keel(procs, tmp_path):
    def start(*extra, upstream=None, access_log=True, concurrency=1, env=None, inbound_port=None):
        inbound, outbound, admin = inbound_port or free_port(), free_port(), free_port()
        log = str(tmp_path / ("access-%d.log" % inbound))
        args = WRAPPER + [KEEL, "proxy", "--inbound", "127.0.0.1:%d" % inbound,
                "--outbound", "127.0.0.1:%d" % outbound, "--admin", "127.0.0.1:%d" % admin,
                "--concurrency", str(concurrency)]
        if upstream is not None:
            args += ["--upstream", "127.0.0.1:%d" % upstream]
        if access_log:
            args += ["--access-log", log]
        args += list(extra)
        p = Proc(args, str(tmp_path / ("keel-%d.out" % inbound)), env=env, must_exit_clean=True)
        procs.append(p)
        deadline = time.time() + (60 if WRAPPER else 10)
        while True:
            if p.p.poll() is not None:
                raise RuntimeError("keel exited %d:\n%s" % (p.p.returncode, p.output()))
            try:
                if http_get("http://127.0.0.1:%d/ready" % admin, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("keel not ready:\n" + p.output())
            time.sleep(0.02)
        return Keel(p, (inbound, outbound, admin), log)

    return start


def raw_exchange(port, data, timeout=3.0, shut=False):
    """Send raw bytes, read until the server closes (or timeout); return the bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out
