#!/usr/bin/env bash
# A development PKI for Bourse's TLS (SEC-13): a CA, and one certificate every service uses as
# server (its listener) and client (mTLS to the services it calls), for the names the services
# have in docker compose (read from docker-compose.yml) and on loopback.
#
#   tools/tls/dev-ca.sh [DIR]        # default: .tls/ (git-ignored)
#
# Writes DIR/ca.pem, DIR/ca.key, DIR/service.pem, DIR/service.key; an existing CA is kept, so
# certificates issued again still verify against what clients already trust. The tests issue
# theirs with this script too. Production certificates come from your real CA (Vault PKI,
# cert-manager, …), never from here: this CA's key sits unencrypted on disk.
set -euo pipefail

dir="${1:-.tls}"
mkdir -p "$dir"
umask 077

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
    -subj "/O=Bourse development/CN=Bourse development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$dir/ca.pem"
fi

# Every name on compose's network (the services of docker-compose.yml), so a service added
# there is named here too; then loopback.
compose="$(dirname "$0")/../../docker-compose.yml"
names="DNS:localhost$(awk '/^services:/ { inside = 1; next }
  /^[^ #]/ { inside = 0 }
  inside && /^  [a-z][a-z0-9-]*:$/ { sub(":", "", $1); printf ",DNS:%s", $1 }' "$compose")"
names="$names,IP:127.0.0.1,IP:::1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/service.key" 2>/dev/null
extensions="$(mktemp)"
csr="$(mktemp)"
trap 'rm -f "$extensions" "$csr"' EXIT
cat >"$extensions" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = $names
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl req -new -key "$dir/service.key" -subj "/O=Bourse development/CN=bourse-service" -out "$csr"
openssl x509 -req -in "$csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 397 -sha256 \
  -extfile "$extensions" -out "$dir/service.pem" 2>/dev/null
chmod 644 "$dir/ca.pem" "$dir/service.pem"
echo "development CA and service certificate in $dir/ (ca.pem, service.pem, service.key)"
