"""`make bench`'s harness, run short: every keel target starts, serves wrk without errors,
logs every request, and answers its metrics check; the JSON and the plot are written; the
fixed-rate extra loads direct and two hops at once.
(The figures themselves are for `make bench` on a quiet machine, not for a test.)"""
import json
import os
import subprocess

from conftest import ROOT


def test_bench_harness_runs_every_keel_target(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, ROUNDS="1", DURATION="1s", WARMUP="1s", EXTRAS="fixed-rate", FIXED_DURATION="1", FIXED_RATE="500",
               TARGETS="keel-a keel-b keel-c keel-d keel-m keel-e", OUT_JSON=str(out_json), OUT_PNG=str(out_png),
               KEEL=os.path.join(ROOT, os.environ.get("KEEL_BIN", "build/keel")))
    p = subprocess.run([os.path.join(ROOT, "bench", "proxy-bench")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    figures = json.loads(out_json.read_text())["targets"]
    assert set(figures) == {"keel-a", "keel-b", "keel-c", "keel-d", "keel-m", "keel-e"}
    for name, f in figures.items():
        assert f["non2xx"] == 0 and f["sockerr"] == 0, (name, f)
        assert f["log_per_req"] >= 0.99, (name, f)
        assert f["cpu_us_per_req"] > 0, (name, f)
        for r in f["rounds"]:
            assert r["metrics_fail"] == [], (name, r)
    assert figures["keel-c"]["mixer_lines_per_req"] >= 0.99
    # keel (m): its bags reached the mixer, which wrote seed 000's line for each request
    assert figures["keel-m"]["mixer_lines_per_req"] >= 0.99
    assert all(r["aux_cpu_us_per_req"] > 0 for r in figures["keel-m"]["rounds"])
    # keel (e): about 1 % of requests sampled, their spans reached the collector
    assert 0.002 < figures["keel-e"]["counter_per_req"] < 0.05, figures["keel-e"]
    assert out_png.stat().st_size > 1000
    # fixed rate: direct and two hops (keel's, then nginx's) loaded at once, every request
    # answered 2xx, in the pods layout
    fr = json.loads(out_json.read_text())["extras"]["fixed_rate"]
    assert fr["layout"] == "pods"
    for name in ("direct", "keel-d", "nginx-d"):
        assert fr[name]["errors"] == 0 and fr[name]["unanswered"] == 0, (name, fr[name])
        assert fr[name]["rounds"][0]["requests"] >= 450, (name, fr[name])
    for name in ("keel-d", "nginx-d"):
        assert len(fr[name]["p99_added_ms_rounds"]) == 1, fr[name]
    assert fr["p99_added_ms"] == fr["keel-d"]["p99_added_ms"]
