# Sourced by the measure-*.sh scripts: a fresh database, `bourse demo seed`, then
# `bourse serve all` in the background with the limits lifted; stopped and dropped on exit.
# Needs a release build (cargo build --release -p bourse), local PostgreSQL and Redis.
database="bourse_perf_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
export BOURSE_REDIS_KEY_PREFIX="perf:$$" BOURSE_LOG=warn BOURSE_BIND_HOST=127.0.0.1
# Measure the system, not the rate limiter: lift the per-principal and per-IP limits.
export BOURSE_GATEWAY_PRINCIPAL_RATE_PER_SEC=1000000 BOURSE_GATEWAY_PRINCIPAL_BURST=1000000
export BOURSE_GATEWAY_IP_RATE_PER_SEC=1000000 BOURSE_GATEWAY_IP_BURST=1000000
export BOURSE_DATABASE_MAX_CONNECTIONS=16
# The load generator is one account per side placing thousands of orders a second that mostly
# rest: lift the per-account risk limits too (the checks still run on every order).
export BOURSE_RISK_MAX_ORDERS_PER_SECOND=1000000 BOURSE_RISK_MAX_OPEN_ORDERS=10000000
export BOURSE_RISK_MAX_POSITION=100000000 BOURSE_RISK_MAX_ORDER_NOTIONAL=1000000000

bin=target/release/bourse
"$bin" demo seed > /dev/null
"$bin" serve all > /tmp/bourse-perf.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres' EXIT
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8080/health/ready > /dev/null && break; sleep 0.2; done
