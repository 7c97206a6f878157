#!/usr/bin/env python3
"""Compact summary of a harness run: QPS, server CPU us/query and peak memory
per contender, and our server's ratios against each peer.

  summarize.py [--ours sinkd] RUN_DIR_or_results.json

Reads the harness's results.json (Python 3 stdlib only). Per mode and
contender: median QPS (clean runs; all runs if none was clean) for the
cache-hit and cache-miss scenarios (and `blocked` if it was run), median
server CPU us/query, VmHWM of the server process tree at the end of the load
phase, and run quality. Ratios are ours/peer: for QPS > 1x means we are
faster, for us/query and memory < 1x means we are cheaper. Problems (failed
starts, sanity failures, lost queries, wrong rcodes, noisy runs, latency-run
timeouts) are listed below the table.
"""
import argparse
import json
import os
import sys


def fnum(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


def scen_stats(m, scen):
    """(qps median, us/query median, summary, runs) for one scenario, or Nones."""
    sc = (m.get("scenarios") or {}).get(scen)
    if not sc:
        return None, None, None, []
    s = sc.get("summary", {})
    return s.get("qps_med"), s.get("us_per_q"), s, sc.get("runs", []) + sc.get("latency_runs", [])


def run_problems(name, mode, scen, s, runs):
    out = []
    tp = [r for r in runs if "attempt" in r]  # throughput runs (latency runs have no attempt)
    lat = [r for r in runs if "attempt" not in r]
    sent = sum(r.get("sent", 0) for r in tp)
    lost = sum(r.get("lost", 0) for r in tp)
    if lost:
        out.append("%s %s %s: %d of %d queries lost (%.3f%%)" % (name, mode, scen, lost, sent, 100.0 * lost / max(sent, 1)))
    for r in tp:
        why = []
        if r.get("rc") not in (0, None):
            why.append("dnsperf rc=%s" % r.get("rc"))
        if r.get("ok_frac", 1.0) <= 0.999:
            why.append("expected rcodes %.4f, rcodes %s" % (r.get("ok_frac", 0), r.get("rcodes")))
        if r.get("foreign_cores", 0) >= 0.10:
            why.append("other processes %.2f cores" % r["foreign_cores"])
        if r.get("steal_cores", 0) >= 0.25:
            why.append("steal %.2f cores" % r["steal_cores"])
        if not r.get("clean", True) and why:
            out.append("%s %s %s #%s not clean: %s" % (name, mode, scen, r.get("attempt"), "; ".join(why)))
        elif not r.get("clean", True):
            out.append("%s %s %s #%s not clean" % (name, mode, scen, r.get("attempt")))
    to = sum(r.get("timeouts", 0) for r in lat)
    if to:
        out.append("%s %s %s: %d timeouts in the fixed-rate latency runs" % (name, mode, scen, to))
    bad_lat = [r.get("rcodes") for r in lat if r.get("rcodes") and set(r["rcodes"]) - {"NOERROR", "NXDOMAIN"}]
    if bad_lat:
        out.append("%s %s %s: unexpected rcodes in latency runs: %s" % (name, mode, scen, bad_lat))
    if s and s.get("clean", 0) < len(tp) and s.get("clean", 0) == 0:
        out.append("%s %s %s: no clean run; the numbers use all %d runs" % (name, mode, scen, len(tp)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run directory (with results.json) or the results.json file")
    ap.add_argument("--ours", default="sinkd", help="contender to compare against the others")
    a = ap.parse_args()
    path = a.run if a.run.endswith(".json") else os.path.join(a.run, "results.json")
    with open(path) as f:
        res = json.load(f)
    meta = res.get("_meta", {})
    args = meta.get("args", {})
    names = [c["name"] for c in args.get("contenders", [])] or [k for k in res if k != "_meta"]
    scens = [s for s in ("hit", "miss", "blocked") if s in args.get("scenarios", ["hit", "miss"])]
    peers = [n for n in names if n != a.ours]
    L, problems, notes = [], [], []
    L.append("run %s  (%s .. %s)" % (meta.get("run_id", "?"), meta.get("started", "?"), meta.get("finished", "?")))
    L.append("dnsperf -c %s -q %s -l %s, %s clean reps wanted per cell (median); latency @%s qps; "
             "blocklist %s entries" % (args.get("clients"), args.get("outstanding"), args.get("duration"),
                                       args.get("reps"), args.get("lat_qps"), args.get("size")))
    for mode in args.get("modes", ["pinned"]):
        L.append("")
        L.append("mode %s" % mode)
        hdr = ["contender"]
        for s in scens:
            hdr.append("%s qps" % s)
        for s in scens:
            hdr.append("%s us/q" % s)
        for s in scens:
            hdr.append("%s p50/p99 ms" % s)
        hdr += ["VmHWM MiB", "clean runs", "lost %"]
        rows, vals = [], {}
        for n in names:
            m = res.get(n, {}).get("load", {}).get(mode, {})
            if m.get("error") or not m.get("scenarios"):
                rows.append([n, "FAILED: %s" % m.get("error", "not run")])
                problems.append("%s %s: %s (see work/%s.%s/server.log)" % (n, mode, m.get("error", "not run"), n, mode))
                continue
            san = m.get("sanity", {})
            skipped = [k for k, v in san.items() if isinstance(v, str)]
            if skipped:
                notes.append("%s %s: sanity %s" % (n, mode, "; ".join("%s %s" % (k, san[k]) for k in skipped)))
            st = {s: scen_stats(m, s) for s in scens}
            hwm = m.get("hwm_end_kb")
            vals[n] = dict(st=st, hwm=hwm)
            clean, lost = [], []
            for s in scens:
                q, u, summ, runs = st[s]
                if summ:
                    clean.append("%s/%s" % (summ.get("clean"), summ.get("n_attempts")))
                    lost.append(fnum(summ.get("lost_pct"), "%.2f"))
                    problems.extend(run_problems(n, mode, s, summ, runs))
                else:
                    clean.append("-")
                    lost.append("-")
            lat = ["%s/%s" % (fnum((st[s][2] or {}).get("p50_ms"), "%.2f"), fnum((st[s][2] or {}).get("p99_ms"), "%.2f"))
                   for s in scens]
            rows.append([n] + [fnum(st[s][0]) for s in scens] + [fnum(st[s][1], "%.1f") for s in scens] + lat
                        + [fnum(hwm / 1024 if hwm else None, "%.1f"), " ".join(clean), " ".join(lost)])
        width = [max(len(str(r[i])) for r in [hdr] + [r for r in rows if len(r) > i]) for i in range(len(hdr))]
        L.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(hdr, width))))
        for r in rows:
            if len(r) == 2:
                L.append("%s  %s" % (r[0].ljust(width[0]), r[1]))
            else:
                L.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, width))))
        if a.ours in vals and peers:
            o = vals[a.ours]
            L.append("%s vs peers (%s/peer; qps >1x = %s faster; us/q, p50 and VmHWM <1x = %s cheaper/faster):" % (
                a.ours, a.ours, a.ours, a.ours))
            for p in peers:
                if p not in vals:
                    L.append("  %s/%s  - (peer failed)" % (a.ours, p))
                    continue
                v = vals[p]
                p50 = lambda x, s: (x["st"][s][2] or {}).get("p50_ms")
                L.append("  %s/%s  qps %s | us/q %s | p50 %s | VmHWM %s" % (
                    a.ours, p,
                    "  ".join("%s %s" % (s, ratio(o["st"][s][0], v["st"][s][0])) for s in scens),
                    "  ".join("%s %s" % (s, ratio(o["st"][s][1], v["st"][s][1])) for s in scens),
                    "  ".join("%s %s" % (s, ratio(p50(o, s), p50(v, s))) for s in scens),
                    ratio(o["hwm"], v["hwm"])))
    L.append("")
    if notes:
        L.append("notes:")
        L.extend("  " + p for p in notes)
    if problems:
        L.append("problems / run quality:")
        L.extend("  " + p for p in problems)
    else:
        L.append("problems: none (no lost queries, expected rcodes, all runs clean)")
    print("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
