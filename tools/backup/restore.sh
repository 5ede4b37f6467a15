#!/usr/bin/env bash
# Restores a backup made by backup.sh into a new database (REL-14).
#
#   tools/backup/restore.sh BACKUP.dump TARGET_DATABASE_URL
#
# Checks the checksum first (a damaged or altered backup restores nothing), creates the target
# database (it must not exist: a restore never overwrites), creates the service roles that are
# missing, then restores in one transaction: all of it or none. Afterwards point the services
# at the target and run reconciliation (runbook: docs/runbooks/backup-restore.md).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BACKUP.dump TARGET_DATABASE_URL" >&2
  exit 64
fi
dump="$1"
target="$2"
base="${dump%.dump}"

(cd "$(dirname "$dump")" && sha256sum --check --quiet "$(basename "$base").sha256") || {
  echo "restore: checksum mismatch for $dump; nothing restored" >&2
  exit 65
}

# postgres://user@host:port/NAME?params → the server's maintenance database and NAME.
without_query="${target%%\?*}"
query="${target#"$without_query"}"
name="${without_query##*/}"
maintenance="${without_query%/*}/postgres$query"
case "$name" in
  ''|*[!a-zA-Z0-9_]*) echo "restore: database name must be [a-zA-Z0-9_]+, got '$name'" >&2; exit 64 ;;
esac

psql --dbname="$maintenance" --quiet --set ON_ERROR_STOP=1 --command="CREATE DATABASE $name"
# Roles are cluster-wide: on the same cluster they exist already, on a new one they are created.
while IFS= read -r statement; do
  role="$(sed -E 's/^(CREATE|ALTER) ROLE ([a-z_0-9]+).*/\2/' <<<"$statement")"
  exists="$(psql --dbname="$maintenance" -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$role'")"
  case "$statement" in
    CREATE*) [ "$exists" = 1 ] || psql --dbname="$maintenance" --quiet --command="$statement" ;;
    ALTER*) psql --dbname="$maintenance" --quiet --command="$statement" ;;
  esac
done <"$base.roles.sql"
pg_restore --dbname="$target" --exit-on-error --single-transaction "$dump"
echo "restored $dump into $name"
