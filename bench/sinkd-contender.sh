#!/bin/sh
# sinkd contender for the shared benchmark harness (/work/shared/bench).
# usage: sinkd-contender.sh ADDR PORT UPSTREAM BLOCKLIST THREADS WORKDIR
#   the harness calls it as
#   sinkd-contender.sh {addr} {port} {upstream} {blocklist} {threads} {workdir}
# Writes WORKDIR/sinkd.toml and execs the server in the foreground (the harness
# measures memory/CPU of this process tree and stops it with SIGTERM).
# Binary: $SINKD_BIN, else target/release/sinkd of this repository.
# Cache size: $SINKD_CACHE_SIZE (default 100000 answers).
set -e
HERE=$(dirname "$(readlink -f "$0")")
BIN=${SINKD_BIN:-$HERE/../target/release/sinkd}
ADDR=$1; PORT=$2; UPSTREAM=$3; BL=$(readlink -f "$4"); THREADS=${5:-1}; WD=$6
[ -n "$WD" ] || { echo "usage: $0 ADDR PORT UPSTREAM BLOCKLIST THREADS WORKDIR" >&2; exit 2; }
mkdir -p "$WD"; WD=$(readlink -f "$WD")
CONF=$WD/sinkd.toml
cat > "$CONF" <<CONF
[server]
listen = ["$ADDR:$PORT"]
allow = ["127.0.0.0/8"]
threads = $THREADS
rate_limit = 0          # dnsperf is one client asking 100k queries a second
rebind_protection = false   # the harness zone answers with 10.x addresses

[upstream]
servers = ["udp://$UPSTREAM"]
timeout_ms = 1500

[cache]
size = ${SINKD_CACHE_SIZE:-100000}

[blocking]
lists = ["$BL"]

# As people run it: the query log (querylog.jsonl in WORKDIR, every query)
# and metrics on.
[querylog]
enabled = true

[metrics]
listen = "127.0.0.1:$((PORT + 1000))"
CONF
echo "sinkd-contender: $BIN serve -c $CONF"
exec "$BIN" serve -c "$CONF"
