"""Processes for proxy-bench: start pinned servers, stop them all, and read /proc.

Every server runs in its own session (so its whole group can be signalled by id) and is
remembered here until stopped; stop_all() runs at exit and on SIGINT/SIGTERM.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
_started = []  # Popen objects still running, oldest first


def free_port():
    """A free TCP port on 127.0.0.1 (the kernel's choice, closed again right away)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, cpu, stdout_path, stderr_path, cwd):
    """Start argv pinned to one CPU with taskset, output to files; returns the Popen."""
    out = open(stdout_path, "ab")
    err = open(stderr_path, "ab")
    proc = subprocess.Popen(["taskset", "-c", str(cpu)] + list(argv), stdout=out,
                            stderr=err, stdin=subprocess.DEVNULL, cwd=cwd,
                            start_new_session=True)
    out.close()
    err.close()
    proc.log_paths = (stdout_path, stderr_path)
    _started.append(proc)
    return proc


def stop(proc, grace=3.0):
    """SIGTERM the process group, SIGKILL after `grace` seconds; reap it."""
    if proc not in _started:
        return
    _started.remove(proc)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def stop_all():
    """Stop every server this bench started, newest first."""
    for proc in reversed(list(_started)):
        stop(proc, grace=1.0)


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def install_cleanup():
    """Stop all servers at exit, also on Ctrl-C and SIGTERM."""
    import atexit
    atexit.register(stop_all)

    def on_signal(signum, _frame):
        stop_all()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def log_tail(proc, lines=15):
    text = ""
    for path in proc.log_paths:
        try:
            with open(path, "rb") as f:
                text += f.read()[-4000:].decode(errors="replace")
        except OSError:
            pass
    return "\n".join(text.splitlines()[-lines:])


def wait_http(url, procs, timeout=5.0, host=None, body=b"hello"):
    """Poll url until a 2xx whose body starts with `body`; fail with the log tail."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[3]} exited ({p.returncode}):\n{log_tail(p)}")
        try:
            req = urllib.request.Request(url, headers={"Host": host} if host else {})
            with urllib.request.urlopen(req, timeout=1) as r:
                data = r.read()
                if 200 <= r.status < 300 and data.startswith(body):
                    return
                last = f"status {r.status} body {data[:40]!r}"
        except Exception as e:  # refused while starting, 5xx while upstream warms
            last = repr(e)
        time.sleep(0.05)
    tails = "\n".join(log_tail(p) for p in procs)
    raise RuntimeError(f"{url} not ready in {timeout}s ({last}):\n{tails}")


def http_get(url, timeout=3):
    """(status, body) of a GET, (0, b'') when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except Exception:
        return 0, b""


# ---- /proc readings ----

def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # the command name may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def _all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_map():
    """{ppid: [pid, ...]} over every process now."""
    kids = {}
    for pid in _all_pids():
        try:
            ppid = int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(pid)
    return kids


def tree(root, kids=None):
    """root and all its descendants."""
    kids = kids if kids is not None else children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def cpu_ticks_split(pids, with_children=True):
    """(user, system) clock ticks summed over pids: utime, stime (+ cutime, cstime of
    reaped children)."""
    user = system = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # fields after ')' start at field 3 (state): utime is field 14 -> index 11
        user += int(f[11])
        system += int(f[12])
        if with_children:
            user += int(f[13])
            system += int(f[14])
    return user, system


def cpu_ticks(pids, with_children=True):
    """utime+stime (+cutime+cstime of reaped children) summed over pids, in clock ticks."""
    return sum(cpu_ticks_split(pids, with_children))


def tree_cpu_split(roots):
    """(user, system) CPU seconds of the process trees under roots."""
    kids = children_map()
    user, system = cpu_ticks_split([p for r in roots for p in tree(r, kids)])
    return user / CLK_TCK, system / CLK_TCK


def tree_cpu_seconds(roots):
    return sum(tree_cpu_split(roots))


def status_kib(pids, field):
    """Sum of a /proc/PID/status field (VmHWM, VmRSS) over pids, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_kib(roots, field):
    kids = children_map()
    return status_kib([p for r in roots for p in tree(r, kids)], field)


def all_cpu_ticks(exclude):
    """{pid: ticks} for every process not in `exclude` (own ticks, not children's)."""
    out = {}
    for pid in _all_pids():
        if pid in exclude:
            continue
        try:
            f = _stat_fields(pid)
            out[pid] = int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return out


def core_times():
    """[(busy, total)] ticks per CPU from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out.append((sum(v[:8]) - idle, sum(v[:8])))
    return out


class Snapshot:
    """The machine-wide readings a measurement takes before and after its load."""

    def __init__(self, own_root):
        self.t = time.monotonic()
        self.own = set(tree(own_root))
        self.others = all_cpu_ticks(self.own)
        self.cores = core_times()

    def other_pct(self, before):
        """CPU of processes outside the bench's tree between two snapshots, % of one core.

        A process that started and ended in between is not seen (short compiler runs)."""
        ticks = sum(t - before.others[p] for p, t in self.others.items()
                    if p in before.others and p not in self.own and p not in before.own)
        return 100.0 * ticks / CLK_TCK / max(self.t - before.t, 1e-6)

    def core_busy_pct(self, before):
        out = []
        for (b1, t1), (b0, t0) in zip(self.cores, before.cores):
            out.append(100.0 * (b1 - b0) / max(t1 - t0, 1))
        return out
