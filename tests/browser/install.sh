#!/usr/bin/env bash
# What the real-browser test needs: Debian's chromium (never a browser
# download of playwright's own) and Python playwright in a venv under target/.
# Installs what is missing when it can (apt-get as root, pip into the venv),
# or says in one line what to install. Prints nothing when all is there.
set -euo pipefail
VENV=${VENV:-target/browser-venv}

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the browser test..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core) >/dev/null \
            || { echo "make test: cannot install chromium: run 'apt-get install chromium' as root" >&2; exit 1; }
    else
        echo "make test: the browser test needs Debian's chromium: run 'apt-get install chromium' as root" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import playwright' 2>/dev/null; then
    command -v python3 >/dev/null 2>&1 \
        || { echo "make test: the browser test needs python3 (apt-get install python3 python3-venv)" >&2; exit 1; }
    echo "installing Python playwright into $VENV (no browser download)..." >&2
    python3 -m venv "$VENV" >/dev/null \
        || { echo "make test: cannot make a venv: apt-get install python3-venv" >&2; exit 1; }
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the system chromium is used, never
    # playwright's own build (and `playwright install` is never run).
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VENV/bin/pip" install -q 'playwright>=1.40' >/dev/null \
        || { echo "make test: cannot pip install playwright into $VENV" >&2; exit 1; }
fi
