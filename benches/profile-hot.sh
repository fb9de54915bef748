#!/usr/bin/env bash
# The authorization cost on a cache hit (issue 14): `perf record` of the gateway with
# authorization (hot tokens) and of the gateway with authorization off (public route), each
# under its own scenario of one `fapi-gateway bench --scenarios no-auth,hot` run.
# Usage: benches/profile-hot.sh [seconds per scenario]; then
#   perf report -i $OUT/hot.data / $OUT/no-auth.data, or perf script | benches/stack-shares.py
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
OUT=${OUT:-target/profile-hot}
CG=${CG:-dwarf,16384}
FREQ=${FREQ:-500}
BIN=./target/release/fapi-gateway
mkdir -p "$OUT"
uptime | tee "$OUT/uptime-start"; head -1 /proc/stat > "$OUT/stat-start"
$BIN bench --scenarios no-auth,hot --generators reqwest --rounds 1 --duration "$SECS" \
  --memory '' > "$OUT/bench.txt" 2>&1 &
BENCH=$!
GW=""; PUB=""
for _ in $(seq 1 600); do
  GW=$(pgrep -P "$BENCH" -f 'run --config .*/gateway/' || true)
  PUB=$(pgrep -P "$BENCH" -f 'run --config .*/public/' || true)
  [ -n "$GW" ] && [ -n "$PUB" ] && break; sleep 0.1
done
echo "bench $BENCH gateway $GW public $PUB"
T=$((2 * SECS + 15))
perf record -F "$FREQ" --call-graph "$CG" -o "$OUT/hot.data" -p "$GW" -- sleep "$T" 2> "$OUT/perf-hot.err" &
P1=$!
perf record -F "$FREQ" --call-graph "$CG" -o "$OUT/no-auth.data" -p "$PUB" -- sleep "$T" 2> "$OUT/perf-no-auth.err" &
P2=$!
wait $BENCH || true
kill -INT $P1 $P2 2>/dev/null || true
wait $P1 $P2 || true
head -1 /proc/stat > "$OUT/stat-end"; uptime | tee "$OUT/uptime-end"
grep -E '^gateway-(no-auth|hot)|^scenario' "$OUT/bench.txt" | head -4
