#!/usr/bin/env python3
"""Reload under load: does rewriting the million-entry list cost queries or latency?

    bench/reload.py [--qps 20000] [--duration 20] [--every 2] [--size 1000000]

sinkd runs as in the harness's pinned mode (one worker thread on CPU1; dnsperf
and the NSD upstream on CPU0) with the harness's million-name list, the query
log and metrics on. dnsperf sends a steady --qps for --duration seconds of
blocked and cache-hit names, twice: once undisturbed (baseline) and once while
the list file is rewritten every --every seconds (each rewrite is a full reload
of the list: parse, build, swap). Reported: lost queries, p50/p99/max latency
over the whole run, and p99 over the queries answered while a reload was
running (from sinkd's own "reloading" / "lists loaded" log lines).

Needs the harness data (bench/run.sh makes it in bench/.data) and dnsperf, nsd.
Loopback only. Results: bench/results/reload-<time>/reload.json and stdout.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
HARNESS = os.environ.get("SINKD_HARNESS", "/work/shared/bench")
PORT, METRICS_PORT, UPSTREAM_PORT = 25380, 25381, 25302


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(log_path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("sinkd exited; see %s" % log_path)
        with open(log_path) as f:
            if "sinkd: ready" in f.read():
                return
        time.sleep(0.05)
    sys.exit("sinkd not ready; see %s" % log_path)


def dnsperf(qfile, qps, duration):
    cmd = ["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-d", qfile,
           "-c", "16", "-q", "500", "-t", "2", "-Q", str(qps), "-l", str(duration), "-v"]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    latencies, lost = [], 0
    for line in out.splitlines():
        if line.startswith("> "):
            parts = line.split()
            if parts[1] == "T":
                lost += 1
            else:
                latencies.append(float(parts[-1]))
    sent = re.search(r"Queries sent:\s+(\d+)", out)
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    return dict(started=started, latencies=latencies, timeouts=lost,
                sent=int(sent.group(1)) if sent else None,
                completed=int(completed.group(1)) if completed else None)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def reload_windows(log_text, t0_wall):
    """(start, end) seconds after t0_wall of each reload, from sinkd's log."""
    def at(line):
        stamp = line.split()[0]
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - t0_wall
    windows, start = [], None
    for line in log_text.splitlines():
        if "reloading:" in line:
            start = at(line)
        elif "lists loaded" in line and start is not None:
            windows.append((start, at(line)))
            start = None
    return windows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qps", type=int, default=20000)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=1000000)
    ap.add_argument("--data", default=os.path.join(HERE, ".data"))
    ap.add_argument("--bin", default=os.environ.get("SINKD_BIN", os.path.join(REPO, "target/release/sinkd")))
    ap.add_argument("--out", help="results directory (default bench/results/reload-<time>)")
    a = ap.parse_args()
    # This script reads dnsperf's per-query lines (20k a second): on sinkd's
    # core it would be load the measurement did not ask for.
    os.sched_setaffinity(0, {0})

    blocklist = os.path.join(a.data, "bl-%d-s42" % a.size, "blocklist.domains.txt")
    blocked = os.path.join(a.data, "q", "blocked-%d-s42.txt" % a.size)
    hits = os.path.join(a.data, "q", "hit-5000.txt")
    zone = os.path.join(a.data, "bench.test.zone")
    for path in (blocklist, blocked, hits, zone):
        if not os.path.exists(path):
            sys.exit("missing %s: run bench/run.sh once to make the harness data" % path)

    out = a.out or os.path.join(HERE, "results", "reload-" + time.strftime("%Y%m%d-%H%M%S"))
    work = os.path.join(out, "work")
    os.makedirs(work)
    list_copy = os.path.join(work, "list.txt")
    shutil.copy(blocklist, list_copy)
    # Half blocked names, half cache hits, interleaved.
    mixed = os.path.join(work, "queries.txt")
    with open(blocked) as b, open(hits) as h, open(mixed, "w") as m:
        hit_lines = h.read().splitlines()
        for i, line in enumerate(b.read().splitlines()[:50000]):
            m.write(line + "\n" + hit_lines[i % len(hit_lines)] + "\n")
    config = os.path.join(work, "sinkd.toml")
    with open(config, "w") as f:
        f.write("""[server]
listen = ["127.0.0.1:%d"]
allow = ["127.0.0.0/8"]
threads = 1
rate_limit = 0
rebind_protection = false
[upstream]
servers = ["udp://127.0.0.1:%d"]
[blocking]
lists = ["list.txt"]
[metrics]
listen = "127.0.0.1:%d"
""" % (PORT, UPSTREAM_PORT, METRICS_PORT))

    upstream = subprocess.Popen(["taskset", "-c", "0", "sh", os.path.join(HARNESS, "upstream.sh"),
                                 str(UPSTREAM_PORT), zone, os.path.join(work, "nsd")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    log_path = os.path.join(work, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen(["taskset", "-c", "1", a.bin, "serve", "-c", config],
                              stdout=log, stderr=subprocess.STDOUT)
    results = {}
    try:
        wait_ready(log_path, server)
        time.sleep(1)
        # Warm the cache with the hit names.
        subprocess.run(["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(PORT), "-d", hits,
                        "-n", "1"], capture_output=True)
        for phase in ("baseline", "reloading"):
            stop = threading.Event()
            rewrites = []

            def rewrite():
                n = 0
                while not stop.wait(a.every):
                    n += 1
                    with open(list_copy, "a") as f:  # a real edit: the content changes
                        f.write("# edit %d\n" % n)
                    rewrites.append(time.time())

            cpu0 = cpu_seconds(server.pid)
            t0_wall = time.time()
            editor = threading.Thread(target=rewrite) if phase == "reloading" else None
            if editor:
                editor.start()
            run = dnsperf(mixed, a.qps, a.duration)
            stop.set()
            if editor:
                editor.join()
            time.sleep(1.5)  # the last reload finishes
            cpu = cpu_seconds(server.pid) - cpu0
            with open(log_path) as f:
                windows = [w for w in reload_windows(f.read(), t0_wall) if w[0] >= 0] if editor else []
            lats = run["latencies"]
            # dnsperf prints answers in the order they arrive, at a steady rate:
            # the i-th answer arrived about i / qps seconds into the run.
            during = [lat for i, lat in enumerate(lats)
                      if any(s <= i / a.qps <= e + 0.01 for s, e in windows)]
            results[phase] = dict(
                sent=run["sent"], completed=run["completed"], lost=run["timeouts"],
                p50_ms=1000 * pct(lats, 0.5), p99_ms=1000 * pct(lats, 0.99),
                max_ms=1000 * max(lats) if lats else None,
                reloads=len(windows), reload_ms=[round(1000 * (e - s)) for s, e in windows],
                p99_during_reload_ms=1000 * pct(during, 0.99) if during else None,
                answers_during_reload=len(during), server_cpu_s=round(cpu, 2))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
        os.killpg(upstream.pid, signal.SIGTERM)
        log.close()

    with open(os.path.join(out, "reload.json"), "w") as f:
        json.dump(dict(args=vars(a), results=results), f, indent=1)
    base, rel = results["baseline"], results["reloading"]
    print("reload under load: %d qps for %d s, list of %d names rewritten every %.0f s (%s)"
          % (a.qps, a.duration, a.size, a.every, out))
    print("%-10s %8s %8s %6s %8s %8s %8s %8s %s" % ("run", "sent", "answered", "lost", "p50 ms", "p99 ms",
                                                 "max ms", "p99 rl", "reloads (ms each)"))
    for name, r in (("baseline", base), ("reloading", rel)):
        print("%-10s %8s %8s %6d %8.3f %8.3f %8.2f %8s %d %s" % (
            name, r["sent"], r["completed"], r["lost"], r["p50_ms"], r["p99_ms"], r["max_ms"] or 0,
            "%.3f" % r["p99_during_reload_ms"] if r["p99_during_reload_ms"] else "-",
            r["reloads"], r["reload_ms"]))
    if base["p99_ms"] and rel["p99_during_reload_ms"]:
        print("p99 while reloading / baseline p99: %.2fx" % (rel["p99_during_reload_ms"] / base["p99_ms"]))


if __name__ == "__main__":
    main()
