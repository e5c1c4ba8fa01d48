#!/usr/bin/env bash
# Installs irssi and tmux (Debian packages) for the real-client test, or says
# in one line why it cannot.
set -euo pipefail
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "irssi or tmux not found: installing them" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq irssi tmux) >/dev/null 2>&1 || {
    echo "make test: irssi/tmux are missing and 'apt-get install irssi tmux' failed; install them and retry" >&2
    exit 1
  }
else
  echo "make test: irssi/tmux are missing; run 'sudo apt-get install irssi tmux' and retry" >&2
  exit 1
fi
