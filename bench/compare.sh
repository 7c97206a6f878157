#!/bin/sh
# The whole comparison in one command (about 25 minutes on 2 cores):
#
#   bench/compare.sh [--skip-setup] [--skip-build]
#
# 1. pinned/rR/   three rounds; in each, every peer (dnsmasq, Unbound, PowerDNS
#                 Recursor, Knot Resolver) and sinkd once: start with the 1M
#                 list, then blocked/hit/miss load and latency (bench/run.sh,
#                 the shared harness), and right after them the floor
#                 (bench/floor.sh: CPU per query and latency of the do-nothing
#                 responder, into floor.txt). Each round's own shares are taken
#                 against that round's floor, and the machine's drift over the
#                 minutes falls on every server alike.
# 2. unpinned/    sinkd with two threads and no pinning, same load
# 3. size-N/rR/   sinkd, blocked names, lists of 1k, 100k and 1M names: three
#                 rounds, each round every size once
# 4. reload-N/    bench/reload.py three times: the 1M list reloaded under 20k q/s
# 5. RESULTS.md   bench/report.py over all of it, also copied to bench/RESULTS.md
#
# Everything on loopback. Results in bench/results/c<MMDDhhmm>/.
set -eu
HERE=$(dirname "$(readlink -f "$0")")
HARNESS=${SINKD_HARNESS:-/work/shared/bench}
# Short: PowerDNS Recursor puts a UNIX socket under it (at most 107 bytes).
OUT=$HERE/results/c$(date +%m%d%H%M)
SETUP="" BUILD=""
for arg in "$@"; do
  case "$arg" in
    --skip-setup) SETUP=--skip-setup ;;
    --skip-build) BUILD=--skip-build ;;
    *) echo "usage: $0 [--skip-setup] [--skip-build]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
echo "compare: results in $OUT"

# The peers take turns at going first; sinkd, a --contender, runs after them.
for round in 1 2 3; do
  case $round in
    1) PEERS=dnsmasq,unbound,pdns-recursor,kresd ;;
    2) PEERS=pdns-recursor,kresd,dnsmasq,unbound ;;
    3) PEERS=kresd,unbound,dnsmasq,pdns-recursor ;;
  esac
  "$HERE/run.sh" $SETUP $BUILD --builtin "$PEERS" --reps 1 --lat-reps 2 --out "$OUT/pinned/r$round"
  SETUP=--skip-setup BUILD=--skip-build
  "$HERE/floor.sh" "$round" | tee -a "$OUT/floor.txt"
done
"$HERE/run.sh" --skip-setup --skip-build --builtin none --modes unpinned --phases load --out "$OUT/unpinned"
for round in 1 2 3; do
  for size in 1000 100000 1000000; do
    "$HERE/run.sh" --skip-setup --skip-build --builtin none --phases load --scenarios blocked \
      --size "$size" --reps 1 --lat-reps 0 --out "$OUT/size-$size/r$round"
  done
done
for i in 1 2 3; do
  python3 "$HERE/reload.py" --out "$OUT/reload-$i"
done
python3 "$HERE/report.py" "$OUT" > "$OUT/RESULTS.md"
cp "$OUT/RESULTS.md" "$HERE/RESULTS.md"
echo "compare: wrote $OUT/RESULTS.md and bench/RESULTS.md"
