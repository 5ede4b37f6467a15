#!/usr/bin/env bash
# The load generator's mix while the platform's stores fail under it: a PostgreSQL and a Redis
# of the run's own (tools/wrk/start-bourse.sh, BOURSE_PERF_POSTGRES=private and
# BOURSE_PERF_REDIS=private), `bourse serve all`, loadgen trading BTC-USD at a constant rate. A
# quarter of the way into the trading Redis is shut down without saving and started again
# empty after STORE_DOWN_SECS (3) — a broker that forgot every stream, consumer group and
# rate-limit bucket (ADR 0013); a quarter later PostgreSQL crashes (`pg_ctl stop -m immediate`:
# no checkpoint, every session cut) and is started again after the same wait, recovering from
# its WAL. Then loadgen's invariants, as after any run: nothing acknowledged is lost, nothing
# is done twice, every trade settles once.
#   cargo build --release -p bourse -p loadgen && tools/loadgen/restart-stores.sh [rate] [seconds] [accounts]
# RESTART_STORES: which outages, in order (default "redis postgres"); also "redis-pause" and
# "postgres-pause": the server (every PostgreSQL process) stopped with SIGSTOP for
# STORE_DOWN_SECS and continued — sockets open, nothing answering, the stall a frozen VM or a
# saturated disk gives. Prints each outage, then loadgen's report; exits as loadgen does (1 on
# a violated invariant). Needs the PostgreSQL server binaries (pg_config --bindir) and
# redis-server.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-400}
seconds=${2:-60}
accounts=${3:-32}
down_secs=${STORE_DOWN_SECS:-3}
read -r -a stores <<< "${RESTART_STORES:-redis postgres}"
export BOURSE_PERF_POSTGRES=private BOURSE_PERF_REDIS=private
source tools/wrk/start-bourse.sh
source tools/loadgen/with-loadgen.sh
loadgen --symbol BTC-USD --duration-secs "$seconds" > /tmp/loadgen-restart-stores.out &
loadgen=$!
# A stopped server is continued whatever happens to this script.
stopped=()
trap 'if ((${#stopped[@]})); then kill -CONT "${stopped[@]}" 2>/dev/null; fi; stop_all' EXIT
until_trading $loadgen /tmp/loadgen-restart-stores.out BTC-USD

for store in "${stores[@]}"; do
  sleep $((seconds / 4))
  case $store in
    redis)
      redis-cli -p "$redis_port" shutdown nosave > /dev/null 2>&1 || true
      echo "redis shut down without saving; back, empty, in ${down_secs} s"
      sleep "$down_secs"
      start_redis
      echo "redis started again, empty"
      ;;
    redis-pause)
      redis_pid=$(redis-cli -p "$redis_port" info server | tr -d '\r' | awk -F: '/^process_id:/ { print $2 }')
      stopped=("$redis_pid")
      kill -STOP "${stopped[@]}"
      echo "redis stopped with SIGSTOP for ${down_secs} s"
      sleep "$down_secs"
      kill -CONT "${stopped[@]}"
      echo "redis continued"
      ;;
    postgres-pause)
      postmaster=$(head -1 "$pg_dir/data/postmaster.pid")
      mapfile -t pg_pids < <(echo "$postmaster"; pgrep -P "$postmaster")
      stopped=("${pg_pids[@]}")
      kill -STOP "${stopped[@]}"
      echo "postgres stopped with SIGSTOP (${#pg_pids[@]} processes) for ${down_secs} s"
      sleep "$down_secs"
      kill -CONT "${stopped[@]}"
      echo "postgres continued"
      ;;
    postgres)
      "${as_postgres[@]}" "$pg_bin/pg_ctl" stop -m immediate -D "$pg_dir/data" > /dev/null
      echo "postgres crashed (stop -m immediate); back in ${down_secs} s"
      sleep "$down_secs"
      start_postgres
      echo "postgres started again (crash recovery)"
      ;;
  esac
done

status=0
wait $loadgen || status=$?
cat /tmp/loadgen-restart-stores.out
exit $status
