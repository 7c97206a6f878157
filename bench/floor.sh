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
#
# Without SERVER the tag is just rROUND.
#
# Pinned like the harness's pinned mode: the responder on CPU1, dnsperf on CPU0.
# Its latency is measured beside the servers' by bench/latency.py.
set -eu
HERE=$(dirname "$(readlink -f "$0")")
HARNESS=${SINKD_HARNESS:-/work/shared/bench}
ROUND=$1
TAG=r$ROUND${2:+/$2}
for kind in blocked hit; do
  case $kind in
    blocked) QUERIES=$HERE/.data/q/blocked-1000000-s42.txt ;;
    hit) QUERIES=$HERE/.data/q/hit-5000.txt ;;
  esac
  # measure.sh also builds the responder, into CARGO_TARGET_DIR.
  echo "$TAG $kind $("$HARNESS/floor/measure.sh" plain "$QUERIES")"
done
