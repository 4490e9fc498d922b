"""Clients that hold resources without using them must not starve the ones that work:
10,000 idle connections (opened, never a byte) while active requests are served."""
import resource
import socket
import time

from conftest import http_get, rss_kib

IDLE = 10000


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * IDLE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_ten_thousand_idle_connections_do_not_starve_active_ones(keel, backend):
    assert raise_nofile() >= IDLE + 500  # keel inherits the limit from this process
    k = keel(upstream=backend, concurrency=2)
    idle = []
    try:
        for _ in range(IDLE):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", k.inbound))
            idle.append(s)
        # all of them accepted and open on keel's side (not refused) before the active ones
        stats = k.wait_stats(lambda st: st["keel_downstream_cx_active"] >= IDLE, timeout=20)
        assert stats["keel_downstream_cx_active"] >= IDLE
        rss_kb = rss_kib(k.proc.p.pid)
        # active requests still get through promptly, one after another
        worst = 0.0
        for i in range(200):
            t0 = time.time()
            assert http_get(k.url("/status/200"))[0] == 200
            worst = max(worst, time.time() - t0)
        assert worst < 0.5, worst
        assert k.stats()["keel_downstream_cx_active"] >= IDLE  # and still open
        print("RSS with %d idle connections: %.1f MiB" % (IDLE, rss_kb / 1024))
        assert rss_kb < 200 * 1024
    finally:
        for s in idle:
            s.close()


def test_backend_restarting_under_load(keel, procs, tmp_path):
    """wrk drives keel while its backend is killed and restarted five times: keel never
    fails, answers only 200 or Envoy's 503 (UF refused / UC closed), logs every request,
    and serves normally again once the backend is back."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from conftest import HERE, Proc, free_port, wait_port

    port = free_port()

    def start():
        p = Proc([sys.executable, os.path.join(HERE, "backend.py"), str(port), "b"],
                 str(tmp_path / "backend.log"))
        wait_port(port)
        return p

    b = start()
    k = keel(upstream=port, concurrency=2)
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d6s", k.url("/status/200")],
                           stdout=subprocess.PIPE, text=True)
    for _ in range(5):
        time.sleep(0.5)
        b.p.send_signal(signal.SIGKILL)
        b.p.wait()
        b.log.close()
        time.sleep(0.3)
        b = start()
    procs.append(b)
    out, _ = wrk.communicate(timeout=30)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    assert total > 100, out
    assert k.proc.p.poll() is None  # keel is up
    assert http_get(k.url("/status/200"))[0] == 200
    lines = k.log_lines(total + 1, timeout=5)
    # the log never blocks traffic: at ~30k fast 503s a second the writer may fall behind
    # and drop lines, but each one is counted
    dropped = k.stats().get('keel_access_log_lines_total{result="dropped"}', 0)
    assert len(lines) + dropped >= total, (len(lines), dropped, total)
    codes = {}
    for l in lines:
        m = re.search(r'" (\d+) (\S+) ', l)
        assert m, l
        key = (m.group(1), m.group(2)) if m.group(2) != "DC" else ("-", "DC")  # wrk's cut at its end
        codes[key] = codes.get(key, 0) + 1
    assert set(codes) <= {("200", "-"), ("503", "UF"), ("503", "UC"), ("-", "DC")}, codes
    assert codes.get(("503", "UF"), 0) + codes.get(("503", "UC"), 0) > 0, codes
