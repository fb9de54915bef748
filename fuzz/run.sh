#!/usr/bin/env bash
# Builds every fuzz target and runs each in turn for a bounded time, one process at a time.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 300 s each, every target)
#
# Each target's corpus is kept in fuzz/corpus/<target>/ (committed; minimised after each
# run with `cargo fuzz cmin`, so it holds only inputs that add coverage); the hand-written
# starting inputs are in fuzz/seeds/<target>/. A crash stops the script, with the input in
# fuzz/artifacts/<target>/ (not committed): reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` and make it a unit test of the library.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes -Z flags to
# rustc, which only nightly accepts: RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# AddressSanitizer links on stable x86_64 Linux; FUZZ_SANITIZER=none turns it off. The
# build is optimised with debug assertions and overflow checks on (cargo-fuzz's default),
# so arithmetic overflow on attacker input is a crash too.
set -euo pipefail

cd "$(dirname "$0")"
seconds=${1:-300}
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(authorization client_cert_header route introspection_response json_body config)
fi
export RUSTC_BOOTSTRAP=1
build=(-s "${FUZZ_SANITIZER:-address}")
# -max_len: 4096 bytes hold a certificate header, a path, a config or policy file, and a
# JSON document deep and wide enough for every check; 8192 a token longer than the
# longest accepted (4096) with a proof. Larger inputs only slow the search and swell the
# corpus; -shrink keeps the corpus small. The default is one process (no -jobs/-fork).
max_len() { if [ "$1" = authorization ]; then echo 8192; else echo 4096; fi; }
flags=(-timeout=10 -rss_limit_mb=4096 -shrink=1)

cargo fuzz build "${build[@]}"
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  # One job, one worker. New inputs go to the corpus (the first folder); seeds are only read.
  status=0
  cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    "${flags[@]}" -max_len="$(max_len "$t")" -max_total_time="$seconds" -print_final_stats=1 >"logs/$t.log" 2>&1 || status=$?
  grep -E $'^#[0-9]+\t(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "logs/$t.log" || true
  if [ $status -ne 0 ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "logs/$t.log" >&2 || true
    echo "!! $t failed (exit $status): fuzz/logs/$t.log, fuzz/artifacts/$t/" >&2
    exit 1
  fi
  # Minimise: the fewest inputs that reach every edge reached (-use_counters=0: not every
  # hit count too, which keeps the committed corpus a few hundred KB in all).
  cargo fuzz cmin "${build[@]}" "$t" "corpus/$t" -- "${flags[@]}" -max_len="$(max_len "$t")" -use_counters=0 \
    >"logs/$t.cmin.log" 2>&1
  echo "corpus/$t: $(ls "corpus/$t" | wc -l) files, $(cat "corpus/$t"/* | wc -c) bytes"
done
