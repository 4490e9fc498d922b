"""make demo's script end to end: Bookinfo on keel mesh up, traffic through the ingress
gateway, then the telemetry summary and one trace from the mesh's collector. Needs `keel
sample-app`, the gateway role and tracing."""
import os
import re
import signal
import subprocess
import time

from conftest import KEEL, ROOT


def trace_tree(out):
    """The demo's trace: (trace id, span count, [(depth, service, operation)]) of the block
    after '== one trace'."""
    block = out.split("== one trace", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    heads = [re.match(r"^  trace ([0-9a-f]{32})  \((\d+) spans, [0-9.]+ ms\)$", l) for l in block]
    assert [h for h in heads if h] and heads[0], block
    nodes = []
    for line in block[1:]:
        m = re.match(r"^  ((?:[│ ]  )*)[└├]─ (\S+)  (\S+)  [0-9.]+ ms  200$", line)
        assert m, "not a span line of a 200 OK tree: %r\n%s" % (line, "\n".join(block))
        nodes.append((len(m.group(1)) // 3, m.group(2), m.group(3)))
    return heads[0].group(1), int(heads[0].group(2)), nodes, sum(1 for h in heads if h)


def test_demo_shows_the_bookinfo_telemetry(tmp_path):
    env = dict(os.environ, KEEL_BIN=KEEL, DEMO_SECONDS="5", DEMO_KEEP="0", DEMO_DIR=str(tmp_path / "demo"))
    t0 = time.time()
    # its own session: on a timeout the whole group goes, the mesh included
    p = subprocess.Popen([os.path.join(ROOT, "scripts", "demo.sh")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = p.communicate(timeout=85)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate()
        raise AssertionError("demo.sh took more than 85 s:\n" + out + err)
    assert p.returncode == 0, out + err
    assert time.time() - t0 < 90
    assert "GW_URL=http://127.0.0.1:" in out
    # traffic went through the gateway without errors
    m = re.search(r"traffic done: (\d+) requests, (\d+) errors", out)
    assert m, out
    assert int(m.group(1)) > 20 and m.group(2) == "0", out
    # seed 000's stdio JSON lines, from the proxies' stdout
    assert re.search(r'^\{"level":"warn","time":"[^"]+","instance":"newlog.logentry.istio-system"', out, re.M), out
    # istio_requests_total per source -> destination, both reporters, all 200
    rows = re.findall(r"^\s+(source|destination)\s+(\S+)\s+-> (\S+)\s+(\d+)\s+(\d+)$", out, re.M)
    pairs = {(rep, src, dst) for rep, src, dst, code, n in rows if code == "200" and int(n) > 0}
    for rep in ("source", "destination"):
        assert (rep, "istio-ingressgateway", "productpage-v1") in pairs, out
        assert (rep, "productpage-v1", "details-v1") in pairs, out
        assert {d for (r_, s, d) in pairs if r_ == rep and s == "productpage-v1" and d.startswith("reviews-v")}, out
    assert not [row for row in rows if row[3] != "200"], out
    assert re.search(r"istio_double_request_count summed over the proxies: [1-9]", out), out
    # one trace, as an indented tree: gateway -> productpage -> details, reviews -> ratings
    m = re.search(r"^ZIPKIN_URL=(http://127\.0\.0\.1:\d+)$", out, re.M)
    assert m, out
    zipkin = m.group(1)
    assert "keel traces --collector %s --service ratings.default --limit 1" % zipkin in out
    tid, n_spans, nodes, n_traces = trace_tree(out)
    assert n_traces == 1 and n_spans == len(nodes) == 8, out  # 2 spans per hop: CLIENT and SERVER
    assert "orphan" not in out
    gw = "istio-ingressgateway.istio-system"
    assert nodes[0] == (0, gw, "productpage.default.svc.cluster.local:9080/productpage"), nodes

    def under(parent, child):
        """child's span sits below parent's, deeper, with nothing shallower between."""
        i = nodes.index(parent)
        for node in nodes[i + 1:]:
            if node[0] <= parent[0]:
                return False
            if node == child:
                return True
        return False
    fq = "%s.default.svc.cluster.local:9080/*"
    pp_server = (1, "productpage.default", fq % "productpage")
    assert pp_server in nodes and under(nodes[0], pp_server), nodes
    for svc, caller in (("details", pp_server), ("reviews", pp_server)):
        client = (caller[0] + 1, caller[1], fq % svc)
        server = (caller[0] + 2, svc + ".default", fq % svc)
        assert under(caller, client) and under(client, server), (svc, nodes)
    rv = (3, "reviews.default", fq % "reviews")
    assert under(rv, (4, "reviews.default", fq % "ratings")) and under(rv, (5, "ratings.default", fq % "ratings"))
    assert "traces (Zipkin API, Grafana's Zipkin data source): %s/api/v2/traces" % zipkin in out
    # every proxy and app exited cleanly when the mesh stopped
    mesh_out = (tmp_path / "demo" / "mesh.out").read_text()
    assert "keel mesh: stopped" in mesh_out and "while stopping" not in mesh_out, mesh_out
    # nothing of the demo outlives it
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if str(tmp_path).encode() in f.read():
                    left.append(pid)
        except OSError:
            pass
    deadline = time.time() + 10
    while left and time.time() < deadline:
        left = [p for p in left if os.path.exists("/proc/" + p)]
        time.sleep(0.1)
    assert not left
