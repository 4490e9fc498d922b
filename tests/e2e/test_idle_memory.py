"""An idle keep-alive connection holds no buffer and no per-exchange state: after its
request it costs keel its session (~2.2 KiB) and nothing more, so 10,000 idle clients do
not pin 10,000 16 KiB buffers."""
import os
import sys

from conftest import ROOT, SANITIZED, rss_kib

sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_load  # noqa: E402  (the bench's idle-connection client)

CONNS = 3000
PATH = "/status/200"


def test_idle_keepalive_connections_hold_only_their_session(keel, backend):
    assert bench_load.raise_nofile() >= CONNS + 500  # keel inherits the limit
    k = keel(upstream=backend, access_log=False)
    pid = k.proc.p.pid
    # pools, tables and the upstream connection exist before the measurement
    bench_load.close_all(bench_load.open_idle(k.inbound, 100, path=PATH))
    before = rss_kib(pid)
    socks = bench_load.open_idle(k.inbound, CONNS, path=PATH)
    try:
        per_conn = (rss_kib(pid) - before) * 1024 / CONNS
        # the session is ~2.2 KiB; a pinned read buffer made it ~8.4 KiB, two peer
        # identities kept in every session (not in the exchange's tables) ~4.6 KiB
        if not SANITIZED:
            assert per_conn < 3.5 * 1024, per_conn
        # and the idle connections still work: the buffer comes back on the next read
        for s in socks[::300]:
            assert bench_load.request(s, path=PATH)
    finally:
        bench_load.close_all(socks)
