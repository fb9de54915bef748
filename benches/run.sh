#!/usr/bin/env bash
# Reproduces benches/RESULTS.md's load table on a fresh Debian machine: installs nginx with
# njs (the baseline) and cmake, builds the release binary, and runs every scenario.
#   benches/run.sh [extra `fapi-gateway bench` options, e.g. --duration 20 --concurrency 32]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || need+=(libnginx-mod-http-js)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked
./target/release/fapi-gateway bench --json target/bench.json "$@"
echo "JSON report: target/bench.json"
