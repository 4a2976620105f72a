#!/usr/bin/env bash
# Counts slotgate's user-space instructions per request with callgrind (steady under noise).
#
#   cargo build --release && benches/callgrind.sh [get|set] [pipeline] [--admin]
#
# Starts a 3+3 cluster on ports 7600-7605 (deploy/cluster.sh), runs slotgate under callgrind on
# one thread, warms up with 20,000 requests from 50 clients, zeroes the counters, measures the
# next 20,000, and prints instructions per request. --admin installs the metrics recorder.
# SLOTGATE_BIN=path measures another build (an older commit's, for an A/B); SLOTGATE_ARGS adds
# flags (a --config with [[users]] measures the ACL check: see README "Performance").
# SLOTGATE_FUNCTION=Session::dispatch also prints that function's instructions per request,
# callees included: steadier than the total, which moves with how replies batch.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=${1:-get}; PIPE=${2:-1}; ADMIN=()
[ "${3:-}" = --admin ] && ADMIN=(--admin 127.0.0.1:7651)
export CLUSTER_BASE_PORT=7600 CLUSTER_DIR=$(mktemp -d)
OUT=$(mktemp -d)
cleanup() { pkill -f "callgrind-out-file=$OUT" || true; deploy/cluster.sh clean >/dev/null; rm -rf "$OUT"; }
trap cleanup EXIT
deploy/cluster.sh setup >/dev/null
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" ${SLOTGATE_BIN:-target/release/slotgate} \
  --listen 127.0.0.1:7650 --seed 127.0.0.1:7600 --log warn --threads 1 "${ADMIN[@]}" ${SLOTGATE_ARGS:-} >/dev/null 2>&1 &
for _ in $(seq 1 100); do redis-cli -p 7650 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p 7650 -t "$TEST" -n 20000 -c 50 -r 100000 -P "$PIPE" -q >/dev/null 2>&1
PID=$(pgrep -f "callgrind-out-file=$OUT")
callgrind_control -z "$PID" >/dev/null 2>&1
redis-benchmark -p 7650 -t "$TEST" -n 20000 -c 50 -r 100000 -P "$PIPE" -q >/dev/null 2>&1
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 1
TOTAL=$(callgrind_annotate "$OUT/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$TEST pipeline $PIPE${ADMIN:+ (metrics recorder on)}: $TOTAL instructions for 20000 requests, $((TOTAL / 20000)) per request"
if [ -n "${SLOTGATE_FUNCTION:-}" ]; then
  callgrind_annotate --tree=both --inclusive=yes "$OUT/cg.out.1" 2>/dev/null \
    | awk -v f="$SLOTGATE_FUNCTION" 'index($0, "*  ") && index($0, f " ") { gsub(",", "", $1); printf "%s: %.1f instructions per request, callees included\n", f, $1 / 20000; exit }'
fi
