#!/usr/bin/env bash
# Profile the gateway's introspection-miss path (issue 14, item 4).
# Runs `fapi-gateway bench --scenarios cold,as` with many distinct tokens and attaches
# `perf record -g` to the gateway process (and, separately, the benchmark's own process,
# which hosts the mock authorization server and the reqwest generator) while the cold
# scenario runs. Usage: benches/profile-cold.sh [cold-tokens] [seconds-of-profile]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-80000}
SECS=${2:-8}
OUT=${OUT:-target/profile-cold}
CG=${CG:-fp}   # fp, or dwarf,16384 for Rust frames without frame pointers
FREQ=${FREQ:-1999}
BIN=./target/release/fapi-gateway
mkdir -p "$OUT"
uptime | tee "$OUT/uptime-start"
head -1 /proc/stat > "$OUT/stat-start"
$BIN bench --scenarios cold,as --generators reqwest --rounds 1 --duration 30 \
  --cold-tokens "$TOKENS" --memory '' > "$OUT/bench.txt" 2>&1 &
BENCH=$!
# the gateway is the bench's child running `run`
GW=""
for _ in $(seq 1 600); do
  GW=$(pgrep -P "$BENCH" -f 'run --config .*/gateway/' || true)
  [ -n "$GW" ] && break
  sleep 0.1
done
echo "bench $BENCH gateway $GW"
# wait until the gateway is busy (cold load started): utime+stime growing fast
prev=0
for _ in $(seq 1 600); do
  t=$(awk '{print $14+$15}' /proc/$GW/stat)
  if [ $((t - prev)) -gt 5 ] && [ "$prev" -ne 0 ]; then break; fi
  prev=$t; sleep 0.1
done
t0=$(awk '{print $14+$15}' /proc/$GW/stat); b0=$(awk '{print $14+$15}' /proc/$BENCH/stat)
perf record -F "$FREQ" --call-graph "$CG" -o "$OUT/gateway.data" -p "$GW" -- sleep "$SECS" 2> "$OUT/perf-gw.err" &
P1=$!
perf record -F "$FREQ" --call-graph "$CG" -o "$OUT/bench.data" -p "$BENCH" -- sleep "$SECS" 2> "$OUT/perf-bench.err" &
P2=$!
wait $P1 $P2
t1=$(awk '{print $14+$15}' /proc/$GW/stat); b1=$(awk '{print $14+$15}' /proc/$BENCH/stat)
echo "gateway ticks during profile: $((t1 - t0)), bench ticks: $((b1 - b0)) (CLK_TCK $(getconf CLK_TCK))" | tee "$OUT/ticks"
wait $BENCH || true
head -1 /proc/stat > "$OUT/stat-end"
uptime | tee "$OUT/uptime-end"
cat "$OUT/bench.txt" | tail -40
