#!/usr/bin/env bash
# Scripted nc sessions: replays the seed document's terminal figures (and a few
# SPEC points) against a real server and checks every client's raw output, byte
# for byte, against the transcript beside its scenario. Scenarios 3x do the same
# through the TLS door with `openssl s_client -quiet` (see lib.sh).
#
#   bash tests/nc/run.sh target/debug/chat-server [SCENARIO_NAME...]
#
# For each tests/nc/NN-name.sh (or only those named): a fresh server on port 0
# with in-memory accounts and cheap hashing (the port is read from its log),
# the scenario's clients (each nc under `timeout`), then SIGTERM to the server.
# Client CLIENT's output must equal NN-name.CLIENT.expected exactly (prompts
# have no newline). A failure prints a diff (`cat -A` view: `$` ends a line,
# `^M` is a \r). The last line is `N passed, M failed`; the exit status is
# non-zero if any scenario failed. Set KEEP=1 to keep the work directory.
set -euo pipefail
shopt -s nullglob

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-60}

if [ $# -lt 1 ]; then
  echo "usage: $0 SERVER_BINARY [SCENARIO_NAME...]" >&2
  exit 2
fi
bin=$1
shift
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
if [ ! -x "$bin" ]; then
  echo "$0: server binary '$bin' not found or not executable (cargo build --bin chat-server)" >&2
  exit 2
fi
for tool in nc timeout cmp diff mkfifo openssl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: '$tool' is missing (nc: bash tests/nc/install-nc.sh; openssl: bash tests/tls/install-openssl.sh)" >&2
    exit 2
  fi
done
if ! nc -h 2>&1 | grep -q -- '-N'; then
  echo "$0: this nc has no -N (half-close on end of input); install netcat-openbsd" >&2
  exit 2
fi

scenarios=()
if [ $# -gt 0 ]; then
  for name in "$@"; do
    name=${name%.sh}
    name=${name##*/}
    if [ ! -f "$here/$name.sh" ]; then
      echo "$0: no scenario $here/$name.sh" >&2
      exit 2
    fi
    scenarios+=("$here/$name.sh")
  done
else
  scenarios=("$here"/[0-9][0-9]-*.sh)
fi
if [ ${#scenarios[@]} -eq 0 ]; then
  echo "$0: no scenarios found in $here" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-nc.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  echo "work directory: $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi

# Shows expected vs got so that line ends and missing newlines are visible.
show_diff() { # EXPECTED GOT
  diff -u --label "expected ($1)" --label "got" <(cat -A "$1") <(cat -A "$2") | sed 's/^/    /' || true
}

passed=0
failed=0
for file in "${scenarios[@]}"; do
  name=$(basename "$file" .sh)
  work=$tmp/$name
  mkdir -p "$work"
  : >"$work/errors"
  problems=()

  status=0
  # shellcheck disable=SC2016 # $1.. are the inner bash's arguments
  timeout -k 5 "$SCENARIO_TIMEOUT" bash -c \
    'set -euo pipefail; source "$1"; run_scenario "$2" "$3" "$4"' \
    run-scenario "$here/lib.sh" "$file" "$work" "$bin" \
    </dev/null >"$work/driver.log" 2>&1 || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    problems+=("scenario did not finish within ${SCENARIO_TIMEOUT}s")
  elif [ "$status" -ne 0 ]; then
    problems+=("scenario script exited with status $status")
  fi
  while IFS= read -r line; do
    problems+=("$line")
  done <"$work/errors"

  diffs=()
  expected_files=("$here/$name".*.expected)
  if [ ${#expected_files[@]} -eq 0 ]; then
    problems+=("no $name.CLIENT.expected files")
  fi
  for exp in "${expected_files[@]}"; do
    client=${exp#"$here/$name."}
    client=${client%.expected}
    got=$work/$client.out
    if [ ! -f "$got" ]; then
      problems+=("client $client: no output file (client never ran)")
    elif ! cmp -s "$exp" "$got"; then
      problems+=("client $client: output differs from ${exp#"$here/"}")
      diffs+=("$exp" "$got")
    fi
  done
  for got in "$work"/*.out; do
    client=$(basename "$got" .out)
    [ -f "$here/$name.$client.expected" ] || problems+=("client $client: has no $name.$client.expected")
  done

  if [ ${#problems[@]} -eq 0 ]; then
    passed=$((passed + 1))
    echo "PASS $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    for p in "${problems[@]}"; do
      echo "  - $p"
    done
    for ((i = 0; i < ${#diffs[@]}; i += 2)); do
      show_diff "${diffs[i]}" "${diffs[i + 1]}"
    done
    if [ -s "$work/driver.log" ]; then
      echo "  scenario log:"
      sed 's/^/    /' "$work/driver.log"
    fi
    for err in "$work"/*.nc-err; do
      if [ -s "$err" ]; then
        echo "  nc stderr of client $(basename "$err" .nc-err):"
        sed 's/^/    /' "$err"
      fi
    done
    if [ -s "$work/server.log" ]; then
      echo "  server log (last 20 lines):"
      tail -n 20 "$work/server.log" | sed 's/^/    /'
    fi
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
