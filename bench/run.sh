#!/bin/sh
# Benchmark sinkd beside dnsmasq and unbound on loopback with the shared
# harness (/work/shared/bench, used read-only). See bench/README.md.
#
#   bench/run.sh                                  # pinned, blocked+hit+miss, 1M list, 10 s x 3 reps
#   bench/run.sh --duration 5 --reps 1            # quick look (~4 min)
#   bench/run.sh --modes pinned,unpinned --duration 15   # any bench.py option overrides the defaults
#   bench/run.sh --skip-setup --skip-build -- --lat-reps 1
#   bench/run.sh --rev HEAD                       # benchmark a commit, not the working tree
#
# Own options (before the harness options): --skip-setup (no apt/rustup),
# --skip-build (use the existing binary), --rev REV (build commit REV from a
# `git archive` export in bench/.build instead of the working tree, which may
# be mid-edit), --no-sinkd (peers only: sinkd is not added as a contender),
# --dry-run (print the command only).
# Environment: SINKD_BIN (binary, default target/release/sinkd), SINKD_HARNESS
# (harness dir, default /work/shared/bench), SINKD_CACHE_SIZE (default 100000).
set -eu
HERE=$(dirname "$(readlink -f "$0")")
REPO=$(dirname "$HERE")
HARNESS=${SINKD_HARNESS:-/work/shared/bench}
export SINKD_HARNESS="$HARNESS"
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin:$HOME/.cargo/bin
SETUP=1 BUILD=1 DRY=0 REV="" SINKD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-setup) SETUP=0; shift ;;
    --skip-build) BUILD=0; shift ;;
    --dry-run) DRY=1; shift ;;
    --no-sinkd) SINKD=0; shift ;;
    --rev) REV=$2; shift 2 ;;
    --rev=*) REV=${1#--rev=}; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; echo; echo "harness options:"; exec python3 "$HARNESS/bench.py" --help ;;
    *) break ;;
  esac
done

# --- 1. tools (Debian 12, root) ---------------------------------------------
# The harness's setup.sh also builds hickory-dns (a long `cargo install`),
# which is left out here. dnsmasq-base has the same binary as dnsmasq but no
# service.
apt_install() {
  [ "$(id -u)" = 0 ] || { echo "run.sh: need packages ($*): run as root or install them" >&2; exit 1; }
  TMP_POLICY=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # don't let package services start on :53
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; TMP_POLICY=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  [ -n "$TMP_POLICY" ] && rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then
    for s in dnsmasq unbound nsd pdns-recursor kresd@1; do systemctl disable --now "$s" 2>/dev/null || true; done
  fi
}
if [ "$SETUP" = 1 ]; then
  PKGS=""
  for t in dnsperf:dnsperf nsd:nsd unbound:unbound dnsmasq:dnsmasq-base pdns_recursor:pdns-recursor \
           kresd:knot-resolver taskset:util-linux python3:python3; do
    command -v "${t%%:*}" >/dev/null 2>&1 || PKGS="$PKGS ${t#*:}"
  done
  command -v cargo >/dev/null 2>&1 || { echo "run.sh: needs a Rust toolchain (cargo)" >&2; exit 1; }
  # shellcheck disable=SC2086
  [ -z "$PKGS" ] || apt_install $PKGS
fi
for t in dnsperf nsd unbound dnsmasq taskset python3; do
  command -v "$t" >/dev/null 2>&1 || { echo "run.sh: missing $t (run without --skip-setup)" >&2; exit 1; }
done
[ -f "$HARNESS/bench.py" ] || { echo "run.sh: no harness at $HARNESS" >&2; exit 1; }

# --- 2. build ------------------------------------------------------------------
DESC="working tree $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
if [ -n "${SINKD_BIN:-}" ]; then
  BIN=$SINKD_BIN DESC="SINKD_BIN"
elif [ -n "$REV" ]; then
  SHA=$(git -C "$REPO" rev-parse --verify "$REV^{commit}")
  SRC=$HERE/.build/src-$SHA
  if [ ! -f "$SRC/Cargo.toml" ]; then
    rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
    git -C "$REPO" archive "$SHA" | tar -x -C "$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
  fi
  # own target dir: never overwrites the working tree's target/release/sinkd
  [ "$BUILD" = 0 ] || (cd "$SRC" && CARGO_TARGET_DIR=$HERE/.build/target cargo build --release --bin sinkd)
  BIN=$HERE/.build/target/release/sinkd DESC="commit $SHA ($REV)"
else
  if [ "$BUILD" = 1 ] && ! (cd "$REPO" && cargo build --release --bin sinkd); then
    echo "run.sh: the working tree does not build; try --rev HEAD (a committed revision)" >&2; exit 1
  fi
  BIN=$REPO/target/release/sinkd
  # The tree as it was when the binary was built, not as it is now: a later
  # --skip-build run must not label the binary with edits made since.
  BUILT_FROM=$BIN.built-from
  if [ "$BUILD" = 1 ]; then
    echo "$DESC" > "$BUILT_FROM"
  elif [ -f "$BUILT_FROM" ] && [ ! "$BIN" -nt "$BUILT_FROM" ]; then
    DESC=$(cat "$BUILT_FROM")
  fi
fi
[ -x "$BIN" ] || { echo "run.sh: no sinkd binary at $BIN" >&2; exit 1; }
export SINKD_BIN="$BIN"

# --- 3. run ----------------------------------------------------------------------
# Data (blocklists, zone, query files) is cached in bench/.data, results go to
# bench/results/<run-id>: the harness directory itself is read-only.
# Defaults, overridable by the arguments after them (argparse: last one wins):
# every contender carries the same million-name list, as in the harness's
# reference RESULTS.md.
RUN_ID=$(date +%Y%m%d-%H%M%S)
OUT=$HERE/results/$RUN_ID
[ "$SINKD" = 0 ] ||
  set -- --contender "sinkd:domains:$HERE/sinkd-contender.sh {addr} {port} {upstream} {blocklist} {threads} {workdir}" "$@"
set -- --builtin dnsmasq,unbound \
  --modes pinned --phases startup,load --scenarios blocked,hit,miss --size 1000000 \
  --duration 10 --reps 3 \
  --data "$HERE/.data" --out "$OUT" \
  "$@"
prev=""
for x in "$@"; do  # a pass-through --out wins (as in argparse): summarise that dir
  [ "$prev" = --out ] && OUT=$x
  case "$x" in --out=*) OUT=${x#--out=} ;; esac
  prev=$x
done
if [ "$DRY" = 1 ]; then
  printf '%s' "python3 $HARNESS/bench.py"; printf " '%s'" "$@"; echo; exit 0
fi
mkdir -p "$OUT"
{ printf '%s' "SINKD_BIN=$BIN python3 $HARNESS/bench.py"; printf " '%s'" "$@"; echo; } > "$OUT/command.txt"
echo "sinkd: $BIN ($DESC)" | tee -a "$OUT/command.txt"
rc=0
python3 "$HARNESS/bench.py" "$@" || rc=$?

# --- 4. summary ---------------------------------------------------------------
if [ "$SINKD" = 1 ] && [ -f "$OUT/results.json" ]; then
  python3 "$HERE/summarize.py" --ours sinkd "$OUT" | tee "$OUT/summary.txt"
  echo "full tables: $OUT/results.md   server logs: $OUT/work/*/server.log"
fi
exit "$rc"
