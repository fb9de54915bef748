#!/usr/bin/env bash
# Does the upstream keep-alive pool reuse connections (issue 14, item 3)? Counts the
# gateways' connect(2) calls and their established connections to the bank while
# `fapi-gateway bench --scenarios no-auth,hot` runs. Usage: benches/pool-connects.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
OUT=${OUT:-target/pool-connects}
BIN=./target/release/fapi-gateway
mkdir -p "$OUT"
$BIN bench --scenarios no-auth,hot --generators reqwest --rounds 1 --duration "$SECS" \
  --memory '' > "$OUT/bench.txt" 2>&1 &
BENCH=$!
GW=""; PUB=""
for _ in $(seq 1 600); do
  GW=$(pgrep -P "$BENCH" -f 'run --config .*/gateway/' || true)
  PUB=$(pgrep -P "$BENCH" -f 'run --config .*/public/' || true)
  [ -n "$GW" ] && [ -n "$PUB" ] && break; sleep 0.1
done
T=$((2 * SECS + 12))
perf stat -e 'syscalls:sys_enter_connect,syscalls:sys_enter_close,syscalls:sys_enter_accept4' -p "$GW" -o "$OUT/gw.txt" -- sleep "$T" &
S1=$!
perf stat -e 'syscalls:sys_enter_connect,syscalls:sys_enter_close,syscalls:sys_enter_accept4' -p "$PUB" -o "$OUT/pub.txt" -- sleep "$T" &
S2=$!
BANK=$(pgrep -P "$BENCH" -f 'fixture bank' | head -1)
for i in $(seq 1 $((2 * SECS))); do
  echo "$(date +%T) gateway→bank established: $(ss -tnp state established 2>/dev/null | grep -E "pid=($GW|$PUB)," | grep -c ":$(ss -ltnp | grep "pid=$BANK," | awk '{print $4}' | sed 's/.*://' | head -1) " || true)"
  sleep 1
done > "$OUT/established.txt"
wait $BENCH || true
kill -INT $S1 $S2 2>/dev/null || true; wait $S1 $S2 || true
cat "$OUT/gw.txt" "$OUT/pub.txt" | grep -E "syscalls|elapsed"; sort -u -k2 "$OUT/established.txt" | tail -5
grep -E '^gateway-(no-auth|hot)' "$OUT/bench.txt" | head -2
