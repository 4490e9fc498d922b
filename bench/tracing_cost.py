#!/usr/bin/env python3
"""CPU per request of one keel inbound (--concurrency 1) in front of nginx, with tracing
off, at 1 % and at 100 % sampling (spans POSTed to a local Zipkin receiver that answers
202). wrk -t1 -c50 for DURATION seconds per run; CPU = utime + stime of the keel process
(/proc/PID/stat) over the run, divided by the requests wrk completed.

    bench/tracing_cost.py [ROUNDS]        (make first; needs nginx and wrk)
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEL = os.path.join(ROOT, os.environ.get("KEEL_BIN", "build/keel"))
DURATION = os.environ.get("DURATION", "5")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d never opened" % port)


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    spans = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.spans += body.count(b'"traceId"')
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def run(mode, tmp, nginx_port, zipkin_port):
    d = os.path.join(tmp, "keel-%s.d" % mode)
    os.makedirs(d, exist_ok=True)
    sampling = {"off": 0, "1": 1, "100": 100}[mode]
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                "data:\n  mesh: |-\n    enableTracing: %s\n    defaultConfig:\n      tracing:\n"
                "        sampling: %d\n" % ("false" if mode == "off" else "true", sampling))
    port, admin = free_port(), free_port()
    p = subprocess.Popen([KEEL, "proxy", "--concurrency", "1", "--outbound", "off",
                          "--inbound", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % nginx_port,
                          "--admin", "127.0.0.1:%d" % admin, "--config-dir", d,
                          "--zipkin", "127.0.0.1:%d" % zipkin_port],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        before = cpu_ticks(p.pid)
        out = subprocess.run(["wrk", "-t1", "-c50", "-d%ss" % DURATION, "http://127.0.0.1:%d/" % port],
                             capture_output=True, text=True).stdout
        ticks = cpu_ticks(p.pid) - before
        n = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return rps, ticks / TICK / n * 1e6
    finally:
        p.terminate()
        p.wait()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    tmp = tempfile.mkdtemp(prefix="keel-trace-bench-")
    nginx_port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("daemon off; worker_processes 1; error_log /dev/null; pid %s/nginx.pid;\n"
                "events {}\nhttp { access_log off; server { listen 127.0.0.1:%d;\n"
                "location / { return 200 'hello\\n'; } } }\n" % (tmp, nginx_port))
    nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        wait_port(nginx_port)
        results = {m: [] for m in ("off", "1", "100")}
        for _ in range(rounds):
            for m in results:
                results[m].append(run(m, tmp, nginx_port, srv.server_address[1]))
        print("mode   req/s (runs)                 CPU us/req (runs)")
        for m, rs in results.items():
            print("%-5s  %-28s %s" % (m, " ".join("%.0f" % r for r, _ in rs),
                                       " ".join("%.2f" % c for _, c in rs)))
        print("spans received: %d" % Receiver.spans)
    finally:
        nginx.terminate()
        srv.shutdown()


if __name__ == "__main__":
    main()
