#!/usr/bin/env bash
# schemathesis against a running Bourse (the API contract, OPS-09): every check, as one role.
#
#   tools/schemathesis/run.sh <anonymous|trader|risk|admin> [schemathesis options…]
#
# Needs `pip install schemathesis`, a platform on $API (default http://localhost:8080) and, for
# the roles, the users below: `bourse demo seed` (the trader) and `bourse admin create-user` for
# ops@example.com (admin) and risk@example.com (risk_officer) with the passwords below.
# /v1/stream is left out: it speaks WebSocket, which schemathesis does not. schemathesis.toml
# names the few operations that may refuse schema-valid data for rules a schema cannot state;
# hooks.py fails the run if such a refusal is about the request's shape.
set -euo pipefail
API=${API:-http://localhost:8080}
role=${1:?anonymous, trader, risk or admin}; shift
case $role in
  admin) credentials='{"email":"ops@example.com","password":"a long admin password"}' ;;
  risk) credentials='{"email":"risk@example.com","password":"a long risk password"}' ;;
  trader) credentials='{"email":"alice@demo.bourse","password":"demo password 1234"}' ;;
  anonymous) credentials='' ;;
  *) echo "unknown role $role" >&2; exit 2 ;;
esac
auth=()
if [ -n "$credentials" ]; then
  token=$(curl -sf "$API/v1/auth/login" -H 'content-type: application/json' -d "$credentials" | jq -r .access_token)
  auth=(-H "Authorization: Bearer $token")
fi
here=$(cd "$(dirname "$0")" && pwd)
export SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec schemathesis --config-file "$here/schemathesis.toml" run "$API/openapi.json" --checks all \
  --exclude-path /v1/stream "${auth[@]}" "$@"
