#!/usr/bin/env bash
# A load-generator run against a release `bourse serve all` on a fresh database (the limits of
# tools/wrk/start-bourse.sh lifted, every check still running), then its invariants.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/measure.sh [rate] [seconds] [accounts]
# Prints loadgen's report; exits as loadgen does (1 on a violated invariant).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-1000}
seconds=${2:-30}
accounts=${3:-64}
source tools/wrk/start-bourse.sh

echo 'perf admin password 1234' | "$bin" admin create-user --email perf-admin@example.com --role admin > /dev/null
LOADGEN_ADMIN_PASSWORD='perf admin password 1234' target/release/loadgen \
  --gateway http://127.0.0.1:8080 --admin-email perf-admin@example.com \
  --rate "$rate" --duration-secs "$seconds" --accounts "$accounts" --subscribers 4
