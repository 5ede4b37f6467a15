#!/usr/bin/env bash
# End-to-end order entry through the gateway on this machine (docs/performance.md).
# Needs: a release build (cargo build --release -p bourse), wrk, jq, local PostgreSQL and Redis.
# Usage: tools/wrk/measure-order-entry.sh [connections] [duration]
set -euo pipefail
cd "$(dirname "$0")/../.."
connections=${1:-32}
duration=${2:-20s}
source tools/wrk/start-bourse.sh

login() {
  curl -sf http://127.0.0.1:8080/v1/auth/login -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"demo password 1234\"}" | jq -r .access_token
}
BUY_TOKEN=$(login alice@demo.bourse) SELL_TOKEN=$(login bob@demo.bourse) \
  wrk -t2 -c"$connections" -d"$duration" -s tools/wrk/place_orders.lua http://127.0.0.1:8080
# How the matching task batched: sizes and time per batch (orders service metrics).
curl -s http://127.0.0.1:8082/metrics | grep -E '^orders_matching_batch_(size|seconds)_(sum|count)' || true
orders=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.orders")
trades=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.trades")
echo "stored: $orders orders, $trades trades"
