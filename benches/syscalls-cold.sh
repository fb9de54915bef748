#!/usr/bin/env bash
# Syscall and context-switch counts of the gateway on the introspection-miss path (issue 14,
# item 4): `perf stat` on the gateway while `fapi-gateway bench --scenarios cold` runs.
# Counts per miss = count / (the run's misses per second x SECS).
# Usage: benches/syscalls-cold.sh [cold-tokens] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-80000}
SECS=${2:-8}
OUT=${OUT:-target/profile-cold}
BIN=./target/release/fapi-gateway
mkdir -p "$OUT"
$BIN bench --scenarios cold --generators reqwest --rounds 1 --duration 30 \
  --cold-tokens "$TOKENS" --memory '' > "$OUT/bench-stat.txt" 2>&1 &
BENCH=$!
GW=""
for _ in $(seq 1 600); do
  GW=$(pgrep -P "$BENCH" -f 'run --config .*/gateway/' || true); [ -n "$GW" ] && break; sleep 0.1
done
prev=0
for _ in $(seq 1 600); do
  t=$(awk '{print $14+$15}' /proc/$GW/stat)
  if [ $((t - prev)) -gt 5 ] && [ "$prev" -ne 0 ]; then break; fi
  prev=$t; sleep 0.1
done
perf stat -e 'syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_write,syscalls:sys_enter_read,context-switches' \
  -p "$GW" -o "$OUT/syscalls.txt" -- sleep "$SECS"
wait $BENCH || true
cat "$OUT/syscalls.txt"; grep gateway-cold "$OUT/bench-stat.txt" | head -1
