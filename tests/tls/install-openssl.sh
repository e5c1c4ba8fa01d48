#!/usr/bin/env bash
# Installs the openssl command (Debian's openssl) for the scripted TLS
# sessions and `make run-server-tls`, or says in one line why it cannot.
set -euo pipefail
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "openssl not found: installing openssl" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl) >/dev/null 2>&1 || {
    echo "make: openssl is missing and 'apt-get install openssl' failed; install it and retry" >&2
    exit 1
  }
else
  echo "make: openssl is missing; run 'sudo apt-get install openssl' and retry" >&2
  exit 1
fi
