#!/usr/bin/env bash
# A/B of upstream settings (issue 14, item 3) on one binary, alternating rounds: each variant
# is an environment for `fapi-gateway bench --scenarios no-auth,hot` (the gateways inherit it).
# The h2c variant needs a TEMPORARY patch that reads FAPI_PERF_H2C (not in the repository; the
# method and figures are in RESULTS.md). Usage: benches/upstream-ab.sh ROUNDS SECS VARIANT...
# where VARIANT is `base` or NAME=VALUE, e.g. benches/upstream-ab.sh 3 6 base FAPI_PERF_H2C=100
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=$1; SECS=$2; shift 2
OUT=${OUT:-target/upstream-ab}
BIN=./target/release/fapi-gateway
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for v in "$@"; do
    envv=(); [ "$v" != base ] && envv=("$v")
    steal0=$(awk '/^cpu /{print $9}' /proc/stat)
    env "${envv[@]}" $BIN bench --scenarios no-auth,hot --generators reqwest --rounds 1 \
      --duration "$SECS" --memory '' > "$OUT/$r-$v.txt" 2>&1 &
    B=$!
    sleep $((SECS / 2 + 4))
    conns=$(ss -tn state established 2>/dev/null | wc -l)
    wait $B || true
    steal1=$(awk '/^cpu /{print $9}' /proc/stat)
    grep -E '^gateway-(no-auth|hot) ' "$OUT/$r-$v.txt" | head -2 | \
      awk -v r="$r" -v v="$v" -v c="$conns" -v s="$((steal1 - steal0))" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      '{print r, v, $1, "req/s", $5, "p99", $7, "cpu_us", $8, "sys_us", $9, "est_conns", c, "steal_ticks", s, "load", l}'
  done
done | tee "$OUT/summary.txt"
