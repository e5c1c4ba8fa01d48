# shellcheck shell=bash
# Helpers for the scripted nc sessions (sourced by run.sh; not run directly).
#
# A scenario file NN-name.sh defines a function `scenario` and, optionally, an
# array SERVER_ARGS of extra server flags. run_scenario starts a fresh server,
# runs `scenario`, closes every client still open (in the order they were
# opened), stops the server and leaves each client's raw output in
# $WORK/CLIENT.out, which run.sh compares byte for byte with
# NN-name.CLIENT.expected.
#
# Inside `scenario`:
#   session NAME LINE...     one-shot client: sends the lines (each ended by \n)
#                            at once, half-closes, waits until the server closes
#   session_raw NAME BYTES   the same with exact bytes (printf %b escapes: \r\n)
#   client_open NAME         connects a client that stays connected; its input
#                            is a FIFO that this shell holds open
#   client_send NAME LINE... sends lines, each ended by \n
#   client_send_raw NAME BYTES   sends exact bytes (printf %b escapes)
#   wait_for NAME TEXT [N]   waits until NAME's output holds TEXT at least N
#                            times (default 1); this orders events across clients
#   client_close NAME...     half-closes each client's input in turn and waits
#                            until the server has closed it (nc has exited)
#
# TLS (SPEC 8.1): a scenario that sets TLS_KEY=ec|sec1|rsa gets a fresh
# self-signed certificate with that kind of key and a server with both doors.
# A client whose name starts with `tls` is then `openssl s_client -quiet`
# on the TLS door (verifying the certificate) instead of nc. s_client ignores
# the end of its input, so a TLS client's last line is `quit`.
#
# Every nc runs under `timeout`, every wait is bounded; a wait that times out or
# a send that fails is written to $WORK/errors and fails the scenario.

NC_TIMEOUT=${NC_TIMEOUT:-20}        # seconds any one nc may live
WAIT_TIMEOUT=${WAIT_TIMEOUT:-10}    # seconds wait_for waits for its text
SERVER_START_TIMEOUT=${SERVER_START_TIMEOUT:-10}
HASH_PARAMS=${HASH_PARAMS:-m=256,t=1,p=1}

declare -A CLIENT_FD=() CLIENT_PID=()
CLIENT_ORDER=()
SERVER_PID=''
PORT=''
TLS_PORT=''
TLS_KEY=''
WORK=''

# A problem in the harness or a broken expectation on ordering: recorded, and
# the scenario fails even if the transcripts happen to match.
note_error() {
  printf '%s\n' "$*" >>"$WORK/errors"
  printf 'error: %s\n' "$*" >&2
}

server_start() { # BIN [EXTRA_ARGS...]
  local bin=$1
  shift
  : >"$WORK/server.log"
  "$bin" --port 0 --accounts :memory: --history :memory: --hash-params "$HASH_PARAMS" \
    --log-level info "$@" </dev/null 2>"$WORK/server.log" >/dev/null &
  SERVER_PID=$!
  local deadline=$((SECONDS + SERVER_START_TIMEOUT)) log re='listening on [^ ]*:([0-9]+)'
  local tls_re='TLS listening on [^ ]*:([0-9]+)'
  while :; do
    log=$(<"$WORK/server.log")
    if [[ $log =~ $re ]]; then
      PORT=${BASH_REMATCH[1]}
      # The TLS door's line follows the plain one.
      if [ -z "$TLS_KEY" ]; then
        return 0
      elif [[ $log =~ $tls_re ]]; then
        TLS_PORT=${BASH_REMATCH[1]}
        return 0
      fi
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      note_error "server exited before listening (see server.log)"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      note_error "server did not log 'listening on HOST:PORT' within ${SERVER_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.05
  done
}

server_stop() { # SIGTERM, then check the server exited 0 and did not panic
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID status=0 i
  SERVER_PID=''
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    note_error "server did not exit within 5s of SIGTERM; killed"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    note_error "server exited with status $status after SIGTERM (SPEC 5: exits 0)"
  fi
  if grep -q 'panicked' "$WORK/server.log"; then
    note_error "server panicked (see server.log)"
  fi
}

# The nc of one client: stdin from $1, raw output to $WORK/NAME.out. Clients
# named tls* speak TLS through openssl s_client, which must verify the
# scenario's certificate.
run_nc() { # NAME INPUT
  case $1 in
    tls*)
      exec timeout -k 2 "$NC_TIMEOUT" openssl s_client -quiet -verify_return_error \
        -CAfile "$WORK/tls/cert.pem" -connect "127.0.0.1:$TLS_PORT" \
        <"$2" >"$WORK/$1.out" 2>"$WORK/$1.nc-err"
      ;;
    *) exec timeout -k 2 "$NC_TIMEOUT" nc -N 127.0.0.1 "$PORT" <"$2" >"$WORK/$1.out" 2>"$WORK/$1.nc-err" ;;
  esac
}

session() { # NAME LINE...
  local name=$1
  shift
  printf '%s\n' "$@" >"$WORK/$name.in"
  run_session "$name"
}

session_raw() { # NAME BYTES (printf %b escapes)
  printf '%b' "$2" >"$WORK/$1.in"
  run_session "$1"
}

run_session() { # NAME: input already in $WORK/NAME.in
  local name=$1 status=0
  (close_client_fds; run_nc "$name" "$WORK/$name.in") || status=$?
  if [ "$status" -ne 0 ]; then
    note_error "client $name: nc exited with status $status (124 = timed out after ${NC_TIMEOUT}s)"
  fi
}

# A child must not keep another client's FIFO open, or that client would never
# see end of input.
close_client_fds() {
  local n fd
  for n in "${!CLIENT_FD[@]}"; do
    fd=${CLIENT_FD[$n]}
    exec {fd}>&-
  done
}

client_open() { # NAME
  local name=$1 fifo=$WORK/$1.fifo fd
  if [ -n "${CLIENT_PID[$name]:-}" ]; then
    note_error "client $name opened twice"
    return 1
  fi
  mkfifo "$fifo"
  (close_client_fds; run_nc "$name" "$fifo") &
  CLIENT_PID[$name]=$!
  # Opening a FIFO for writing waits for its reader: the nc above.
  exec {fd}>"$fifo"
  CLIENT_FD[$name]=$fd
  CLIENT_ORDER+=("$name")
}

client_send() { # NAME LINE...
  local name=$1 fd
  fd=$(client_fd "$name") || return 0
  shift
  # SIGPIPE is ignored (run_scenario), so a closed reader shows up as an error.
  printf '%s\n' "$@" >&"$fd" || note_error "client $name: send failed (nc gone?)"
}

client_send_raw() { # NAME BYTES (printf %b escapes)
  local name=$1 fd
  fd=$(client_fd "$name") || return 0
  printf '%b' "$2" >&"$fd" || note_error "client $name: send failed (nc gone?)"
}

client_fd() { # NAME: prints the write end of NAME's FIFO
  if [ -z "${CLIENT_FD[$1]:-}" ]; then
    note_error "client $1: send while not open"
    return 1
  fi
  printf '%s' "${CLIENT_FD[$1]}"
}

client_close() { # NAME...
  local name fd pid status
  for name in "$@"; do
    fd=${CLIENT_FD[$name]:-}
    pid=${CLIENT_PID[$name]:-}
    if [ -z "$pid" ]; then
      note_error "client $name: close while not open"
      continue
    fi
    [ -z "$fd" ] || exec {fd}>&-
    unset 'CLIENT_FD[$name]' 'CLIENT_PID[$name]'
    status=0
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
      note_error "client $name: nc exited with status $status (124 = timed out after ${NC_TIMEOUT}s)"
    fi
  done
}

wait_for() { # NAME TEXT [COUNT]
  local name=$1 text=$2 want=${3:-1} out=$WORK/$1.out content rest n
  local deadline=$((SECONDS + WAIT_TIMEOUT))
  while :; do
    content=''
    [ ! -f "$out" ] || content=$(<"$out")
    rest=${content//"$text"/}
    n=$(((${#content} - ${#rest}) / ${#text}))
    ((n < want)) || return 0
    if ((SECONDS >= deadline)); then
      note_error "client $name: waited ${WAIT_TIMEOUT}s for '$text' x$want, saw it x$n"
      return 0
    fi
    sleep 0.05
  done
}

# On any exit (a failed step, or SIGTERM from run.sh's `timeout`): stop the
# clients and the server that are still running, and reap them.
cleanup_scenario() {
  local name pid
  for name in "${!CLIENT_PID[@]}"; do
    pid=${CLIENT_PID[$name]}
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ]; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}

# Runs one scenario file in this shell: run.sh calls it in a fresh bash under
# `timeout`.
run_scenario() { # SCENARIO_FILE WORK_DIR SERVER_BIN
  local file=$1 bin=$3 name
  WORK=$2
  SERVER_ARGS=()
  trap cleanup_scenario EXIT
  trap 'exit 143' TERM INT
  trap '' PIPE
  # shellcheck source=/dev/null
  source "$file"
  if [ -n "$TLS_KEY" ]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/../tls/make-cert.sh" "$WORK/tls" "$TLS_KEY" || {
      note_error "cannot make a $TLS_KEY certificate (openssl)"
      return 1
    }
    SERVER_ARGS+=(--tls-port 0 --tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem")
  fi
  server_start "$bin" "${SERVER_ARGS[@]}" || return 1
  scenario
  for name in "${CLIENT_ORDER[@]}"; do
    [ -z "${CLIENT_PID[$name]:-}" ] || client_close "$name"
  done
  server_stop
}

# --- The seed's story (figures 6 to 12), shared by the scenarios 09 to 12 ----
# Three terminals: client A, B and C, each password 123. The answers to bare
# `login`/`regist` come on the following lines, as typed in the seed, so the
# server's prompts `Username : Password : ` show in the transcripts. (Each
# argument of client_send is one line.)

story_a_logs_in() { # fig 6, end: A registers client_a and logs in
  client_open a
  client_send a 'regist' 'client_a' '123'
  client_send a 'login' 'client_a' '123'
  wait_for a 'Login sukses'
}

story_b_logs_in() { # figs 7, 8, 9 (top): B's name is taken, B logs in as client_b
  client_open b
  client_send b 'regist' 'client_a' '123'
  client_send b 'regist' 'client_b' '123'
  client_send b 'login' 'client_a' '123'
  client_send b 'login' 'client_b' '123'
  wait_for b 'Login sukses'
}

story_c_logs_in() { # fig 12 (top): C registers client_c and logs in
  client_open c
  client_send c 'regist' 'client_c' '123'
  client_send c 'login' 'client_c' '123'
  wait_for c 'Login sukses'
}

story_broadcast() { # fig 9: C says halo, A answers; neither is echoed
  client_send c 'halo'
  wait_for a '[client_c] halo'
  wait_for b '[client_c] halo'
  client_send a 'apa kabar, client c'
  wait_for b '[client_a] apa kabar, client c'
  wait_for c '[client_a] apa kabar, client c'
}

story_bad_send_to() { # fig 10: send-to with a name but no text
  client_send c 'send-to client_a'
  wait_for c 'Perintah yang anda ketikkan salah'
}

story_send_to() { # fig 11: C to A privately
  client_send c 'send-to client_a apa kabar juga'
  wait_for a 'Pesan pribadi dari [client_c] apa kabar juga'
}

story_list_user() { # fig 12: list-user with an extra word, then right
  client_send c 'list-user hal' 'list-user'
  wait_for c 'list user : client_a, client_b, client_c.'
}
