#!/usr/bin/env bash
# Logical backup of Bourse's database (REL-14): every service's schema in one consistent
# snapshot, the service roles the grants name, and a checksum.
#
#   tools/backup/backup.sh DATABASE_URL OUT_DIR
#
# Writes OUT_DIR/bourse-<UTC time>.dump (pg_dump's custom format: compressed, restorable table
# by table), .roles.sql (the bourse_* roles, without passwords: logins and their passwords live
# in the secret store) and .sha256 over both. Prints the dump's path. Redis is not backed up: it
# holds no record of its own (the outbox tables are the source of every event; ADR 0005).
# Runbook: docs/runbooks/backup-restore.md.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DATABASE_URL OUT_DIR" >&2
  exit 64
fi
url="$1"
out="$2"
mkdir -p "$out"
base="$out/bourse-$(date -u +%Y%m%dT%H%M%SZ)"

# One snapshot for every schema, taken without blocking writers; a serializable-deferrable
# snapshot cannot show an anomaly a running transaction would later make impossible.
# orders.replicas is which processes are alive, not data: a restored copy must not believe the
# original's orders replicas own its books (it would forward orders to them; ADR 0014).
pg_dump --dbname="$url" --format=custom --compress=6 --serializable-deferrable \
  --exclude-table-data=orders.replicas --file="$base.dump.partial"
pg_dumpall --dbname="$url" --roles-only --no-role-passwords \
  | grep -E '^(CREATE|ALTER) ROLE bourse_' >"$base.roles.sql" || true
mv "$base.dump.partial" "$base.dump"
(cd "$out" && sha256sum "$(basename "$base.dump")" "$(basename "$base.roles.sql")" >"$(basename "$base").sha256")
echo "$base.dump"
