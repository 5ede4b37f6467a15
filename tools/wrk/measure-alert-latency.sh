#!/usr/bin/env bash
# How long an operator waits for a page (docs/performance.md; ALR-07, MiFID II RTS 6 asks for
# seconds): from the kill switch's API call to the webhook receiver getting the alert, through
# risk's outbox, its relay, the Redis stream, alerting's consumer and notifier.
# Needs: a release build (cargo build --release -p bourse), python3, jq, local PostgreSQL and Redis.
# Usage: tools/wrk/measure-alert-latency.sh [kill switches]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-20}
source tools/wrk/start-bourse.sh

# The receiver: a real HTTP server on loopback that writes the arrival time of each page.
arrivals=$(mktemp)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$port" "$arrivals" <<'PY' &
import http.server, json, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with open(out, "a") as f:
            f.write(f"{body['alert']['scope']} {time.time()}\n")
        self.send_response(202); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
receiver=$!
trap 'kill $receiver 2>/dev/null; kill $server 2>/dev/null; wait $server 2>/dev/null; psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres' EXIT

echo 'perf admin password 1234' | "$bin" admin create-user --email perf-admin@example.com --role admin > /dev/null
ADMIN=$(curl -sf http://127.0.0.1:8080/v1/auth/login -H 'content-type: application/json' \
  -d '{"email":"perf-admin@example.com","password":"perf admin password 1234"}' | jq -r .access_token)
api() { curl -sf "http://127.0.0.1:8080$1" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' -d "$2"; }
api /v1/admin/alert-channels "{\"name\":\"desk\",\"kind\":\"webhook\",\"target\":\"http://127.0.0.1:$port/hook\"}" > /dev/null
api /v1/admin/alert-rules '{"event_type":"KillSwitchActivated","severity":"critical","channels":["desk"]}' > /dev/null

# One kill switch per symbol scope: each a new alert (a repeat would be deduplicated).
sent=$(mktemp)
for n in $(seq 1 "$count"); do
  echo "symbol:PERF$n-USD $(python3 -c 'import time; print(time.time())')" >> "$sent"
  api /v1/admin/kill-switches "{\"scope\":\"symbol\",\"target\":\"PERF$n-USD\",\"reason\":\"latency probe\"}" > /dev/null
  sleep 0.2 # paced like an operator, not a load test
done
for _ in $(seq 1 100); do [ "$(wc -l < "$arrivals")" -ge "$count" ] && break; sleep 0.1; done
python3 - "$sent" "$arrivals" <<'PY'
import sys
sent = dict(l.split() for l in open(sys.argv[1]))
got = dict(l.split() for l in open(sys.argv[2]))
waits = sorted(float(got[k]) - float(v) for k, v in sent.items() if k in got)
if not waits:
    sys.exit("no page arrived")
p = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
print(f"pages: {len(waits)} of {len(sent)}; kill switch → webhook: "
      f"p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")
PY
