# Sourced by the measure-*.sh scripts: a fresh database, `bourse demo seed`, then
# `bourse serve all` in the background with the limits lifted; stopped and dropped on exit.
# Needs a release build (cargo build --release -p bourse), local PostgreSQL and Redis.
database="bourse_perf_$$"
# BOURSE_PERF_POSTGRES=private: a PostgreSQL of the run's own (initdb on port 5499, default
# settings like the shared server's, fsync on) with pg_stat_statements loaded — it must be
# preloaded at start, which the shared server is not — so the run ends with the statements that
# cost the most database time, and those planned most often (`track_planning`). Needs the server binaries (pg_config --bindir).
pg_port=5432
if [[ ${BOURSE_PERF_POSTGRES:-shared} == private ]]; then
  pg_port=5499
  pg_dir=$(mktemp -d /tmp/bourse-perf-pg.XXXXXX)
  pg_bin=$(pg_config --bindir)
  as_postgres=()
  if [[ $(id -u) == 0 ]]; then chown postgres: "$pg_dir"; as_postgres=(runuser -u postgres --); fi
  "${as_postgres[@]}" "$pg_bin/initdb" -A trust -U postgres -D "$pg_dir/data" > /dev/null
  # BOURSE_PERF_AUTO_EXPLAIN=1: also log the plan of every statement slower than 2 ms
  # (auto_explain, actual rows), kept in /tmp/bourse-perf-pg.log when the run ends.
  preload=pg_stat_statements options=""
  if [[ ${BOURSE_PERF_AUTO_EXPLAIN:-0} == 1 ]]; then
    preload=pg_stat_statements,auto_explain
    options="-c auto_explain.log_min_duration=2 -c auto_explain.log_analyze=on"
  fi
  # BOURSE_PERF_POSTGRES_SETTINGS: more `-c name=value` for the private server, e.g. the
  # settings docs/performance.md compares ("The database's own settings").
  options="$options ${BOURSE_PERF_POSTGRES_SETTINGS:-}"
  start_postgres() {
    "${as_postgres[@]}" "$pg_bin/pg_ctl" start -w -D "$pg_dir/data" -l "$pg_dir/server.log" \
      -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c shared_preload_libraries=$preload -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on $options" > /dev/null
  }
  start_postgres
  psql -q -h 127.0.0.1 -p $pg_port -U postgres -c "CREATE DATABASE $database" postgres
  psql -q -h 127.0.0.1 -p $pg_port -U postgres -d "$database" -c "CREATE EXTENSION pg_stat_statements"
fi
export PGPORT=$pg_port
# BOURSE_PERF_REDIS=private: a redis-server of the run's own on port 6399, keeping nothing on
# disk — for a run that restarts Redis (tools/loadgen/restart-stores.sh), which must never
# happen to the shared one. Default: the shared server, under a key prefix of the run's own.
redis_port=6379
if [[ ${BOURSE_PERF_REDIS:-shared} == private ]]; then
  redis_port=6399
  start_redis() {
    redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --logfile /tmp/bourse-perf-redis.log > /dev/null
    until redis-cli -p $redis_port ping > /dev/null 2>&1; do sleep 0.1; done
  }
  start_redis
  export REDIS_URL="redis://127.0.0.1:$redis_port"
fi
# BOURSE_PERF_DATABASE_PARAMS: appended to the database URL, e.g. '?sslmode=disable'. Without
# it the client's default (sslmode=prefer) encrypts every statement when the server offers
# TLS — this machine's shared server does (ssl=on); the private one above does not.
# '?host=/var/run/postgresql' connects over the shared server's Unix socket instead of TCP
# (docs/performance.md, "A Unix socket to PostgreSQL").
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$database${BOURSE_PERF_DATABASE_PARAMS:-}"
export BOURSE_REDIS_KEY_PREFIX="perf:$$" BOURSE_LOG=warn BOURSE_BIND_HOST=127.0.0.1
# BOURSE_PERF_TLS=on: the platform's HTTP as production runs it (SEC-13) — the gateway's public
# listener over HTTPS and every service's listener and calls over mutual TLS, with a development
# PKI made for the run (tools/tls/dev-ca.sh); pair it with BOURSE_PERF_DATABASE_PARAMS='?sslmode=require'
# for the database. Redis stays the shared plaintext server. The scripts' own calls go through
# `curl` below and `$base` (https://127.0.0.1:8080; wrk does not verify certificates).
scheme=http
curl_tls=()
if [[ ${BOURSE_PERF_TLS:-off} == on ]]; then
  scheme=https
  tls_dir=$(mktemp -d /tmp/bourse-perf-tls.XXXXXX)
  tools/tls/dev-ca.sh "$tls_dir" > /dev/null
  export BOURSE_TLS_CERT=$tls_dir/service.pem BOURSE_TLS_KEY=$tls_dir/service.key BOURSE_TLS_CA=$tls_dir/ca.pem
  export BOURSE_AUTH_URL=https://127.0.0.1:8081 BOURSE_ORDERS_URL=https://127.0.0.1:8082 \
    BOURSE_RISK_URL=https://127.0.0.1:8083 BOURSE_SETTLEMENT_URL=https://127.0.0.1:8084 \
    BOURSE_ALERTING_URL=https://127.0.0.1:8085
  curl_tls=(--cacert "$tls_dir/ca.pem" --cert "$tls_dir/service.pem" --key "$tls_dir/service.key")
fi
curl() { command curl "${curl_tls[@]}" "$@"; }
base="$scheme://127.0.0.1:8080"
# Measure the system, not the rate limiter: lift the per-principal and per-IP limits.
export BOURSE_GATEWAY_PRINCIPAL_RATE_PER_SEC=1000000 BOURSE_GATEWAY_PRINCIPAL_BURST=1000000
export BOURSE_GATEWAY_IP_RATE_PER_SEC=1000000 BOURSE_GATEWAY_IP_BURST=1000000
export BOURSE_DATABASE_MAX_CONNECTIONS=16
# The load generator is one account per side placing thousands of orders a second that mostly
# rest: lift the per-account risk limits too (the checks still run on every order).
export BOURSE_RISK_MAX_ORDERS_PER_SECOND=1000000 BOURSE_RISK_MAX_OPEN_ORDERS=10000000
export BOURSE_RISK_MAX_POSITION=100000000 BOURSE_RISK_MAX_ORDER_NOTIONAL=1000000000

# BOURSE_PERF_BIN: another build to measure (tools/wrk/compare-builds.sh A/B-tests builds).
bin=${BOURSE_PERF_BIN:-target/release/bourse}
"$bin" demo seed > /dev/null
# BOURSE_PERF_PROCESSES=separate: each service its own process on its default port (real HTTP
# and service tokens between them, as deployed); BOURSE_PERF_ORDERS_REPLICAS=2 adds a second
# orders replica on 8092 (the symbols spread over both; the gateway still calls 8082, which
# forwards the other's symbols — ADR 0014). Default: one `serve all` process.
# BOURSE_PERF_ORDERS_LISTED=1, with the second replica: every caller is given both replicas'
# addresses (`BOURSE_ORDERS_URL=…:8082,…:8092`, ADR 0034), takes them in turn and steps past
# one that is gone.
if [[ ${BOURSE_PERF_ORDERS_REPLICAS:-1} == 2 && ${BOURSE_PERF_ORDERS_LISTED:-0} == 1 ]]; then
  export BOURSE_ORDERS_URL="$scheme://127.0.0.1:8082,$scheme://127.0.0.1:8092"
fi
servers=()
if [[ ${BOURSE_PERF_PROCESSES:-all} == separate ]]; then
  declare -A port=([auth]=8081 [risk]=8083 [settlement]=8084 [orders]=8082 [alerting]=8085 [gateway]=8080)
  # Upstreams first: each starts once what it calls answers.
  for service in auth risk settlement orders alerting gateway; do
    "$bin" serve "$service" >> /tmp/bourse-perf.log 2>&1 &
    servers+=($!)
    for _ in $(seq 1 50); do
      curl -sf "$scheme://127.0.0.1:${port[$service]}/health/ready" > /dev/null && break
      sleep 0.2
    done
  done
else
  "$bin" serve all > /tmp/bourse-perf.log 2>&1 &
  servers+=($!)
fi
if [[ ${BOURSE_PERF_ORDERS_REPLICAS:-1} == 2 ]]; then
  BOURSE_ORDERS_PORT=8092 "$bin" serve orders >> /tmp/bourse-perf.log 2>&1 &
  servers+=($!)
fi
stop_all() {
  # Some may have exited already (a run that stops the platform itself).
  kill "${servers[@]}" 2>/dev/null || true; wait "${servers[@]}" 2>/dev/null || true
  # BOURSE_PERF_KEEP=1: the run's database (and a private server, still running) and Redis keys
  # stay for a look afterwards — after a violated invariant, say.
  if [[ ${BOURSE_PERF_KEEP:-0} == 1 ]]; then
    echo "kept: $DATABASE_URL, ${REDIS_URL:-redis://127.0.0.1:6379} prefix $BOURSE_REDIS_KEY_PREFIX${pg_dir:+, server data in $pg_dir}" >&2
    return 0
  fi
  # The run's streams (tens of thousands of entries each) would stay in the shared Redis.
  if [[ $redis_port == 6379 ]]; then
    redis-cli --scan --pattern "$BOURSE_REDIS_KEY_PREFIX[.:]*" | xargs -r redis-cli unlink > /dev/null
  else
    redis-cli -p $redis_port shutdown nosave > /dev/null 2>&1 || true
  fi
  if [[ -n ${pg_dir:-} ]]; then
    "${as_postgres[@]}" "$pg_bin/pg_ctl" stop -m fast -D "$pg_dir/data" > /dev/null
    cp "$pg_dir/server.log" /tmp/bourse-perf-pg.log; rm -rf "$pg_dir"
  else
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres
  fi
  [[ -n ${tls_dir:-} ]] && rm -rf "$tls_dir"
  return 0
}
trap stop_all EXIT
for _ in $(seq 1 50); do curl -sf "$base/health/ready" > /dev/null && break; sleep 0.2; done
if [[ ${BOURSE_PERF_ORDERS_REPLICAS:-1} == 2 ]]; then
  # Until both replicas own a symbol.
  for _ in $(seq 1 50); do
    owners=$(psql -qtA -h 127.0.0.1 -U postgres -d "$database" -c \
      "SELECT count(DISTINCT replica) FROM orders.symbol_owners o JOIN orders.replicas r ON r.id = o.replica WHERE r.lease_until > now()")
    [[ $owners == 2 ]] && break
    sleep 0.2
  done
fi
