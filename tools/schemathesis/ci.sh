#!/usr/bin/env bash
# The API contract in CI (OPS-09): a fresh `bourse serve all` on its own database, Redis prefix
# and free ports, the demo trader plus an admin and a risk officer, then schemathesis with every
# check and phase as anonymous, trader, risk officer and admin. A fixed seed and 10 examples per
# operation keep it deterministic and short (about a minute). Any failure fails CI.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v schemathesis >/dev/null 2>&1 || pip install --quiet 'schemathesis==4.32.5'
[ -x target/debug/bourse ] || cargo build --quiet --locked -p bourse
BOURSE=target/debug/bourse

run_id="schemathesis_$(date +%s)_$$"
read -r gateway auth orders risk settlement alerting < <(python3 - <<'PY'
import socket
sockets = [socket.socket() for _ in range(6)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
PY
)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${run_id}?sslmode=disable"
export BOURSE_REDIS_KEY_PREFIX="ci:${run_id}" BOURSE_BIND_HOST=127.0.0.1 BOURSE_LOG=warn
export BOURSE_GATEWAY_PORT=$gateway BOURSE_AUTH_PORT=$auth BOURSE_ORDERS_PORT=$orders \
  BOURSE_RISK_PORT=$risk BOURSE_SETTLEMENT_PORT=$settlement BOURSE_ALERTING_PORT=$alerting
export BOURSE_AUTH_ARGON2_MEMORY_KIB=4096 BOURSE_AUTH_ARGON2_ITERATIONS=1

server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  dropdb -h 127.0.0.1 -U postgres --if-exists "$run_id" 2>/dev/null || true
}
trap cleanup EXIT

"$BOURSE" demo seed >/dev/null
echo 'a long admin password' | "$BOURSE" admin create-user --email ops@example.com --role admin >/dev/null
echo 'a long risk password' | "$BOURSE" admin create-user --email risk@example.com --role risk_officer >/dev/null
"$BOURSE" serve all > "target/${run_id}.log" 2>&1 &
server=$!
export API="http://127.0.0.1:${gateway}"
for _ in $(seq 1 60); do
  curl -sf "$API/health/ready" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "target/${run_id}.log"; exit 1; }
  sleep 0.5
done
curl -sf "$API/health/ready" >/dev/null

# One worker: with two threads, CPython's AST compiler once failed inside schemathesis itself
# ("AST constructor recursion depth mismatch", a Runtime Error, not an API failure).
for role in anonymous trader risk admin; do
  echo "schemathesis as $role"
  tools/schemathesis/run.sh "$role" --max-examples 10 --seed 20261203 --workers 1
done
