#!/usr/bin/env bash
# The load generator's mix while single-replica services are paused one after another: each
# service its own process (tools/wrk/start-bourse.sh), loadgen trading BTC-USD at a constant
# rate; a sixth of the way into the trading each service of PAUSE_SERVICES (default: settlement
# then risk) is stopped with SIGSTOP for PAUSE_SECS (10) and continued — a frozen VM, a node
# under memory pressure. A batch it was in the middle of holds its locks until PostgreSQL ends
# its session (5 s idle inside a transaction, ADR 0014); trades wait for settlement, orders
# are refused while risk cannot check them. Then loadgen's invariants, as after any run.
# PAUSE_BY=kill: the service is killed instead (SIGKILL: no shutdown, a batch cut in the middle,
# events published but not yet acknowledged) and started again after PAUSE_SECS — a crashed pod
# that comes back. PAUSE_BY=term: the service is sent SIGTERM and started again as soon as it
# has exited — a deploy replacing the pod (PAUSE_SECS unused). PAUSE_SERVICES may name any of auth, risk, settlement, orders, alerting and
# gateway: with the gateway down loadgen's requests go unanswered (`no_answer`) and its
# subscribers are cut off, which the stream allows; they connect again within 15 s and catch up
# on what they missed (docs/stream.md, "Reconnecting"), or the report says the stream closed.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/pause-services.sh [rate] [seconds] [accounts]
# Prints each outage, then loadgen's report; exits as loadgen does (1 on a violated invariant).
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-400}
seconds=${2:-60}
accounts=${3:-32}
pause_secs=${PAUSE_SECS:-10}
by=${PAUSE_BY:-pause}
read -r -a paused <<< "${PAUSE_SERVICES:-settlement risk}"
export BOURSE_PERF_PROCESSES=separate
source tools/wrk/start-bourse.sh
# start-bourse.sh started the services in this order.
declare -A pid_of=([auth]=${servers[0]} [risk]=${servers[1]} [settlement]=${servers[2]}
  [orders]=${servers[3]} [alerting]=${servers[4]} [gateway]=${servers[5]})

source tools/loadgen/with-loadgen.sh
loadgen --symbol BTC-USD --duration-secs "$seconds" > /tmp/loadgen-pause-services.out &
loadgen=$!
# A stopped service is continued whatever happens to this script.
trap 'kill -CONT "${pid_of[@]}" 2>/dev/null; stop_all' EXIT

until_trading $loadgen /tmp/loadgen-pause-services.out BTC-USD
for service in "${paused[@]}"; do
  sleep $((seconds / 6))
  if [[ $by == kill ]]; then
    kill -KILL "${pid_of[$service]}"
    echo "$service killed with SIGKILL, back in ${pause_secs} s"
    sleep "$pause_secs"
    "$bin" serve "$service" >> /tmp/bourse-perf.log 2>&1 &
    pid_of[$service]=$!
    servers+=($!)
    echo "$service started again"
  elif [[ $by == term ]]; then
    kill -TERM "${pid_of[$service]}"
    wait "${pid_of[$service]}" || true
    echo "$service stopped by SIGTERM, started again at once"
    "$bin" serve "$service" >> /tmp/bourse-perf.log 2>&1 &
    pid_of[$service]=$!
    servers+=($!)
  else
    kill -STOP "${pid_of[$service]}"
    echo "$service stopped with SIGSTOP for ${pause_secs} s"
    sleep "$pause_secs"
    kill -CONT "${pid_of[$service]}"
    echo "$service continued"
  fi
done

status=0
wait $loadgen || status=$?
cat /tmp/loadgen-pause-services.out
exit $status
