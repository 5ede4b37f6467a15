#!/usr/bin/env bash
# End-to-end order entry through the gateway on this machine (docs/performance.md).
# Needs: a release build (cargo build --release -p bourse), wrk, jq, local PostgreSQL and Redis.
# Usage: tools/wrk/measure-order-entry.sh [connections] [duration] [traders per side]
set -euo pipefail
cd "$(dirname "$0")/../.."
connections=${1:-32}
duration=${2:-20s}
per_side=${3:-1}
# BOURSE_PERF_SYMBOLS (comma-separated, default BTC-USD): the books the orders go to, at random.
# Each symbol is one matching task, one batch at a time; with more than one, their batches
# commit side by side (docs/performance.md, "One book or two").
export SYMBOLS=${BOURSE_PERF_SYMBOLS:-BTC-USD}
# The assets every trader is funded with: the quote (USD) and each symbol's base.
assets="USD $(tr ',' '\n' <<< "$SYMBOLS" | cut -d- -f1 | sort -u | tr '\n' ' ')"
source tools/wrk/start-bourse.sh

login() {
  curl -sf "$base/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" | jq -r .access_token
}
# Every order reserves its funds (risk, ADR 0023): the admin funds each trader for the whole run (through the API).
echo 'perf admin password 1234' | "$bin" admin create-user --email perf-admin@example.com --role admin > /dev/null
ADMIN=$(login perf-admin@example.com 'perf admin password 1234')
# The demo traders on one side each; with more per side, new traders (spreading the load over
# accounts, as real traffic is, instead of two hot accounts).
trader() {
  local email=$1 password=$2 token id funds
  if [[ $email != *@demo.bourse ]]; then
    curl -sf "$base/v1/auth/register" -H 'content-type: application/json' \
      -d "{\"email\":\"$email\",\"password\":\"$password\"}" > /dev/null
  fi
  token=$(login "$email" "$password")
  id=$(curl -sf "$base/v1/auth/me" -H "authorization: Bearer $token" | jq -r .id)
  for asset in $assets; do
    [[ $asset == USD ]] && set -- USD 10000000000 || set -- "$asset" 10000000
    curl -sf "$base/v1/admin/deposits" -H "authorization: Bearer $ADMIN" \
      -H "idempotency-key: perf-$email-$1" -H 'content-type: application/json' \
      -d "{\"account_id\":\"$id\",\"asset\":\"$1\",\"amount\":\"$2\"}" > /dev/null
  done
  # Risk refuses what its own view of an account cannot fund (ADR 0023); that view follows the
  # ledger through a stream, so wait until it has both deposits (or is still loading them).
  for _ in $(seq 1 200); do
    funds=$(curl -s -o /dev/stdout -w '\n%{http_code}' "$base/v1/admin/risk-funds/$id" \
      -H "authorization: Bearer $ADMIN")
    [[ ${funds##*$'\n'} != 200 ]] && break
    # (and decides on it: `deciding` turns true once risk has read the orders committed before its start)
    [[ $(jq --arg assets "$assets" '($assets | split(" ") | map(select(. != ""))) as $want
      | .deciding and ([.balances[].asset | select(IN($want[]))] | length == ($want | length))' \
      <<< "${funds%$'\n'*}") == true ]] && break
    sleep 0.05
  done
  echo "$token"
}
BUY_TOKENS=$(trader alice@demo.bourse 'demo password 1234')
SELL_TOKENS=$(trader bob@demo.bourse 'demo password 1234')
for n in $(seq 2 "$per_side"); do
  BUY_TOKENS="$BUY_TOKENS,$(trader "buyer-$n@perf.example" 'perf trader password 1234')"
  SELL_TOKENS="$SELL_TOKENS,$(trader "seller-$n@perf.example" 'perf trader password 1234')"
done
# BOURSE_PERF_WARMUP (default 10s; 0 for none): load for that long first, then ANALYZE, then
# measure — a platform that has been running, as a deployment is after its first minute. On a
# fresh database the plans each connection caches are made for tables whose statistics say
# "empty", and they scan those tables whole as they grow (docs/performance.md, "Plans made on
# empty tables").
warmup=${BOURSE_PERF_WARMUP:-10s}
if [[ $warmup != 0 ]]; then
  BUY_TOKENS=$BUY_TOKENS SELL_TOKENS=$SELL_TOKENS WRK_RUN="warm-up-$$" \
    wrk -t2 -c"$connections" -d"$warmup" -s tools/wrk/place_orders.lua "$base" > /dev/null
  psql -q -h 127.0.0.1 -U postgres -d "$database" -c "ANALYZE"
  warm_orders=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.orders")
  echo "warmed up: $warm_orders orders, then ANALYZE"
fi
# With BOURSE_PERF_POSTGRES=private, the statement and commit counts below are the load's only.
commits_before=0
if [[ -n ${pg_dir:-} ]]; then
  psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT pg_stat_statements_reset()" > /dev/null
  commits_before=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT sum(xact_commit) FROM pg_stat_database")
fi
wrk_out=$(mktemp /tmp/bourse-wrk.XXXXXX)
# The CPU every program used during the measured run (from /proc, as cpu-by-process.sh reads it):
# per order it is a steadier figure than orders/s on a machine whose speed moves by a fifth
# within minutes, since it does not count the time the load waited for a core. (wrk itself has
# exited by the second snapshot and is not in it.)
cpu_before=$(tools/wrk/cpu-by-process.sh --snapshot)
# Where the write-ahead log stood: what the run wrote to it, per order, is a count of the
# database's writes that the machine's speed does not move (on the shared server it includes any
# other database's writes meanwhile).
wal_lsn() { psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT pg_current_wal_lsn()"; }
wal_before=$(wal_lsn)
# And Redis's own count of the commands it ran, by command: per order, the same kind of yardstick
# for the event streams, the rate limit and the shared state (it includes other clients of the
# server meanwhile). Lines `cmdstat_<name>:calls=<n>,usec=<n>,…`.
redis_commands() { redis-cli info commandstats | tr -d '\r' | awk -F'[:,=]' '/^cmdstat_/ { print substr($1, 9), $3, $5 }' | sort; }
redis_before=$(redis_commands)
BUY_TOKENS=$BUY_TOKENS SELL_TOKENS=$SELL_TOKENS WRK_RUN="measured-$$" \
  wrk -t2 -c"$connections" -d"$duration" -s tools/wrk/place_orders.lua "$base" | tee "$wrk_out"
cpu_after=$(tools/wrk/cpu-by-process.sh --snapshot)
wal_after=$(wal_lsn)
redis_after=$(redis_commands)
# The statements and commits of the order run alone, kept before the public read below adds its
# own (with BOURSE_PERF_POSTGRES=private).
if [[ -n ${pg_dir:-} ]]; then
  psql -q -h 127.0.0.1 -U postgres -d "$database" -c "
    CREATE TABLE perf_statements AS SELECT * FROM pg_stat_statements;
    CREATE TABLE perf_commits AS SELECT sum(xact_commit) AS commits FROM pg_stat_database"
fi
# The public read the budget compares order entry with (docs/design.md §6: aim for a ratio
# ≥ 0.9), measured right after on the same platform, so the ratio holds on a noisy machine.
# Since 2026-12-05 the instrument list is served from the orders replica's memory (ADR 0025),
# about three times the rate of the read with a database round trip it was before: ratios
# from before and after that change do not compare (docs/performance.md).
# BOURSE_PERF_READ (default 10s; 0 for none): how long.
read_for=${BOURSE_PERF_READ:-10s}
if [[ $read_for != 0 ]]; then
  orders_rate=$(awk '/^Requests\/sec:/ { print $2 }' "$wrk_out")
  read_rate=$(wrk -t2 -c"$connections" -d"$read_for" "$base/v1/instruments" | awk '/^Requests\/sec:/ { print $2 }')
  awk -v o="$orders_rate" -v r="$read_rate" 'BEGIN { printf "public GET /v1/instruments: %.0f req/s; orders / read = %.2f\n", r, o / r }'
fi
# How the matching task batched: sizes and time per batch (orders service metrics).
curl -s "$scheme://127.0.0.1:8082/metrics" | grep -E '^orders_matching_(batch_size|batch_seconds|phase_seconds)_(sum|count)' || true
# How many idempotency-key look-ups each statement read together (ADR 0025).
curl -s "$scheme://127.0.0.1:8082/metrics" | grep -E '^idempotency_look_ups_per_read_(sum|count)' || true
# How many orders' pre-trade checks each call to risk carried (ADR 0029).
curl -s "$scheme://127.0.0.1:8082/metrics" | grep -E '^orders_risk_checks_per_call_(sum|count)' || true
# Commands 8082 forwarded to another orders replica that owns the symbol (BOURSE_PERF_ORDERS_REPLICAS=2).
curl -s "$scheme://127.0.0.1:8082/metrics" | grep -E '^orders_forwarded_commands_total' || true
# How large the consumers' batches were, per stream, and how many events the relays published
# (from risk's and settlement's metrics: each process exports its own consumers').
for port in 8083 8084; do
  curl -s "$scheme://127.0.0.1:$port/metrics" | grep -E '^(events_batch_size_(sum|count)|outbox_published_total)' || true
done | sort -u
orders=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.orders")
trades=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM orders.trades")
echo "stored: $orders orders, $trades trades"
# Every 2xx answer of the measured run must be a new order: a replay (a key sent before) is
# answered far more cheaply and would inflate the rate.
answered=$(awk '/^non-2xx answers:/ { print $5 - $3 }' "$wrk_out")
rm -f "$wrk_out"
# CPU per 2xx order of the measured run (milliseconds): the platform's (bourse, PostgreSQL,
# Redis) and, apart, whatever else ran on the machine meanwhile. The platform's processes go by
# the binary's name, or by `bourse` when BOURSE_PERF_BIN is a wrapper script that execs it.
join <(echo "$cpu_before") <(echo "$cpu_after") | awk -v n="$answered" -v bourse="$(basename "$bin" | cut -c1-15)" '
  n > 0 {
    ms = 1000 * ($3 - $2) / n
    if ($1 == bourse || $1 == "bourse") b += ms; else if ($1 == "postgres") p += ms; else if ($1 == "redis-server") r += ms; else other += ms
  }
  END { if (n > 0) printf "CPU per order: %.3f ms (bourse %.3f, postgres %.3f, redis %.3f); other programs %.3f ms\n", b + p + r, b, p, r, other }'
if (( answered > 0 )); then
  psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "
    SELECT format('WAL written per order: %s bytes', round(pg_wal_lsn_diff('$wal_after', '$wal_before') / $answered))"
  # BOURSE_PERF_WAL=1: the same by relation and record type (pg_waldump; root or the private server).
  if [[ ${BOURSE_PERF_WAL:-0} == 1 ]]; then
    tools/wrk/wal-by-relation.sh "$database" "$wal_before" "$wal_after" "$answered" || true
  fi
fi
# Redis commands per order by command (the most frequent first), each with the server's time in
# it per order. A script's own calls count too (the rate limit's GET, SET and TIME run inside its
# EVALSHA, whose time includes theirs). Inside a loaded platform every command's time is inflated
# by the cores it shares, so the counts are the figure to compare (docs/performance.md, "A
# middling machine").
join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 <(echo "$redis_before") <(echo "$redis_after") | awk -v n="$answered" '
  n > 0 && $4 - $2 > 0 { printf "%.3f %s %.2f\n", ($4 - $2) / n, $1, ($5 - $3) / n }' \
  | sort -rn | head -8 | awk '{ line = line sprintf("%s%s %.2f (%.2f µs)", sep, $2, $1, $3); sep = ", " }
      END { if (line != "") print "Redis commands per order (calls, server time per order): " line }'
placed=$((orders - ${warm_orders:-0}))
echo "placed by the measured run: $placed orders for $answered 2xx answers"
# (Requests still in flight when wrk stops may add a few orders it never counted.)
if (( placed < answered )); then
  echo "WARNING: not every 2xx answer placed an order (replays?): the rate above overstates orders/s" >&2
fi
# Settlement finality (executed → settled) over the run, from the settlement service's histogram.
# p50 and p99 as the upper bound of the histogram bucket they fall in.
curl -s "$scheme://127.0.0.1:8084/metrics" | awk '
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
# Then, once every trade has settled (a few seconds at most), the ledger is reconciled: balances
# against transfers, trades against orders' record (settlement's checks, through the gateway).
for _ in $(seq 1 100); do
  (( settled >= trades )) && break
  sleep 0.1
  settled=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "SELECT count(*) FROM settlement.settled_trades")
done
curl -s -X POST "$base/v1/admin/reconciliation" -H "authorization: Bearer $ADMIN" \
  | jq -r '"reconciliation: " + (if .ok then "ok" else "FAILED" end) + " (\(.checks | length) checks)"
           + ([.checks[] | select(.ok | not) | "; \(.name): \(.detail)"] | join(""))' \
  || echo "reconciliation: no answer"
# With BOURSE_PERF_POSTGRES=private: the statements that took the most database time.
if [[ -n ${pg_dir:-} ]]; then
  psql -q -h 127.0.0.1 -U postgres -d "$database" -P pager=off -c "
    SELECT round(total_exec_time)::bigint AS total_ms, calls,
           round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1) AS pct,
           round((total_exec_time / calls)::numeric, 3) AS mean_ms,
           left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM perf_statements WHERE calls > 0 ORDER BY total_exec_time DESC LIMIT 25"
  # Planned on every execution or nearly (`plans` close to `calls`): a statement whose custom
  # plan always looks cheaper than its generic one (docs/performance.md).
  psql -q -h 127.0.0.1 -U postgres -d "$database" -P pager=off -c "
    SELECT round(total_plan_time)::bigint AS plan_ms, plans, calls,
           left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
      FROM perf_statements WHERE plans > 0 ORDER BY total_plan_time DESC LIMIT 12"
  # Whether any statement was JIT-compiled (jit is on by default above jit_above_cost).
  psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "
    SELECT format('jit_functions: %s in %s statements', coalesce(sum(jit_functions), 0),
                  count(*) FILTER (WHERE jit_functions > 0)) FROM perf_statements"
  # Rows written per table, and how many updates were HOT (no new index entries): an update that
  # changes an indexed column, or one a partial index's predicate reads, writes every index again.
  psql -q -h 127.0.0.1 -U postgres -d "$database" -P pager=off -c "
    SELECT schemaname || '.' || relname AS table_name, n_tup_ins AS inserted, n_tup_upd AS updated,
           n_tup_hot_upd AS hot, n_tup_del AS deleted,
           (SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid) AS indexes
      FROM pg_stat_user_tables t WHERE n_tup_ins + n_tup_upd + n_tup_del > 1000
     ORDER BY n_tup_ins + n_tup_upd DESC LIMIT 15"
  measured=$placed
  # What each order cost the database in all (its own writes, settlement, risk's
  # projection, the relays): statements, their execution time, and transactions committed.
  psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "
    SELECT format('per order: %s statements, %s ms of statement time, %s commits',
                  round(sum(calls) / $measured, 1), round((sum(total_exec_time) / $measured)::numeric, 3),
                  round(((SELECT commits FROM perf_commits) - $commits_before) / $measured::numeric, 1))
      FROM perf_statements"
fi
