#!/usr/bin/env bash
# A real IRC client against the IRC door (SPEC 8.3): irssi, driven in tmux,
# connects with -w, sees #chat with its users, and exchanges channel and
# private messages with a plain-socket user ("bob", bash's /dev/tcp); what
# irssi shows is read with `tmux capture-pane`. Prints one PASS/FAIL line.
#
# usage: tests/irc/irssi.sh path/to/chat-server
set -uo pipefail
bin=${1:?usage: irssi.sh path/to/chat-server}
work=$(mktemp -d)
session=chat-irssi-$$
server=
export TERM=${TERM:-xterm}
[ "$TERM" = dumb ] && export TERM=xterm

cleanup() {
  tmux kill-session -t "$session" 2>/dev/null
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

screen() { tmux capture-pane -t "$session" -p 2>/dev/null; }

fail() {
  echo "irssi: FAIL: $*"
  echo "--- irssi's screen:"
  screen | grep -v '^$' | tail -25
  echo "--- what bob got:"
  cat "$work/bob.out" 2>/dev/null
  exit 1
}

# Waits (10 s at most) until irssi's screen shows $1.
until_screen() {
  for _ in $(seq 100); do
    screen | grep -qF -- "$1" && return 0
    sleep 0.1
  done
  fail "irssi never showed: $1"
}

# Waits until bob received $1.
until_bob() {
  for _ in $(seq 100); do
    grep -qF -- "$1" "$work/bob.out" && return 0
    sleep 0.1
  done
  fail "bob never got: $1"
}

irssi_says() { tmux send-keys -t "$session" -l -- "$1" && tmux send-keys -t "$session" Enter; }
bob_says() { printf '%s\n' "$1" >&3; }

"$bin" --accounts :memory: --history none --hash-params m=256,t=1,p=1 --port 0 --irc-port 0 \
  --lang en 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do
  grep -q 'IRC listening on' "$work/server.log" && break
  sleep 0.1
done
irc_port=$(sed -n 's/.*IRC listening on [0-9.]*:\([0-9]*\).*/\1/p' "$work/server.log")
line_port=$(sed -n 's/.* listening on [0-9.]*:\([0-9]*\) (.*/\1/p' "$work/server.log" | head -1)
[ -n "$irc_port" ] && [ -n "$line_port" ] || fail "the server did not start: $(cat "$work/server.log")"

# bob, on the plain port: registers both accounts and logs in.
exec 3<>"/dev/tcp/127.0.0.1/$line_port" || fail "cannot connect to the line port"
cat <&3 >"$work/bob.out" &
bob_says "regist alice pw"
bob_says "regist bob pw"
bob_says "login bob pw"
until_bob "Login successful"

# alice, in irssi, with the password as PASS.
tmux new-session -d -s "$session" -x 160 -y 50 \
  "env TERM=screen irssi --home=$work/irssi -n alice -c 127.0.0.1 -p $irc_port -w pw" \
  || fail "cannot start tmux"
until_screen "Welcome to the chat, alice"

# #chat, joined at login, lists both users.
for _ in $(seq 50); do
  irssi_says "/window goto #chat"
  screen | grep -qF "Total of 2 nicks" && break
  sleep 0.2
done
until_screen "Total of 2 nicks"
until_screen "[ alice] [ bob]"

# Channel messages, both ways.
bob_says "hello from nc"
until_screen "bob> hello from nc"
irssi_says "hello from irssi"
until_bob "[alice] hello from irssi"

# Private messages, both ways.
irssi_says "/msg bob psst from irssi"
until_bob "Private message from [alice] psst from irssi"
bob_says "send-to alice psst from nc"
for _ in $(seq 50); do
  irssi_says "/window goto bob"
  screen | grep -qF "psst from nc" && break
  sleep 0.2
done
until_screen "bob> psst from nc"

# Both doors are in the one list; leaving is seen across doors.
bob_says "list-user"
until_bob "online users : alice, bob."
irssi_says "/quit"
until_bob "Your friend [alice] went offline"

echo "irssi: PASS (#chat with both users, channel and private messages both ways, quit seen)"
