#!/bin/sh
# The whole comparison in one command (about 40 minutes on 2 cores):
#
#   bench/compare.sh [--skip-setup] [--skip-build]
#
# 1. pinned/rR/X/ three rounds; in each, every server once (X is its initial:
#                 dnsmasq, Unbound, PowerDNS Recursor, Knot Resolver, sinkd;
#                 one letter, as PowerDNS Recursor's control socket path must
#                 stay within 107 bytes), in an order
#                 that changes from round to round: start with the 1M list,
#                 then blocked/hit/miss load (bench/run.sh, the shared
#                 harness), and right after each server the floor
#                 (bench/floor.sh: CPU per query of the do-nothing responder,
#                 into floor.txt). Each server's own share is taken against
#                 the floor of its own minutes, and the machine's drift falls
#                 on every server alike.
# 2. latency/     bench/latency.py: every server and the floor up at once,
#                 latency at 2,000 q/s measured round-robin, five rounds
# 3. unpinned/rR/ three rounds of sinkd pinned with one thread and unpinned
#                 with two, same load, which goes first alternating
# 4. size-N/rR/   sinkd, blocked names, lists of 1k, 100k and 1M names: three
#                 rounds, each round every size once, each size first once
# 5. reload-N/    bench/reload.py three times: the 1M list reloaded under 20k q/s
# 6. RESULTS.md   bench/report.py over all of it, also copied to bench/RESULTS.md
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
# turned N ITEM...: the items turned by N-1 places (round N starts with item N).
turned() {
  n=$1; shift
  while [ "$n" -gt 1 ]; do first=$1; shift; set -- "$@" "$first"; n=$((n - 1)); done
  echo "$@"
}
mkdir -p "$OUT"
echo "compare: results in $OUT"

# The order changes from round to round: no server holds the same place in
# every round, and sinkd is not always the one next to the floor.
for round in 1 2 3; do
  case $round in
    1) ORDER="dnsmasq unbound pdns-recursor kresd sinkd" ;;
    2) ORDER="sinkd pdns-recursor kresd dnsmasq unbound" ;;
    3) ORDER="kresd unbound sinkd dnsmasq pdns-recursor" ;;
  esac
  for server in $ORDER; do
    case $server in
      sinkd) WHO="--builtin none" ;;
      *) WHO="--no-sinkd --builtin $server" ;;
    esac
    initial=$(printf %.1s "$server")
    # shellcheck disable=SC2086
    "$HERE/run.sh" $SETUP $BUILD $WHO --reps 1 --lat-reps 0 --out "$OUT/pinned/r$round/$initial"
    SETUP=--skip-setup BUILD=--skip-build
    "$HERE/floor.sh" "$round" "$server" | tee -a "$OUT/floor.txt"
  done
done
python3 "$HERE/latency.py" --out "$OUT/latency"
for round in 1 2 3; do
  case $round in
    2) MODES=unpinned,pinned ;;
    *) MODES=pinned,unpinned ;;
  esac
  "$HERE/run.sh" --skip-setup --skip-build --builtin none --modes "$MODES" --phases load \
    --reps 1 --lat-reps 0 --out "$OUT/unpinned/r$round"
done
for round in 1 2 3; do
  # Each size goes first once: a fixed order put 1k first in every round and
  # showed up as a cost of list size.
  for size in $(turned "$round" 1000 100000 1000000); do
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
