#!/usr/bin/env bash
# Test PKI for the TLS tests, made fresh each run (nothing long-lived is checked in):
#   ca.crt/key            the CA every cert below chains to
#   server.crt/key        CN=hecate-controller, SAN IP:127.0.0.1 and DNS:localhost
#   worker-0.crt/key, worker-1.crt/key, operator.crt/key   client certificates (CN = the name)
#   rogue.crt/key         a client certificate from another CA (rogue-ca)
# Usage: make_test_certs.sh DIR
set -euo pipefail
D=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$D"
cd "$D"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
ca() {  # ca NAME
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -subj "/CN=$1" -days 2 2>/dev/null
}
cert() {  # cert NAME CA [EXTFILE]
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -out "$1.crt" \
    -days 2 ${3:+-extfile "$3"} 2>/dev/null
  rm -f "$1.csr"
}
ca ca
ca rogue-ca
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
cert server ca server.ext
for n in worker-0 worker-1 operator; do cert "$n" ca client.ext; done
cert rogue rogue-ca client.ext
