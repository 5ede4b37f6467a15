#!/usr/bin/env bash
# The load generator's mix through an orders failover: each service its own process and two
# orders replicas (tools/wrk/start-bourse.sh), loadgen trading BTC-USD at a constant rate; a
# quarter of the way into the trading, the replica that owns BTC-USD is killed (SIGKILL: no
# handover, its lease has to run out), the other must take the symbol over, and the killed one
# comes back and joins again; a quarter later the same again with the new owner. Then loadgen's invariants, as after any run: every 2xx order stored
# once, every trade settled once, reconciliation clean, every account's balances and risk's
# view of them exact, every subscriber given every trade, fill and end of its trader's orders.
# Answers lost with the killed replica (503, no answer) are counted in the report, not
# violations: a client that got none does not know whether its order was booked, and retries
# with its idempotency key (docs/design.md, "Idempotency").
#   cargo build --release -p bourse -p loadgen && tools/loadgen/failover.sh [rate] [seconds] [accounts]
# FAILOVER_BY=pause: the owner is stopped with SIGSTOP instead — its process and sockets stay,
# under load almost always in the middle of a matching batch holding its symbol's owner row —
# and continued with SIGCONT after the takeover, which its batch must not survive (ADR 0014).
# BOURSE_PERF_ORDERS_LISTED=1: the gateway, risk and settlement are given both replicas'
# addresses (ADR 0034) instead of 8082's alone, and step past the one that is gone.
# Prints when each kill, takeover and return happened, then loadgen's report; exits as
# loadgen does (1 on a violated invariant), or 3 when no takeover came within 30 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-400}
seconds=${2:-60}
accounts=${3:-32}
symbol=BTC-USD
by=${FAILOVER_BY:-kill}
export BOURSE_PERF_PROCESSES=separate BOURSE_PERF_ORDERS_REPLICAS=2
source tools/wrk/start-bourse.sh
source tools/loadgen/with-loadgen.sh

owner() {
  sql "SELECT r.address || ' ' || o.epoch FROM orders.symbol_owners o
         JOIN orders.replicas r ON r.id = o.replica WHERE o.symbol = '$symbol'"
}
millis() { date +%s%3N; }

loadgen --symbol "$symbol" --duration-secs "$seconds" > /tmp/loadgen-failover.out &
loadgen=$!
until_trading $loadgen /tmp/loadgen-failover.out "$symbol"
# start-bourse.sh started orders on 8082 (the one the gateway calls) and a second replica on 8092.
declare -A pid_on=([8082]=${servers[3]} [8092]=${servers[-1]})
# Two rounds, a quarter of the run apart. The first owner is the replica the gateway calls, whose
# death fails every call until it is back (unless the callers list both replicas). It comes back second in line: the fair share leaves
# the symbol with the replica that took it over (ownership.rs, `plan`), so the second round
# kills the replica that 8082 forwards the symbol's orders to.
for round in 1 2; do
  sleep $((seconds / 4))
  read -r address epoch <<< "$(owner)"
  if [[ $address == *:8092* ]]; then port=8092; else port=8082; fi
  killed_at=$(millis)
  if [[ $by == pause ]]; then signal=STOP; else signal=KILL; fi
  kill -$signal "${pid_on[$port]}"
  echo "round $round: stopped the owner of $symbol (orders on $port, epoch $epoch) with SIG$signal"

  # The takeover: the symbol's epoch moves on, under the other replica.
  taken=""
  for _ in $(seq 1 300); do
    read -r now_address now_epoch <<< "$(owner)"
    if (( now_epoch > epoch )) && [[ $now_address != *:$port* ]]; then taken=$(millis); break; fi
    sleep 0.1
  done
  if [[ -z $taken ]]; then
    echo "no takeover of $symbol within 30 s"
    kill -CONT "${pid_on[$port]}" 2>/dev/null || true; kill $loadgen; exit 3
  fi
  echo "round $round: taken over by $now_address (epoch $now_epoch) $(( taken - killed_at )) ms after the kill"

  # The replica comes back on its port (a paused one continues) and joins the same books.
  if [[ $by == pause ]]; then
    kill -CONT "${pid_on[$port]}"
  else
    BOURSE_ORDERS_PORT=$port "$bin" serve orders >> /tmp/bourse-perf.log 2>&1 &
    pid_on[$port]=$!
    servers+=($!)
  fi
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" > /dev/null && break; sleep 0.2; done
  echo "round $round: orders on $port back $(( $(millis) - killed_at )) ms after the kill"
done

status=0
wait $loadgen || status=$?
cat /tmp/loadgen-failover.out
exit $status
