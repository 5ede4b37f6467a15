#!/usr/bin/env bash
# A graceful stop of `bourse serve all` in the middle of trading: loadgen trades BTC-USD at a
# constant rate, and once it has traded for STOP_AFTER seconds (default 5) the process is sent
# SIGTERM. Prints how long the process took to exit, whether risk handed over (ADR 0023,
# "A handover": the next start need not wait before deciding on funds), and how many outbox
# rows each service left unpublished — events its consumers only learn of when a relay runs
# again. A stopping service's relay stops last and publishes what the service wrote first
# (`Supervisor::spawn_last`), so a clean stop prints 0 for each.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/stop-under-load.sh [rate] [accounts]
# Exits 1 when a row was left unpublished or risk did not hand over.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-400}
accounts=${2:-32}
stop_after=${STOP_AFTER:-5}
source tools/wrk/start-bourse.sh
source tools/loadgen/with-loadgen.sh
# Long enough to outlast the stop: loadgen's own report (its requests go unanswered once the
# gateway has stopped) is not what this run is about.
loadgen --symbol BTC-USD --duration-secs $((stop_after + 30)) > /tmp/loadgen-stop-under-load.out 2>&1 &
loadgen=$!
trap 'kill $loadgen 2>/dev/null || true; stop_all' EXIT
until_trading $loadgen /tmp/loadgen-stop-under-load.out BTC-USD
sleep "$stop_after"

started=$(date +%s%N)
kill -TERM "${servers[0]}"
exited=0
wait "${servers[0]}" || exited=$?
echo "bourse serve all exited $exited after SIGTERM in $(( ($(date +%s%N) - started) / 1000000 )) ms"

violations=0
handed_over=$(sql "SELECT handed_over_at IS NOT NULL FROM risk.starts")
echo "risk handed over: $handed_over"
[[ $handed_over == t ]] || violations=1
for schema in orders settlement risk alerting; do
  left=$(sql "SELECT count(*) FROM $schema.outbox
               WHERE position > (SELECT published_position FROM $schema.outbox_relay)")
  echo "$schema: $left outbox rows left unpublished"
  [[ $left == 0 ]] || violations=1
done
exit $violations
