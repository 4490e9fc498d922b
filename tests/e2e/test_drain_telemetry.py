"""A drain (SIGTERM, as in a rolling restart) sends the telemetry that waits for its batch:
Zipkin spans wait up to a second to fill a POST and Mixer reports 50 ms to fill a Report.
Without the flush, a proxy that drains at once took them down with it."""
import os
import re
import signal
import time

from conftest import raw_exchange
from test_mixer import MESH_DOUBLE, mixer_mesh, mixers, seed_dir, wait_for  # noqa: F401
from test_tracing import config_dir, zipkin  # noqa: F401


def drain(k, timeout=10):
    """SIGTERM, then the seconds until keel exited (0 is a clean drain)."""
    t0 = time.monotonic()
    k.proc.p.send_signal(signal.SIGTERM)
    rc = k.proc.p.wait(timeout)
    assert rc == 0, k.proc.output()[-3000:]
    return time.monotonic() - t0


def get(k, path):
    out = raw_exchange(k.inbound, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
    assert out.startswith(b"HTTP/1.1 200"), out


def test_a_drain_posts_the_spans_waiting_for_their_batch(keel, backend, zipkin, tmp_path):
    k = keel("--config-dir", config_dir(tmp_path, [], sampling=100),
             "--zipkin", "127.0.0.1:%d" % zipkin.port, upstream=backend, access_log=False)
    n = 5  # fewer than a batch: they would go out after a second
    for i in range(n):
        get(k, b"/status/200?drain=%d" % i)
    assert zipkin.posts == 0  # still waiting for the batch to fill
    assert drain(k) < 3  # not held up to the drain deadline (5 s)
    spans = zipkin.wait(n, timeout=1)
    assert sorted(s["tags"]["http.url"].rsplit("=", 1)[1] for s in spans) == [str(i) for i in range(n)]


def test_a_drain_does_not_wait_for_a_dead_collector(keel, backend, tmp_path):
    from conftest import free_port
    dead = free_port()  # nothing listens there
    k = keel("--config-dir", config_dir(tmp_path, [], sampling=100),
             "--zipkin", "127.0.0.1:%d" % dead, upstream=backend, access_log=False)
    for i in range(3):
        get(k, b"/status/200?dead=%d" % i)
    assert drain(k) < 3


def test_a_drain_reports_the_open_mixer_batch(mixers, keel, procs, tmp_path):  # noqa: F811
    mx = mixers(seed_dir(tmp_path, "001-doublerequestcount.yaml"))
    m = mixer_mesh(keel, procs, tmp_path, mx.grpc)
    client, server = m.proxies["productpage-v1"], m.proxies["details-v1"]
    n = 3
    for i in range(n):
        out = raw_exchange(client.outbound, b"GET /d%d HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % i)
        assert out.startswith(b"HTTP/1.1 200"), out
    # both drain within the 50 ms their open batches wait
    client.proc.p.send_signal(signal.SIGTERM)
    server.proc.p.send_signal(signal.SIGTERM)
    for k in (client, server):
        assert k.proc.p.wait(10) == 0, k.proc.output()[-3000:]
    for reporter in ("client", "server"):
        wait_for(lambda: mx.value(MESH_DOUBLE % reporter) == 2 * n, 5,
                 lambda: "%s reports counted: %s" % (reporter, mx.value(MESH_DOUBLE % reporter)))
