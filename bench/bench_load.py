"""Load for proxy-bench: wrk (closed loop, max throughput), h2load at a fixed request
rate, idle keep-alive connections, and a one-connection request loop for callgrind."""
import json
import os
import re
import resource
import socket
import subprocess

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}

# REQUEST_HEADERS=browser: every request (wrk's and the callgrind loop's) also carries what
# a browser sends (14 headers in all, ~600 bytes), instead of Host alone (wrk) or Host and
# User-Agent (the loop): header handling scales with them in every proxy.
BROWSER_HEADERS = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"), ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "https://bench.example/start"), ("Cookie", "session=4f2a9c1e7b3d; theme=dark"),
    ("Cache-Control", "no-cache"), ("X-Forwarded-For", "10.1.2.3"),
    ("X-Forwarded-Proto", "https"), ("Sec-Fetch-Mode", "navigate"),
    ("Upgrade-Insecure-Requests", "1"),
]
EXTRA_HEADERS = BROWSER_HEADERS if os.environ.get("REQUEST_HEADERS") == "browser" else []


def _ms(text):
    """wrk's '812.00us' / '1.80ms' / '1.02s' in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk_argv(url, host, conns, threads, duration, cpu, latency=True):
    argv = ["taskset", "-c", str(cpu), "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}"]
    if latency:
        argv.append("--latency")
    if host:
        argv += ["-H", f"Host: {host}"]
    for name, value in EXTRA_HEADERS:
        argv += ["-H", f"{name}: {value}"]
    return argv + [url]


def parse_wrk(out):
    """The figures of wrk's report: requests, seconds, req/s, percentiles, errors."""
    r = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    r["requests"] = int(m.group(1))
    r["seconds"] = _ms(m.group(2) + m.group(3)) / 1e3
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sockerr"] = sum(int(x) for x in m.groups()) if m else 0
    r["sockerr_detail"] = dict(zip(("connect", "read", "write", "timeout"),
                                   (int(x) for x in m.groups()))) if m else {}
    return r


def run_wrk(url, host, conns, threads, duration, cpu, latency=True):
    argv = wrk_argv(url, host, conns, threads, duration, cpu, latency)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


# ---- fixed rate: bench/paced_load.c ----

def run_fixed_rate(paced_load, ports, host, rate, conns, duration_s, warmup_s, cpu):
    """paced_load: requests evenly spaced at `rate` to each port (all at once when there
    are several), latency from when each was due (h2load --rps fires every connection's
    timer at once and measures its own bursts). One result per port, in order."""
    argv = ["taskset", "-c", str(cpu), paced_load, ",".join(str(p) for p in ports), str(rate),
            str(conns), str(duration_s), str(warmup_s), host or "bench"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    results = []
    for line in out.splitlines():
        r = json.loads(line)
        r["target_rps"] = rate
        for k in ("p50", "p90", "p99", "p999", "max"):
            r[f"{k}_ms"] = r.pop(f"{k}_us") / 1e3
        results.append(r)
    return results


# ---- plain sockets: idle keep-alive connections and a request loop ----

def raise_nofile():
    """Soft open-file limit up to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _request(host, path="/"):
    if EXTRA_HEADERS:
        lines = "".join(f"{n}: {v}\r\n" for n, v in EXTRA_HEADERS)
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode()
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench\r\n\r\n".encode()


def _read_response(sock):
    """Read one response with a Content-Length body; True when it is a 2xx."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head[9:10] == b"2"


def request(sock, host="bench", path="/"):
    """One GET on an open keep-alive connection, its response read whole; True on a 2xx."""
    sock.sendall(_request(host, path))
    return _read_response(sock)


def open_idle(port, count, host="bench", path="/"):
    """`count` connections that each made one request and stay open, idle."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if not request(s, host, path):
            raise RuntimeError(f"idle connection {len(socks)}: request failed")
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def request_loop(port, count, host="bench"):
    """`count` requests one after the other on one keep-alive connection; 2xx count."""
    ok = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(count):
            ok += request(s, host)
    return ok


def tool_version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def nproc():
    return os.cpu_count()
