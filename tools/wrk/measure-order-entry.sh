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
# Every order holds its funds: give both traders enough for the whole run (through the API,
# as an admin would).
echo 'perf admin password 1234' | "$bin" admin create-user --email perf-admin@example.com --role admin > /dev/null
ADMIN=$(curl -sf http://127.0.0.1:8080/v1/auth/login -H 'content-type: application/json' \
  -d '{"email":"perf-admin@example.com","password":"perf admin password 1234"}' | jq -r .access_token)
for trader in alice@demo.bourse bob@demo.bourse; do
  id=$(curl -sf http://127.0.0.1:8080/v1/auth/me -H "authorization: Bearer $(login $trader)" | jq -r .id)
  for funds in 'USD 10000000000' 'BTC 10000000'; do
    set -- $funds
    curl -sf http://127.0.0.1:8080/v1/admin/deposits -H "authorization: Bearer $ADMIN" \
      -H "idempotency-key: perf-$trader-$1" -H 'content-type: application/json' \
      -d "{\"account_id\":\"$id\",\"asset\":\"$1\",\"amount\":\"$2\"}" > /dev/null
  done
done
BUY_TOKEN=$(login alice@demo.bourse) SELL_TOKEN=$(login bob@demo.bourse) \
  wrk -t2 -c"$connections" -d"$duration" -s tools/wrk/place_orders.lua http://127.0.0.1:8080
# How the matching task batched: sizes and time per batch (orders service metrics).
curl -s http://127.0.0.1:8082/metrics | grep -E '^orders_matching_batch_(size|seconds)_(sum|count)' || true
orders=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.orders")
trades=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.trades")
echo "stored: $orders orders, $trades trades"
# Settlement finality (executed → settled) over the run, from the settlement service's histogram.
# p50 and p99 as the upper bound of the histogram bucket they fall in.
curl -s http://127.0.0.1:8084/metrics | awk '
  /^settlement_finality_seconds_bucket/ { match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; les[n] = le; counts[n] = $2 }
  /^settlement_finality_seconds_count/ { total = $2 }
  /^settlement_finality_seconds_sum/ { sum = $2 }
  END {
    if (total == 0) { print "settlement finality: no trades settled"; exit }
    for (i = 1; i <= n; i++) { if (!p50 && counts[i] >= 0.5 * total) p50 = les[i]; if (!p99 && counts[i] >= 0.99 * total) p99 = les[i] }
    printf "settlement finality over %d trades: mean %.3f s, p50 <= %s s, p99 <= %s s\n", total, sum / total, p50, p99
  }' || true
settled=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM settlement.settled_trades")
echo "settled: $settled of $trades trades when the run ended"
