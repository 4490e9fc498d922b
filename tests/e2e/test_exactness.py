"""Exactness at volume: KEEL_EXACT_REQUESTS (1,000,000 in `make test`) requests through
two keel hops (outbound sidecar -> inbound sidecar -> nginx), each hop with two workers,
the standard metrics and an access log. Every request is counted exactly once per
reporter and logged exactly once per hop; nothing is dropped."""
import os
import re
import subprocess
import time

from conftest import Proc, free_port, wait_port
from test_telemetry_mesh import Mesh


def nginx_backend(procs, tmp_path):
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text("""
daemon off; master_process off; worker_processes 1; user root; pid %(d)s/nginx.pid;
error_log %(d)s/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s;
  uwsgi_temp_path %(d)s; scgi_temp_path %(d)s; large_client_header_buffers 8 64k;
  server { listen 127.0.0.1:%(port)d; keepalive_requests 100000000; location / { return 200 "ok\\n"; } }
}
""" % {"d": tmp_path, "port": port})
    procs.append(Proc(["nginx", "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
                      str(tmp_path / "nginx.out")))
    wait_port(port)
    return port


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def test_million_requests_two_hops_exact(keel, procs, tmp_path):
    n = int(os.environ.get("KEEL_EXACT_REQUESTS", "1000000"))
    backend = nginx_backend(procs, tmp_path)
    m = Mesh(keel, lambda name: backend, tmp_path, {"client-v1": ("client", "v1"), "server-v1": ("server", "v1")})
    for w in m.workloads:
        m.proxies[w] = keel("--config-dir", str(m.dir), "--workload", "%s.default" % w, "--concurrency", "2",
                            "--route", "127.0.0.1=127.0.0.1:%d" % m.ports["server-v1"],
                            upstream=backend, inbound_port=m.ports[w])
    client, server = m.proxies["client-v1"], m.proxies["server-v1"]
    t0 = time.time()
    p = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "32", "-t", "1",
                        "http://127.0.0.1:%d/exact" % client.outbound],
                       capture_output=True, text=True, timeout=900)
    elapsed = time.time() - t0
    assert re.search(r"requests: %d total, %d started, %d done, %d succeeded" % (n, n, n, n), p.stdout), p.stdout
    print("%d requests through two hops in %.1f s (%.0f req/s)" % (n, elapsed, n / elapsed))
    assert m.metric("client-v1", "istio_requests_total", reporter="source") == n
    assert m.metric("server-v1", "istio_requests_total", reporter="destination") == n
    assert m.metric("client-v1", "istio_requests_total", reporter="source", response_code="200") == n
    # every request logged once per hop: the outbound line on the client, the inbound on the server
    for k in (client, server):
        dropped = k.stats().get('keel_access_log_lines_total{result="dropped"}', 0)
        assert dropped == 0
        deadline = time.time() + 90  # the writer may trail on a loaded machine: wait for it
        while count_lines(k.access_log) < n and time.time() < deadline:
            time.sleep(0.2)
        assert count_lines(k.access_log) == n
