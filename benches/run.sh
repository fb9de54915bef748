#!/usr/bin/env bash
# Reproduces benches/RESULTS.md's load tables on a fresh Debian machine: installs nginx with
# njs (the baselines), cmake, linux-perf (for the profiles in RESULTS.md) and oha from
# crates.io (the second load generator), builds the release binary, and runs every
# scenario over alternating rounds.
#   benches/run.sh [extra `fapi-gateway bench` options, e.g. --duration 20 --rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || need+=(libnginx-mod-http-js)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# oha: the version RESULTS.md was measured with.
OHA_VERSION=1.16.0
if ! oha --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  cargo install oha --version "$OHA_VERSION" --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/fapi-gateway bench --json target/bench.json "$@"
echo "JSON report: target/bench.json"
