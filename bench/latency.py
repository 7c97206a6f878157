#!/usr/bin/env python3
"""Latency at a steady rate, every server up at once and measured in turn.

    latency.py --out DIR [--rounds 5] [--qps 2000] [--seconds 5]

Why not server by server: on a shared machine the wake-up of an idle CPU,
which is most of a query's latency at 2,000 queries/s, drifts by more than
the servers differ over a few minutes. Measured minutes apart, a server's
latency says more about its minutes than about the server. Here every peer,
sinkd and the floor (the do-nothing responder) run side by side, each on its
own port and pinned to CPU1 with one thread, and one round measures each of
them for one run per scenario, in an order shuffled anew every round.
Drift then falls on every server alike, and the median over the rounds
compares servers, not minutes.

The rest is as in the shared harness's latency runs, whose functions this
uses: dnsperf -Q RATE -l SECONDS -v on CPU0, percentiles from the sorted
per-query latencies, NSD upstream on CPU0, the million-name list, the hit
names warmed before every round's hit runs, fresh miss names every round. Writes DIR/latency.json
(one record per run) and DIR/log.txt. Stdlib only.
"""
import argparse
import json
import os
import random
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.environ.get("SINKD_HARNESS", "/work/shared/bench")
sys.path.insert(0, HARNESS)
import bench as harness  # noqa: E402  (the shared harness, found at run time)

PEERS = ("dnsmasq", "unbound", "pdns-recursor", "kresd")
SINKD = ("sinkd", "domains", HERE + "/sinkd-contender.sh {addr} {port} {upstream} {blocklist} {threads} {workdir}")
FLOOR = "floor"
SCENARIOS = ("blocked", "hit", "miss")


def settings(args):
    """The harness's defaults, as bench/run.sh passes them."""
    contenders = [dict(name=n, format=harness.BUILTIN[n][0], cmd=harness.BUILTIN[n][1]) for n in PEERS]
    contenders.append(dict(zip(("name", "format", "cmd"), SINKD)))
    return argparse.Namespace(
        contenders=contenders, data=os.path.join(HERE, ".data"), out=args.out, size=1_000_000, seed=42,
        zone_names=100_000, hit_names=5000, clients=16, outstanding=100, timeout="2",
        duration=args.seconds, start_timeout=600, upstream_port=25301, base_port=25310,
        quiet_wait=60, quiet_cores=0.15)


def floor_binary():
    """The responder bench/floor.sh builds (floor/measure.sh), built here when missing."""
    target = os.environ.get("CARGO_TARGET_DIR", "/tmp/floor-target")
    binary = os.path.join(target, "release", "floor")
    if not os.path.exists(binary):
        harness.run_quiet(["cargo", "build", "--release", "-q", "--target-dir", target,
                           "--manifest-path", os.path.join(HARNESS, "floor", "Cargo.toml")])
    return binary


def start_all(a):
    servers = {}
    for i, c in enumerate(a.contenders):
        blocklist = os.path.join(a.files["bl_dir"], "blocklist.%s.%s" % (c["format"], harness.EXT[c["format"]]))
        proc = harness.start_contender(a, c, a.base_port + i, blocklist, a.files["probe_names"], "1", 1,
                                       "%s.latency" % c["name"])
        proc.port = a.base_port + i
        checks = harness.sanity(proc.port, a)
        if not all(checks.values()):
            raise RuntimeError("%s: sanity check failed: %s" % (c["name"], checks))
        harness.log("%s up on port %d, pid %d, ready in %.2fs" % (c["name"], proc.port, proc.pid, proc.ready_s))
        servers[c["name"]] = proc
    port = a.base_port + len(a.contenders)
    floor = harness.Proc(FLOOR, harness.taskset("1") + [floor_binary(), str(port), "plain"],
                         os.path.join(a.out, "floor.log"))
    floor.port = port
    for _ in range(100):
        if harness.dns_query(port, "host1.bench.test", 0.05) is not None:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the floor did not answer on port %d" % port)
    servers[FLOOR] = floor
    return servers


def warm(a, servers, upstream):
    """The hit names into every cache, as the harness does before its hit runs."""
    for name, proc in servers.items():
        if name == FLOOR:
            continue
        r = harness.dnsperf(a, proc.port, a.files["hit"], "0", ["-n", "1", "-q", "20", "-t", "2"], proc, upstream,
                            "%s.warm" % name, limit=120)
        harness.log("%s warm-up: %d/%d completed" % (name, r.get("completed", 0), r.get("sent", 0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--qps", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "raw"), exist_ok=True)
    harness.LOG = open(os.path.join(args.out, "log.txt"), "a")
    a = settings(args)
    harness.ensure_data(a)
    signal.signal(signal.SIGTERM, harness._on_signal)
    signal.signal(signal.SIGINT, harness._on_signal)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    servers, records = {}, []
    try:
        upstream = harness.start_upstream(a, "0")
        servers = start_all(a)
        for rnd in range(1, args.rounds + 1):
            # A new order every round, the same in every run: no server keeps the same
            # neighbours (a peer's housekeeping after its runs falls on whoever comes next).
            turn = list(servers)
            random.Random(rnd).shuffle(turn)
            miss_names = harness.miss_file(a, "lat-r%d" % rnd, args.qps * args.seconds + 1000)
            for scen in SCENARIOS:
                if scen == "hit":
                    # Again every round: the misses of the round before push hit names out of
                    # a small cache (dnsmasq keeps 10,000 answers), and a hit run must hit.
                    warm(a, servers, upstream)
                for name in turn:
                    if name == FLOOR and scen == "miss":
                        continue  # the floor answers without asking anyone
                    proc = servers[name]
                    if scen == "miss":
                        queries, extra = miss_names, ["-n", "1"]
                    else:
                        queries, extra = a.files[scen], []
                    others = [p.pid for n, p in servers.items() if n != name]
                    idle0 = sum(harness.tree_cpu(pid) for pid in others)
                    r = harness.dnsperf(a, proc.port, queries, "0",
                                        ["-l", str(args.seconds), "-Q", str(args.qps)] + extra,
                                        proc, upstream, "%s.%s.r%d" % (name, scen, rnd), verbose=True)
                    # The idle servers' own housekeeping is this setup's, not the machine's
                    # noise: it is not counted as other processes' CPU.
                    r["cpu_idle_servers"] = sum(harness.tree_cpu(pid) for pid in others) - idle0
                    r["foreign_cores"] = max(0.0, r["cpu_foreign"] - r["cpu_idle_servers"]) / max(r["wall"], 0.001)
                    record = dict(round=rnd, server=name, scenario=scen,
                                  **{k: r.get(k) for k in ("p50", "p90", "p99", "p999", "pmax", "n_lat", "timeouts",
                                                           "sent", "completed", "lost", "rcodes", "wall", "steal",
                                                           "foreign_cores", "cpu_server", "cpu_idle_servers")})
                    records.append(record)
                    harness.log("r%d %-8s %-14s p50 %.3f ms p99 %.3f ms lost %s steal %.2f other %.2f cores "
                                "(idle servers %.2f s)" % (
                        rnd, scen, name, 1000 * (r.get("p50") or 0), 1000 * (r.get("p99") or 0), r.get("lost"),
                        (r.get("steal") or 0) / max(r.get("wall") or 1, 1), r.get("foreign_cores") or 0,
                        r["cpu_idle_servers"]))
    finally:
        for proc in harness.STARTED:
            if proc.alive():
                proc.stop(grace=5)
        meta = dict(rounds=args.rounds, qps=args.qps, seconds=args.seconds, servers=list(servers),
                    sinkd=os.environ.get("SINKD_BIN", os.path.join(os.path.dirname(HERE), "target/release/sinkd")),
                    started=started, finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        with open(os.path.join(args.out, "latency.json"), "w") as f:
            json.dump(dict(args=meta, runs=records), f, indent=1)
        harness.log("wrote", os.path.join(args.out, "latency.json"))


if __name__ == "__main__":
    main()
