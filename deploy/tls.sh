#!/usr/bin/env bash
# Makes development certificates with openssl for conf/tls.toml and local TLS tries: a CA, a
# server certificate for 127.0.0.1 and localhost, and a client certificate, all from that CA.
# Not for production: use your own CA there.
#
#   deploy/tls.sh [DIR]        (default: .tls; existing files are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.tls}
command -v openssl >/dev/null || { echo "missing openssl: apt-get install -y openssl" >&2; exit 1; }
mkdir -p "$DIR"
cd "$DIR"
[ -f ca.crt ] && [ -f server.crt ] && [ -f client.crt ] && { echo "certificates already in $DIR"; exit 0; }
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.crt -days 365 -subj "/CN=slotgate development CA"
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
    -days 365 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf server localhost "subjectAltName=IP:127.0.0.1,DNS:localhost"
leaf client app "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
echo "certificates in $DIR: ca.crt, server.crt/key, client.crt/key"
