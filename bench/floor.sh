#!/bin/sh
# bench/floor.sh ROUND [SERVER]: the floor, measured right after SERVER's runs
# in round ROUND (compare.sh), so that each server's own share is taken
# against a floor of the same minutes.
#
# The floor is the harness's do-nothing responder (../shared/bench/floor): it
# flips each query into an answer and does nothing else, so what it costs is
# the kernel's and the machine's share that no server avoids. For the blocked
# and the hit query files this prints, tagged with the round and the server:
#
#   rROUND/SERVER KIND floor plain: Q q/s, server U us/query  (floor/measure.sh, as the harness loads)
#   rROUND/SERVER KIND floor latency: p50 A ms p99 B ms        (dnsperf -Q 2000 -l 5 -v, as the harness)
#
# Without SERVER the tag is just rROUND.
#
# Pinned like the harness's pinned mode: the responder on CPU1, dnsperf on CPU0.
set -eu
HERE=$(dirname "$(readlink -f "$0")")
HARNESS=${SINKD_HARNESS:-/work/shared/bench}
ROUND=$1
TAG=r$ROUND${2:+/$2}
QPS=${FLOOR_LAT_QPS:-2000} LAT_SECONDS=${FLOOR_LAT_SECONDS:-5}
PORT=${FLOOR_PORT:-25399}
for kind in blocked hit; do
  case $kind in
    blocked) QUERIES=$HERE/.data/q/blocked-1000000-s42.txt ;;
    hit) QUERIES=$HERE/.data/q/hit-5000.txt ;;
  esac
  # measure.sh also builds the responder, into CARGO_TARGET_DIR.
  echo "$TAG $kind $("$HARNESS/floor/measure.sh" plain "$QUERIES")"
  taskset -c 1 "${CARGO_TARGET_DIR:-/tmp/floor-target}/release/floor" "$PORT" plain &
  responder=$!
  sleep 0.5
  # Percentiles as the harness takes them: sorted latencies, index int(q * n).
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$PORT" -d "$QUERIES" -c 16 -q 100 -t 2 \
      -Q "$QPS" -l "$LAT_SECONDS" -v 2>&1 |
    awk '/^> / && $2 != "T" { print $NF }' | sort -g |
    awk -v tag="$TAG" -v kind="$kind" '{ l[NR - 1] = $1 }
      END { printf "%s %s floor latency: p50 %.3f ms p99 %.3f ms\n", tag, kind,
            1000 * l[int(0.5 * NR)], 1000 * l[int(0.99 * NR)] }'
  kill "$responder"
  wait "$responder" 2>/dev/null || true
done
