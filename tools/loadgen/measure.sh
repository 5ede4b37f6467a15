#!/usr/bin/env bash
# A load-generator run against a release `bourse serve all` on a fresh database (the limits of
# tools/wrk/start-bourse.sh lifted, every check still running), then its invariants.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/measure.sh [rate] [seconds] [accounts]
# Prints loadgen's report; exits as loadgen does (1 on a violated invariant, in the warm-up too).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-1000}
seconds=${2:-30}
accounts=${3:-64}
source tools/wrk/start-bourse.sh
source tools/loadgen/with-loadgen.sh
# LOADGEN_WARMUP (seconds, default 10; 0 for none): a run of the same load on accounts of its
# own first, then ANALYZE, then the measured run — a platform that has been running, as a
# deployment is after its first minute. On a fresh database every connection caches plans made
# for empty tables and keeps them as the tables grow: cold, listing an account's orders took
# 9 ms a call instead of a fraction of one (docs/performance.md, "Plans made on empty tables").
warmup=${LOADGEN_WARMUP:-10}
if [[ $warmup != 0 ]]; then
  loadgen --duration-secs "$warmup" > /dev/null
  sql "ANALYZE"
  echo "warmed up for ${warmup} s, then ANALYZE"
fi
loadgen --duration-secs "$seconds"
