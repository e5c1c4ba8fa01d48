#!/usr/bin/env bash
# Makes a self-signed certificate for localhost (and 127.0.0.1, ::1) with
# openssl: DIR/cert.pem and DIR/key.pem. For `make run-server-tls` and the
# scripted openssl sessions; never for production.
#
#   bash tests/tls/make-cert.sh DIR [ec|sec1|rsa]
#
# ec (default): a P-256 key in PKCS#8; sec1: the same key kind as SEC1
# ("EC PRIVATE KEY"); rsa: a 2048-bit RSA key as PKCS#1 ("RSA PRIVATE KEY").
# The certificate is a leaf (CA:FALSE, serverAuth), so rustls clients accept
# it when told to trust it (chat-client --ca DIR/cert.pem).
set -euo pipefail
dir=${1:?usage: make-cert.sh DIR [ec|sec1|rsa]}
kind=${2:-ec}
if ! command -v openssl >/dev/null 2>&1; then
  echo "make-cert.sh: openssl is missing; run 'sudo apt-get install openssl' (or: bash tests/tls/install-openssl.sh as root)" >&2
  exit 1
fi
mkdir -p "$dir"
case $kind in
  ec | sec1) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *)
    echo "make-cert.sh: unknown key kind '$kind' (ec, sec1 or rsa)" >&2
    exit 2
    ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 825 -subj /CN=localhost \
  -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' \
  -addext 'basicConstraints=critical,CA:FALSE' \
  -addext 'extendedKeyUsage=serverAuth' \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
case $kind in
  sec1) openssl ec -in "$dir/key.pem" -out "$dir/key.pem.tmp" 2>/dev/null ;;
  rsa) openssl rsa -traditional -in "$dir/key.pem" -out "$dir/key.pem.tmp" 2>/dev/null ;;
esac
[ ! -f "$dir/key.pem.tmp" ] || mv "$dir/key.pem.tmp" "$dir/key.pem"
chmod 600 "$dir/key.pem"
