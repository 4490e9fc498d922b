"""Output of proxy-bench: the table on stdout, the JSON file, the gnuplot PNG."""
import json
import os
import subprocess
import tempfile


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def print_table(doc):
    t = doc["targets"]
    s = doc["settings"]
    print(f"\nproxy-bench {doc['started']}: wrk -t{s['threads']} -c{s['conns']} "
          f"-d{s['duration']}, medians of {s['rounds']} rounds; proxy on CPU {s['proxy_cpu']}, "
          f"wrk + backend on CPU {s['load_cpu']}")
    head = (f"{'target':8} {'req/s':>9} {'p50_ms':>7} {'p99_ms':>7} {'CPU_us/req':>10} "
            f"{'user':>5} {'sys':>5} "
            f"{'RSS_MiB':>7} {'log/req':>7} {'errors':>6} {'other%':>6} {'spread%':>7}  status")
    print(head)
    print("-" * len(head))
    for name, r in t.items():
        errors = r["non2xx"] + r["sockerr"]
        print(f"{name:8} {r['rps']:>9,.0f} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} "
              f"{r['cpu_us_per_req']:>10.2f} {r['user_us_per_req']:>5.2f} "
              f"{r['sys_us_per_req']:>5.2f} {r['rss_mib']:>7.1f} "
              f"{_f(r['log_per_req'], '.3f'):>7} {errors:>6} {r['other_pct']:>6.1f} "
              f"{r['spread_pct']:>7.1f}  {' '.join(r['status'])}")
    print_ratios(t)
    print_extras(doc.get("extras", {}))


def print_ratios(t):
    for peer in ("nginx", "haproxy"):
        if peer not in t:
            continue
        print(f"\nratio to {peer:7}  {'req/s':>6} {'p50':>6} {'p99':>6} {'CPU/req':>7} {'RSS':>6}"
              f"   CPU/req round by round: median (min-max)")
        for name, r in t.items():
            v = r[f"vs_{peer}"]
            p = v.get("cpu_paired")
            print(f"  {name:16} " + " ".join(
                f"{_f(v[k], '.2f'):>6}" + ("x" if v[k] is not None else "")
                for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mib")) +
                (f"   {p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})" if p else ""))


def print_extras(x):
    if "idle_rss_mib" in x:
        print("\nRSS MiB with idle keep-alive connections (one worker):")
        for name, v in x["idle_rss_mib"].items():
            print(f"  {name:6} " + "  ".join(f"{k}: {m:.1f}" for k, m in v.items()))
    if "callgrind" in x:
        c = x["callgrind"]
        print(f"\ncallgrind, keel (b): {c['ir_per_request']:,.0f} instructions/request "
              f"({c['requests']} requests after {c['warmup_requests']} warm-up); "
              f"perf stat: {c['perf_stat']}")
    if "callgrind_mixer" in x:
        c = x["callgrind_mixer"]
        print(f"callgrind, keel (m): {c['ir_per_request']:,.0f} instructions/request")
    if "mixer_cost" in x:
        c = x["mixer_cost"]
        print(f"mixer cost at {c['rate']:,} req/s: keel (b) {c['keel-b']['cpu_us_per_req']:.2f} us/req, "
              f"keel (m) {c['keel-m']['cpu_us_per_req']:.2f} us/req ({c['cpu_ratio']:.3f}x)")
    if "fixed_rate" in x:
        f = x["fixed_rate"]
        print(f"\nfixed rate {f['rate']} req/s to each of direct and two hops at once "
              f"({f['conns']} connections each, paced_load, {f['duration_s']} s, "
              f"layout {f['layout']}, medians):")
        for name in ("direct", "keel-d", "nginx-d"):
            r = f[name]
            print(f"  {name:8} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"p99.9 {r['p999_ms']:.3f} ms  non-2xx {r['errors']}  unanswered {r['unanswered']}  "
                  f"other {r['other_pct']:.0f}%")
        for name, what in (("keel-d", "two keel hops"), ("nginx-d", "two nginx hops")):
            r = f[name]
            rounds = ", ".join(f"{1e3 * a:+.0f}" for a in r["p99_added_ms_rounds"])
            print(f"  {what} add {1e3 * r['p99_added_ms']:.0f} us at p99 (rounds: {rounds} us), "
                  f"{1e3 * r['p50_added_ms']:.0f} us at p50")


def write_json(doc, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")


GNUPLOT = """
set terminal pngcairo size 1100,760 font "DejaVu Sans,10"
set output '{png}'
set multiplot layout 2,1 title "{title}"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
unset key
set ylabel "CPU us / request (lower is better)"
plot '{dat}' using 2:xtic(1) lc rgb "#4c72b0", '' using 0:2:(sprintf("%.2f",$2)) with labels offset 0,0.7 notitle
set ylabel "requests / s (higher is better)"
plot '{dat}' using 3:xtic(1) lc rgb "#55a868", '' using 0:3:(sprintf("%.0f",$3)) with labels offset 0,0.7 notitle
unset multiplot
"""


def plot(doc, png):
    if not doc["targets"]:  # extras only (TARGETS=): nothing to plot
        return
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    s = doc["settings"]
    title = (f"proxy-bench {doc['started'][:10]}: wrk -c{s['conns']} -d{s['duration']}, "
             f"median of {s['rounds']}, proxy alone on one core; other CPU load up to "
             f"{max(r['other_pct_max'] for r in doc['targets'].values()):.0f}% of a core")
    with tempfile.TemporaryDirectory() as d:
        dat = os.path.join(d, "bench.dat")
        with open(dat, "w") as f:
            for name, r in doc["targets"].items():
                f.write(f"{name} {r['cpu_us_per_req']:.3f} {r['rps']:.0f}\n")
        script = os.path.join(d, "bench.gp")
        with open(script, "w") as f:
            f.write(GNUPLOT.format(png=png, title=title, dat=dat))
        subprocess.run(["gnuplot", script], check=True)
