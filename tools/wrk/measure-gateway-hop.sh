#!/usr/bin/env bash
# What the gateway adds to a request (docs/design.md §6: < 0.5 ms at p50): the same public read,
# GET /v1/instruments, once through the gateway and once straight to orders (docs/performance.md).
# Needs: a release build (cargo build --release -p bourse), wrk, local PostgreSQL and Redis.
# Usage: tools/wrk/measure-gateway-hop.sh [connections] [duration]
set -euo pipefail
cd "$(dirname "$0")/../.."
connections=${1:-1}
duration=${2:-10s}
source tools/wrk/start-bourse.sh

for target in "gateway http://127.0.0.1:8080" "orders http://127.0.0.1:8082"; do
  set -- $target
  echo "== $1"
  wrk -t1 -c"$connections" -d"$duration" --latency "$2/v1/instruments" \
    | grep -E "Requests/sec|^ +(50|90|99)%|Non-2xx"
done
