#!/usr/bin/env bash
# The load generator's mix while single-replica services are paused one after another: each
# service its own process (tools/wrk/start-bourse.sh), loadgen trading BTC-USD at a constant
# rate; a sixth of the way into the trading each service of PAUSE_SERVICES (default: settlement
# then risk) is stopped with SIGSTOP for PAUSE_SECS (10) and continued — a frozen VM, a node
# under memory pressure. A batch it was in the middle of holds its locks until PostgreSQL ends
# its session (5 s idle inside a transaction, ADR 0014); trades wait for settlement, orders
# are refused while risk cannot check them. Then loadgen's invariants, as after any run.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/pause-services.sh [rate] [seconds] [accounts]
# Prints each pause, then loadgen's report; exits as loadgen does (1 on a violated invariant).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-400}
seconds=${2:-60}
accounts=${3:-32}
pause_secs=${PAUSE_SECS:-10}
read -r -a paused <<< "${PAUSE_SERVICES:-settlement risk}"
export BOURSE_PERF_PROCESSES=separate
source tools/wrk/start-bourse.sh
# start-bourse.sh started the services in this order.
declare -A pid_of=([auth]=${servers[0]} [risk]=${servers[1]} [settlement]=${servers[2]}
  [orders]=${servers[3]} [alerting]=${servers[4]} [gateway]=${servers[5]})

sql() { psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c "$1"; }
echo 'pause admin password 1234' | "$bin" admin create-user --email pause-admin@example.com --role admin > /dev/null
LOADGEN_ADMIN_PASSWORD='pause admin password 1234' target/release/loadgen \
  --gateway http://127.0.0.1:8080 --admin-email pause-admin@example.com --symbol BTC-USD \
  --rate "$rate" --accounts "$accounts" --subscribers 4 --duration-secs "$seconds" > /tmp/loadgen-pause-services.out &
loadgen=$!
# A stopped service is continued whatever happens to this script.
trap 'kill -CONT "${pid_of[@]}" 2>/dev/null; stop_all' EXIT

# Trading has begun once loadgen's first orders are stored (signing up and funding come first).
until [[ $(sql "SELECT count(*) > 0 FROM orders.orders WHERE symbol = 'BTC-USD'") == t ]]; do
  kill -0 $loadgen 2>/dev/null || { cat /tmp/loadgen-pause-services.out; wait $loadgen; }
  sleep 0.2
done
for service in "${paused[@]}"; do
  sleep $((seconds / 6))
  kill -STOP "${pid_of[$service]}"
  echo "$service stopped with SIGSTOP for ${pause_secs} s"
  sleep "$pause_secs"
  kill -CONT "${pid_of[$service]}"
  echo "$service continued"
done

status=0
wait $loadgen || status=$?
cat /tmp/loadgen-pause-services.out
exit $status
