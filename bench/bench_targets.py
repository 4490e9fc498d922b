"""The servers proxy-bench measures: the nginx backend, nginx and HAProxy as reverse
proxies, and keel in six setups. Each target's start() writes its config into the run's
temp dir, starts the server(s) pinned to a CPU, waits until a request through it answers
the backend's body, and returns a Running record (processes, URL, Host header, logs)."""
import os
import shutil

import bench_procs as procs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = "hello\n"


class Running:
    def __init__(self, name, proc_list, port, logs, host=None, metrics=(), stdout_log=None):
        self.name = name
        self.procs = proc_list          # the processes whose CPU and memory are measured
        self.port = port
        self.host = host                # Host header to send (None: 127.0.0.1:port)
        self.logs = logs                # access-log files, one line per request each
        self.metrics = list(metrics)    # (url, text that must appear) checked after the run
        self.stdout_log = stdout_log    # keel (c): the stdio handler's JSON lines
        self.aux = []                   # helpers not measured as the proxy (keel (m)'s mixer)
        self.counter = None             # (url, series): a count per request, e.g. spans sent

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in reversed(self.procs):
            procs.stop(p)
        for p in self.aux:
            procs.stop(p)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def _start_ready(name, tmp, argv_list, cpu, port, logs, host=None, metrics=(),
                 stdout_to=None, stdout_log=None):
    """Start each argv (last one is the front) and wait until the front answers. cpu: one
    CPU for all, or a list with one per argv."""
    started = []
    for i, argv in enumerate(argv_list):
        tag = f"{name}.{i}"
        out = stdout_to[i] if stdout_to and stdout_to[i] else os.path.join(tmp, tag + ".out")
        on = cpu[i] if isinstance(cpu, (list, tuple)) else cpu
        started.append(procs.start(argv, on, out, os.path.join(tmp, tag + ".err"), tmp))
    run = Running(name, started, port, logs, host, metrics, stdout_log)
    try:
        procs.wait_http(run.url, started, host=host)
    except Exception:
        run.stop()
        raise
    return run


# ---- the backend: nginx, 1 worker, a small 200 body, no access log ----

def nginx_backend_conf(tmp, name, port):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    return _write(os.path.join(d, "nginx.conf"), f"""
daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 20000;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  keepalive_requests 1000000000; keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}
  }}
}}
""")


def start_backend(tmp, cpu, name="backend"):
    port = procs.free_port()
    conf = nginx_backend_conf(tmp, name, port)
    return _start_ready(name, tmp, [["nginx", "-p", tmp, "-c", conf]], cpu, port, [])


# ---- peers ----

def start_nginx(tmp, cpu, backend_port, conns, idle_conns=0):
    d = os.path.join(tmp, "nginx")
    os.makedirs(d, exist_ok=True)
    port, status_port = procs.free_port(), procs.free_port()
    log = os.path.join(d, "access.log")
    open(log, "w").close()
    wc = max(1024, 2 * conns + 256, idle_conns + 1024)
    conf = _write(os.path.join(d, "nginx.conf"), f"""
daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 20000;
pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections {wc}; }}
http {{
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  log_format bench '$remote_addr - $remote_user [$time_local] "$request" $status '
                   '$body_bytes_sent "$http_referer" "$http_user_agent" rt=$request_time '
                   'urt=$upstream_response_time';
  access_log {log} bench;
  keepalive_requests 1000000000; keepalive_timeout 300s;
  upstream app {{ server 127.0.0.1:{backend_port}; keepalive {max(64, conns)};
                 keepalive_requests 1000000000; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ proxy_pass http://app; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{status_port};
    location / {{ stub_status; access_log off; }}
  }}
}}
""")
    return _start_ready("nginx", tmp, [["nginx", "-p", tmp, "-c", conf]], cpu, port, [log],
                        metrics=[(f"http://127.0.0.1:{status_port}/", "Active connections")])


def start_nginx_two_hops(tmp, cpu, backend_port, conns, out_cpu=None):
    """Two nginx reverse proxies in a row, placed as keel (d)'s sidecars (the inner one on
    cpu, the outer on out_cpu): what two hops of a plain proxy add, beside keel's."""
    inner = start_nginx(os.path.join(tmp, "nginx-d.in"), cpu, backend_port, conns)
    try:
        outer = start_nginx(os.path.join(tmp, "nginx-d.out"), cpu if out_cpu is None else out_cpu,
                            inner.port, conns)
    except Exception:
        inner.stop()
        raise
    return Running("nginx-d", inner.procs + outer.procs, outer.port, inner.logs + outer.logs,
                   metrics=inner.metrics + outer.metrics)


def start_haproxy(tmp, cpu, backend_port, conns, idle_conns=0):
    d = os.path.join(tmp, "haproxy")
    os.makedirs(d, exist_ok=True)
    port, prom_port = procs.free_port(), procs.free_port()
    log = os.path.join(d, "access.log")
    conf = _write(os.path.join(d, "haproxy.cfg"), f"""
global
  nbthread 1
  log stdout format raw local0
defaults
  mode http
  log global
  option httplog
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
frontend bench
  bind 127.0.0.1:{port}
  default_backend app
frontend prometheus
  bind 127.0.0.1:{prom_port}
  no log
  http-request use-service prometheus-exporter if {{ path /metrics }}
backend app
  server app1 127.0.0.1:{backend_port}
""")
    return _start_ready("haproxy", tmp, [["haproxy", "-f", conf]], cpu, port, [log],
                        metrics=[(f"http://127.0.0.1:{prom_port}/metrics",
                                  "haproxy_process_")],
                        stdout_to=[log])


# ---- keel ----

KEEL_SEEDS = ("examples/seeds/000-newlog-stdio.yaml", "examples/seeds/001-doublerequestcount.yaml")
KEEL_VARIANTS = {
    "keel-a": "access log only (--telemetry off)",
    "keel-b": "standard metrics + access log (config dir: Service + WorkloadEntry)",
    "keel-w": "(b) with --io-uring off: read(2) and write(2) per socket operation, epoll",
    "keel-u": "(b) with --io-uring writes: writes batched in the ring, reads read(2)",
    "keel-c": "(b) + Mixer rules of seeds 000 (stdio JSON log) and 001 (double count)",
    "keel-d": "two sidecars (b): outbound -> inbound -> backend, both on the proxy core",
    "keel-e": "(b) + tracing at 1 % (Istio's default), spans POSTed to a keel collector",
}


def keel_config_dir(tmp, name, seeds):
    """bench/telemetry.d (the sidecar's Service + WorkloadEntry) plus the given seeds."""
    d = os.path.join(tmp, name + ".d")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(REPO, "bench/telemetry.d/registry.yaml"), d)
    for s in seeds:
        shutil.copy(os.path.join(REPO, s), d)
    return d


def _keel_argv(keel, admin_port, log, extra):
    return [keel, "proxy", "--concurrency", "1", "--admin", f"127.0.0.1:{admin_port}",
            "--access-log", log, "--log-level", "warning"] + extra


def start_keel(tmp, cpu, backend_port, variant, keel, aux_cpu=None):
    if variant == "keel-d":
        return start_keel_two_hops(tmp, cpu, backend_port, keel)
    port, admin = procs.free_port(), procs.free_port()
    log = os.path.join(tmp, variant + ".access.log")
    extra = ["--inbound", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{backend_port}",
             "--outbound", "off"]
    stdout = None
    want = "istio_requests_total"
    if variant == "keel-a":
        extra += ["--telemetry", "off"]
        want = "keel_"
    else:
        seeds = KEEL_SEEDS if variant == "keel-c" else ()
        extra += ["--telemetry", "on", "--workload", "hello-v1.default",
                  "--config-dir", keel_config_dir(tmp, variant, seeds)]
        if variant == "keel-w":
            extra += ["--io-uring", "off"]
        if variant == "keel-u":
            extra += ["--io-uring", "writes"]
        if variant == "keel-c":
            stdout = [os.path.join(tmp, "keel-c.stdio.jsonl")]
            want = "istio_double_request_count"
    metrics = [(f"http://127.0.0.1:{admin}/stats/prometheus", want)]
    if variant == "keel-m":
        return start_keel_mixer_mode(tmp, cpu, aux_cpu, keel, extra, admin, port, log, metrics)
    if variant == "keel-e":
        return start_keel_tracing(tmp, cpu, aux_cpu, keel, extra, admin, port, log, metrics)
    return _start_ready(variant, tmp, [_keel_argv(keel, admin, log, extra)], cpu, port,
                        [log], metrics=metrics, stdout_to=stdout,
                        stdout_log=stdout[0] if stdout else None)


def add_mixer_mesh_config(d, grpc_port):
    """The mesh config that sends a sidecar's report bags to a mixer, into config dir d."""
    _write(os.path.join(d, "mesh.yaml"), f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    mixerReportServer: 127.0.0.1:{grpc_port}
""")


def start_mixer(tmp, cpu, keel):
    """`keel mixer` running seed 000's and 001's rules, pinned to `cpu` (the load's core:
    its CPU is reported apart, not as the proxy's). Returns (process, gRPC port, stdout)."""
    grpc, prom, mon = procs.free_port(), procs.free_port(), procs.free_port()
    d = keel_config_dir(tmp, "mixer", KEEL_SEEDS)
    os.remove(os.path.join(d, "registry.yaml"))
    out = os.path.join(tmp, "keel-m.mixer.jsonl")
    proc = procs.start([keel, "mixer", "--listen", f"127.0.0.1:{grpc}", "--prometheus", f"127.0.0.1:{prom}",
                        "--monitoring", f"127.0.0.1:{mon}", "--config-dir", d],
                       cpu, out, os.path.join(tmp, "keel-m.mixer.err"), tmp)
    procs.wait_http(f"http://127.0.0.1:{mon}/ready", [proc], body=b"")
    return proc, grpc, out


def start_keel_mixer_mode(tmp, cpu, aux_cpu, keel, extra, admin, port, log, metrics):
    """keel (m): keel (b) in mixer mode, the seed rules of (c) run by a `keel mixer` on
    aux_cpu (the load's core)."""
    mixer, grpc, out = start_mixer(tmp, aux_cpu, keel)
    add_mixer_mesh_config(os.path.join(tmp, "keel-m.d"), grpc)
    try:
        run = _start_ready("keel-m", tmp, [_keel_argv(keel, admin, log, extra)], cpu, port,
                           [log], metrics=metrics, stdout_log=out)
    except Exception:
        procs.stop(mixer)
        raise
    run.aux = [mixer]
    return run


def start_keel_tracing(tmp, cpu, aux_cpu, keel, extra, admin, port, log, metrics):
    """keel (e): keel (b) whose sampled spans (1 %, the mesh default) go to a `keel
    collector` on aux_cpu (the load's core); spans sent per request is measured."""
    zport = procs.free_port()
    collector = procs.start([keel, "collector", "--listen", f"127.0.0.1:{zport}"], aux_cpu,
                            os.path.join(tmp, "keel-e.collector.out"),
                            os.path.join(tmp, "keel-e.collector.err"), tmp)
    procs.wait_http(f"http://127.0.0.1:{zport}/health", [collector], body=b"")
    try:
        run = _start_ready("keel-e", tmp, [_keel_argv(keel, admin, log, extra + [
            "--zipkin", f"127.0.0.1:{zport}"])], cpu, port, [log], metrics=metrics)
    except Exception:
        procs.stop(collector)
        raise
    run.aux = [collector]
    run.counter = (f"http://127.0.0.1:{admin}/stats/prometheus", 'keel_tracing_spans_total{result="sent"}')
    return run


def two_hop_registry(tmp, inbound_port):
    """Service hello:80 whose WorkloadEntry's port is the inbound sidecar, and the client's."""
    d = os.path.join(tmp, "keel-d.d")
    os.makedirs(d, exist_ok=True)
    _write(os.path.join(d, "registry.yaml"), f"""apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: default}}
spec:
  selector: {{app: hello}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: hello-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {inbound_port}}}
  labels: {{app: hello, version: v1}}
  serviceAccount: hello
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client-v1, namespace: default}}
spec:
  address: 127.0.0.1
  labels: {{app: client, version: v1}}
  serviceAccount: client
""")
    return d


def start_keel_two_hops(tmp, cpu, backend_port, keel, out_cpu=None):
    """keel (d): the inbound sidecar on cpu, the outbound on out_cpu (default: cpu too)."""
    out_port, in_port = procs.free_port(), procs.free_port()
    out_admin, in_admin = procs.free_port(), procs.free_port()
    cfg = two_hop_registry(tmp, in_port)
    in_log = os.path.join(tmp, "keel-d.inbound.access.log")
    out_log = os.path.join(tmp, "keel-d.outbound.access.log")
    inbound = _keel_argv(keel, in_admin, in_log, [
        "--inbound", f"127.0.0.1:{in_port}", "--upstream", f"127.0.0.1:{backend_port}",
        "--outbound", "off", "--workload", "hello-v1.default", "--config-dir", cfg])
    outbound = _keel_argv(keel, out_admin, out_log, [
        "--inbound", "off", "--outbound", f"127.0.0.1:{out_port}",
        "--workload", "client-v1.default", "--config-dir", cfg])
    metrics = [(f"http://127.0.0.1:{in_admin}/stats/prometheus", 'reporter="destination"'),
               (f"http://127.0.0.1:{out_admin}/stats/prometheus", 'reporter="source"')]
    cpus = [cpu, cpu if out_cpu is None else out_cpu]
    return _start_ready("keel-d", tmp, [inbound, outbound], cpus, out_port,
                        [out_log, in_log], host="hello:80", metrics=metrics)


# ---- the floor: what any user-space proxy costs here ----

def start_floor(tmp, cpu, backend_port, fwd_epoll):
    """bench/uring/fwd_epoll: a bare HTTP/1.1 keep-alive forwarder (edge-triggered epoll,
    one read and one write per message, no parsing beyond framing, no log): the kernel's
    share of proxying a request plus almost nothing else."""
    port = procs.free_port()
    return _start_ready("floor", tmp, [[fwd_epoll, str(port), str(backend_port)]], cpu, port, [])


PROXIES = ("floor", "nginx", "haproxy", "keel-a", "keel-b", "keel-u", "keel-w", "keel-c",
           "keel-d", "keel-m", "keel-e")
ALL_TARGETS = ("direct",) + PROXIES
UNLOGGED = ("direct", "floor")  # targets that write no access log


def start_target(name, tmp, cfg, backend):
    """Start target `name` on the proxy CPU in front of `backend` (not for 'direct')."""
    cpu = cfg["proxy_cpu"]
    if name == "floor":
        return start_floor(tmp, cpu, backend.port, cfg["fwd_epoll"])
    if name == "nginx":
        return start_nginx(tmp, cpu, backend.port, cfg["conns"])
    if name == "haproxy":
        return start_haproxy(tmp, cpu, backend.port, cfg["conns"])
    if name.startswith("keel-"):
        return start_keel(tmp, cpu, backend.port, name, cfg["keel"], cfg["load_cpu"])
    raise ValueError(f"unknown target {name}")
