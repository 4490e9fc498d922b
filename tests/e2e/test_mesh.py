"""keel mesh up / status: a local mesh from Kubernetes manifests, with real processes.

The apps are tests/e2e/backend.py (GET /name answers the name given on its command line),
started by the mesh from each Deployment's command with $(PORT) expanded."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import HERE, KEEL, ROOT, http_get

BACKEND = os.path.join(HERE, "backend.py")
SEEDS = os.path.join(ROOT, "examples", "seeds")


def manifests(tmp_path, details_cmd=None, extra=""):
    details_cmd = details_cmd or '[%s, %s, "$(PORT)", "details-$(POD_NAME)"]' % (sys.executable, BACKEND)
    text = """
apiVersion: v1
kind: Service
metadata: {name: details}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-details}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1}
spec:
  template:
    metadata: {labels: {app: details, version: v1}}
    spec:
      serviceAccountName: bookinfo-details
      containers:
      - name: details
        image: ignored
        command: %s
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers:
      - name: reviews
        command: [%s, %s]
        args: ["$(PORT)", "reviews-$(POD_NAME)-$(MARK)"]
        env: [{name: MARK, value: "%s"}]
""" % (details_cmd, sys.executable, BACKEND, mark(tmp_path)) + extra
    path = tmp_path / "app.yaml"
    path.write_text(text)
    return path


class Mesh:
    def __init__(self, tmp_path, *paths, args=(), env=None):
        self.state = tmp_path / "state"
        self.out_path = tmp_path / "mesh.out"
        self.out = open(self.out_path, "wb")
        self.p = subprocess.Popen([KEEL, "mesh", "up", "--state-dir", str(self.state), *args,
                                   *[str(p) for p in paths]],
                                  stdout=self.out, stderr=subprocess.STDOUT, env=env)

    def text(self):
        if not self.out.closed:
            self.out.flush()
        return self.out_path.read_text(errors="replace")

    def wait_for(self, what, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if what in self.text():
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no %r in the mesh output:\n%s" % (what, self.text()))

    def row(self, name):
        for line in self.text().splitlines():
            f = line.split()
            if f and f[0] == name:
                return f
        raise AssertionError("no row %s:\n%s" % (name, self.text()))

    def status(self):
        r = subprocess.run([KEEL, "mesh", "status", "-o", "json", "--state-dir", str(self.state)],
                           capture_output=True, text=True, timeout=20)
        return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()
        return self.p.returncode


def mark(tmp_path):
    """This test's marker in command lines: its tmp dir's name plus this pytest's pid, so
    concurrent test sessions (whose tmp dirs may share a name) never see each other."""
    return "%s-%d" % (tmp_path.name, os.getpid())


def procs_with(tmp_path):
    """Live processes of this test: their command line names its tmp dir (mesh up, the
    proxies) or its marker (the apps)."""
    markers = (str(tmp_path), mark(tmp_path))
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if any(m in cmd for m in markers) and state != "Z":
            found.append((int(pid), cmd))
    return found


def wait_gone(tmp_path, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = procs_with(tmp_path)
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError("processes left behind: %s" % left)


def via_proxy(outbound_port, url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % outbound_port}))
    with opener.open(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_up_table_routes_through_sidecars_and_sigterm_stops_everything(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    try:
        m.wait_for("6/6 ready in")
        out = m.text()
        assert "COMPONENT" in out and "ADMIN" in out
        details = m.row("details-v1")
        assert details[1] == "details-v1.default"
        for name in ("reviews-v1-0", "reviews-v1-1"):
            assert m.row(name)[1] == name + ".default"
        inbound, outbound = (int(x) for x in details[3].split("/"))
        # inbound: the sidecar in front of the app
        assert http_get("http://127.0.0.1:%d/name" % inbound) == (200, "details-details-v1")
        # outbound: the app's HTTP_PROXY, routed by the registry to both replicas
        seen = {via_proxy(outbound, "http://reviews:9080/name")[1] for _ in range(6)}
        assert seen == {"reviews-reviews-v1-0-%s" % mark(tmp_path), "reviews-reviews-v1-1-%s" % mark(tmp_path)}
        # the generated WorkloadEntries: one per replica, the Service's port name -> the sidecar
        we = (m.state / "config" / "zz-mesh-workloads.yaml").read_text()
        assert 'name: "details-v1"' in we and '"http": %d' % inbound in we
        assert 'serviceAccount: "bookinfo-details"' in we
        # the Deployments stay out of the config dir; the Services are there
        copied = (m.state / "config" / "00-app.yaml").read_text()
        assert "kind: Service" in copied and "kind: Deployment" not in copied
        assert len(procs_with(tmp_path)) >= 6
    finally:
        rc = m.stop(signal.SIGTERM)
    assert rc == 0, m.text()
    assert "stopping (SIGTERM)" in m.text()
    assert "while stopping" not in m.text()  # every component exited cleanly
    wait_gone(tmp_path)
    assert not (m.state / "mesh.state").exists()


def test_for_exits_zero_and_leaves_no_process(tmp_path):
    t0 = time.time()
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), "--for", "3",
                        str(manifests(tmp_path))], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 3 <= time.time() - t0 < 15
    assert "COMPONENT" in r.stdout and "stopping (--for)" in r.stdout and "stopped" in r.stdout
    assert "while stopping" not in r.stdout
    # every component was reaped before mesh up returned: nothing of this test is left
    assert procs_with(tmp_path) == []
    logs = sorted(os.listdir(tmp_path / "st" / "logs"))
    assert logs == ["details-v1-sidecar.log", "details-v1.log", "reviews-v1-0-sidecar.log", "reviews-v1-0.log",
                    "reviews-v1-1-sidecar.log", "reviews-v1-1.log"]


def test_log_dir_flag(tmp_path):
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), "--log-dir", str(tmp_path / "L"),
                        "--for", "1", str(manifests(tmp_path))], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting details-v1" in (tmp_path / "L" / "details-v1.log").read_text()


def test_status_json_lists_components_with_health(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    try:
        m.wait_for("6/6 ready in")
        rc, st = m.status()
        assert rc == 0 and st["healthy"] is True
        assert st["config_dir"] == str(m.state / "config")
        comps = {c["name"]: c for c in st["components"]}
        assert set(comps) == {"details-v1", "details-v1-sidecar", "reviews-v1-0", "reviews-v1-0-sidecar",
                              "reviews-v1-1", "reviews-v1-1-sidecar"}
        assert comps["details-v1"]["role"] == "app" and comps["details-v1"]["health"] == "listening"
        sc = comps["details-v1-sidecar"]
        assert sc["role"] == "sidecar" and sc["health"] == "ready" and sc["admin_port"] > 0
        assert all(c["pid"] > 0 and c["healthy"] for c in comps.values())
        # the plain table too
        r = subprocess.run([KEEL, "mesh", "status", "--state-dir", str(m.state)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 0 and "6/6 healthy" in r.stdout
    finally:
        assert m.stop() == 0
    r = subprocess.run([KEEL, "mesh", "status", "--state-dir", str(m.state)], capture_output=True, text=True)
    assert r.returncode == 1 and "no mesh running" in r.stderr


def test_killed_child_is_reported_and_restarted(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    try:
        m.wait_for("6/6 ready in")
        _, st = m.status()
        app = next(c for c in st["components"] if c["name"] == "details-v1")
        os.kill(app["pid"], signal.SIGKILL)
        m.wait_for("details-v1 (pid %d) was killed by signal 9" % app["pid"])
        assert "Last lines of" in m.text()
        deadline = time.time() + 10
        while True:
            rc, st = m.status()
            again = next(c for c in st["components"] if c["name"] == "details-v1")
            if rc == 0 and again["restarts"] == 1 and again["healthy"]:
                break
            assert time.time() < deadline, st
            time.sleep(0.1)
        assert again["pid"] != app["pid"]
        inbound = int(m.row("details-v1")[3].split("/")[0])
        assert http_get("http://127.0.0.1:%d/name" % inbound)[0] == 200
    finally:
        assert m.stop() == 0


def test_supervisor_killed_children_die_with_it(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    m.wait_for("6/6 ready in")
    assert procs_with(tmp_path)
    m.stop(signal.SIGKILL)  # no chance to clean up: PR_SET_PDEATHSIG does it
    wait_gone(tmp_path, timeout=15)


def test_bad_manifest_is_located_and_nothing_starts(tmp_path):
    path = manifests(tmp_path)
    text = path.read_text().replace("replicas: 2", "replicas: two")
    path.write_text(text)
    line = text.splitlines().index("  replicas: two") + 1
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), "--for", "5", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "%s:%d:13: error: Deployment reviews-v1: replicas must be an integer" % (path, line) in r.stderr
    assert "nothing started" in r.stderr
    assert procs_with(tmp_path) == []
    assert not (tmp_path / "st" / "logs").exists()


def test_yaml_syntax_error_is_located(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x\n")
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and ("%s:4:1: error" % path) in r.stderr, r.stderr


def test_missing_command_is_an_error_before_start(tmp_path):
    path = manifests(tmp_path, details_cmd="[no-such-program-%s]" % mark(tmp_path))
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert 'command "no-such-program-%s" not found in PATH' % mark(tmp_path) in r.stderr
    assert "%s:" % path in r.stderr
    assert procs_with(tmp_path) == []


def test_container_without_command(tmp_path):
    path = tmp_path / "img.yaml"
    path.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n"
                    "    spec:\n      containers:\n      - name: web\n        image: nginx\n")
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), str(path)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "%s:8:9: error: Deployment web: container has no command" % path in r.stderr, r.stderr


def test_gateway_port_clash_is_refused(tmp_path):
    gw = """---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(tmp_path / "st"), "--gateway-port", str(port),
                            str(manifests(tmp_path, extra=gw))], capture_output=True, text=True, timeout=20)
    finally:
        s.close()
    assert r.returncode == 1
    assert "--gateway-port %d: 127.0.0.1:%d is already in use" % (port, port) in r.stderr
    assert procs_with(tmp_path) == []


def test_second_mesh_on_the_same_state_dir_is_refused(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    try:
        m.wait_for("6/6 ready in")
        r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(m.state), str(tmp_path / "app.yaml")],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1 and "a mesh already runs" in r.stderr
    finally:
        assert m.stop() == 0


def test_apply_without_config_dir_goes_to_the_running_mesh(tmp_path):
    m = Mesh(tmp_path, manifests(tmp_path))
    try:
        m.wait_for("6/6 ready in")
        details = m.row("details-v1")
        outbound, admin = int(details[3].split("/")[1]), int(details[4].rsplit(":", 1)[1])
        env = dict(os.environ, KEEL_MESH_DIR=str(m.state))
        r = subprocess.run([KEEL, "apply", "-f", os.path.join(SEEDS, "001-doublerequestcount.yaml")],
                           capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=20)
        assert r.returncode == 0, r.stderr
        assert (m.state / "config" / "001-doublerequestcount.yaml").exists()
        assert not (tmp_path / "keel.d").exists()
        # the sidecars reload: the new Mixer rule counts the next requests
        deadline = time.time() + 10
        while True:
            via_proxy(outbound, "http://reviews:9080/name")
            _, text = http_get("http://127.0.0.1:%d/stats/prometheus" % admin)
            if "istio_double_request_count{" in text:
                break
            assert time.time() < deadline, text[-2000:]
            time.sleep(0.1)
    finally:
        assert m.stop() == 0


def test_ambient_namespace_gets_a_waypoint_and_no_sidecars(tmp_path):
    path = tmp_path / "ambient.yaml"
    path.write_text("""
apiVersion: v1
kind: Namespace
metadata:
  name: amb
  labels: {istio.io/use-waypoint: waypoint}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: amb}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: amb}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1, namespace: amb}
spec:
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec:
      containers:
      - name: ratings
        command: [%s, %s, "$(PORT)", "ratings-%s"]
""" % (sys.executable, BACKEND, mark(tmp_path)))
    m = Mesh(tmp_path, path)
    try:
        m.wait_for("SIDECAR in/out")
        m.wait_for("waypoint (waypoint)")
        row = m.row("ratings-v1")
        assert row[1:3] == ["(ambient)", "ratings-v1.amb"] and row[4] == "-"  # no sidecar
        app_port = int(row[3].rsplit(":", 1)[1])
        wp = m.row("waypoint")
        wp_port = int(wp[4].split("/")[1])
        we = (m.state / "config" / "zz-mesh-workloads.yaml").read_text()
        # the ambient workload's entry points at the app itself; the waypoint's is labelled
        assert '  name: "ratings-v1"\n  namespace: "amb"\nspec:\n  address: 127.0.0.1\n  ports:\n    "http": %d\n' \
            % app_port in we
        assert '  name: "waypoint"\n  namespace: "amb"\nspec:\n  address: 127.0.0.1\n  ports:\n    "http": %d\n' \
            % wp_port in we
        assert 'gateway.networking.k8s.io/gateway-name: "waypoint"' in we
        # the app's calls go through its namespace's waypoint
        env = open("/proc/%d/environ" % next(c["pid"] for c in m.status()[1]["components"]
                                               if c["name"] == "ratings-v1"), "rb").read().split(b"\0")
        assert b"HTTP_PROXY=http://127.0.0.1:%d" % wp_port in env
        names = [c["name"] for c in m.status()[1]["components"]]
        assert sorted(names) == ["ratings-v1", "waypoint"]
    finally:
        assert m.stop() == 0


def test_stale_state_file_of_a_dead_mesh_is_ignored(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    # a state file whose pid is alive but is not a keel mesh up (this test's own process)
    (state / "mesh.state").write_text("pid\t%d\nconfig_dir\t/nonexistent\nlog_dir\t/nonexistent\n" % os.getpid())
    r = subprocess.run([KEEL, "mesh", "status", "--state-dir", str(state)], capture_output=True, text=True)
    assert r.returncode == 1 and "no mesh running" in r.stderr
    env = dict(os.environ, KEEL_MESH_DIR=str(state))
    r = subprocess.run([KEEL, "apply", "-f", os.path.join(SEEDS, "001-doublerequestcount.yaml")],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=20)
    assert r.returncode == 0 and (tmp_path / "keel.d" / "001-doublerequestcount.yaml").exists()
    r = subprocess.run([KEEL, "mesh", "up", "--state-dir", str(state), "--for", "1", str(manifests(tmp_path))],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr


def scrape_until(admin_port, needle, timeout=5):
    """The admin's Prometheus text once it contains needle (fails after timeout)."""
    deadline = time.time() + timeout
    while True:
        text = http_get("http://127.0.0.1:%d/stats/prometheus" % admin_port)[1]
        if needle in text:
            return text
        assert time.time() < deadline, (admin_port, needle, text)
        time.sleep(0.05)


def test_replicas_are_instances_of_one_workload(tmp_path):
    """reviews-v1 with 2 replicas: telemetry's workload is the Deployment (Istio's
    source_workload / destination_workload), the instance name each replica's (source.name)."""
    m = Mesh(tmp_path, manifests(tmp_path), os.path.join(SEEDS, "000-newlog-stdio.yaml"))
    try:
        m.wait_for("6/6 ready in")
        outbound = int(m.row("details-v1")[3].split("/")[1])
        for _ in range(2):  # one each, round robin
            assert via_proxy(outbound, "http://reviews:9080/name")[0] == 200
        admin = {r: int(m.row(r)[4].rsplit(":", 1)[1]) for r in ("details-v1", "reviews-v1-0", "reviews-v1-1")}
        # a proxy reports once its side of the exchange ends: after its write of the
        # response, which may wake the client first on a busy machine, so scrapes poll
        src = scrape_until(admin["details-v1"], 'destination_workload="reviews-v1",')
        assert 'destination_workload="reviews-v1-' not in src
        for r in ("reviews-v1-0", "reviews-v1-1"):
            dst = scrape_until(admin[r], 'reporter="destination",source_workload="details-v1",')
            assert 'destination_workload="reviews-v1",' in dst
        # seed 000's destinationName: the instance
        deadline = time.time() + 5
        while True:
            text = (m.state / "logs" / "details-v1-sidecar.log").read_text()
            names = sorted(json.loads(l)["destinationName"] for l in text.splitlines() if '"newlog.' in l)
            if len(names) == 2:
                break
            assert time.time() < deadline, text
            time.sleep(0.05)
        assert names == ["reviews-v1-0", "reviews-v1-1"]
    finally:
        assert m.stop() == 0
