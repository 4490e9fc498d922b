"""Clients that hold resources without using them must not starve the ones that work:
10,000 idle connections (opened, never a byte) while active requests are served."""
import resource
import socket
import time

from conftest import http_get

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
        time.sleep(0.5)  # let the workers accept them all
        rss_kb = int([l for l in open("/proc/%d/status" % k.proc.p.pid) if l.startswith("VmRSS")][0].split()[1])
        # active requests still get through promptly, one after another
        worst = 0.0
        for i in range(200):
            t0 = time.time()
            assert http_get(k.url("/status/200"))[0] == 200
            worst = max(worst, time.time() - t0)
        assert worst < 0.5, worst
        stats = k.stats()
        # the idle ones are open on keel's side: accepted, not refused
        assert stats["keel_downstream_cx_active"] >= IDLE
        print("RSS with %d idle connections: %.1f MiB" % (IDLE, rss_kb / 1024))
        assert rss_kb < 200 * 1024
    finally:
        for s in idle:
            s.close()
