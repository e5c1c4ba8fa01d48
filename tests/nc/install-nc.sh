#!/usr/bin/env bash
# Installs nc (Debian's netcat-openbsd) for the scripted sessions, or says in
# one line why it cannot.
set -euo pipefail
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "nc not found: installing netcat-openbsd" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq netcat-openbsd) >/dev/null 2>&1 || {
    echo "make test: nc is missing and 'apt-get install netcat-openbsd' failed; install it and retry" >&2
    exit 1
  }
else
  echo "make test: nc is missing; run 'sudo apt-get install netcat-openbsd' (or any nc with -N) and retry" >&2
  exit 1
fi
