#!/usr/bin/env bash
# Runs chat-bench: ours (line protocol and IRC door) vs ngircd and InspIRCd vs
# the floor, interleaved, on 127.0.0.1 only.
# Usage: bash bench/run.sh [--quick] [more chat-bench run flags]
# Installs ngircd from Debian when it is missing and we are root; otherwise
# runs without it and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"

if ! command -v ngircd >/dev/null 2>&1 && [ ! -x /usr/sbin/ngircd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing ngircd (Debian package)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ngircd >/dev/null
        # The package starts a system ngircd on port 6667; we only want the binary.
        if command -v systemctl >/dev/null 2>&1; then systemctl stop ngircd >/dev/null 2>&1 || true; fi
        if command -v service >/dev/null 2>&1; then service ngircd stop >/dev/null 2>&1 || true; fi
    else
        echo "bench: ngircd is missing: install it (apt-get install ngircd) to compare with it" >&2
    fi
fi

if ! command -v inspircd >/dev/null 2>&1 && [ ! -x /usr/sbin/inspircd ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing inspircd (Debian package)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq inspircd >/dev/null
        # The package starts a system InspIRCd on port 6667; we only want the binary.
        if command -v systemctl >/dev/null 2>&1; then systemctl stop inspircd >/dev/null 2>&1 || true; fi
        if command -v service >/dev/null 2>&1; then service inspircd stop >/dev/null 2>&1 || true; fi
    else
        echo "bench: inspircd is missing: install it (apt-get install inspircd) to compare with it" >&2
    fi
fi

# 10 000 clients need descriptors: the generator raises its soft limit to the
# hard one, and the servers it starts inherit it.
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 30000 ]; then
    ulimit -Hn 65536 2>/dev/null || true
fi

exec "$target/chat-bench" run --chat-server "$target/chat-server" "$@"
