# shellcheck shell=bash
# Seed figure 7: client A has registered client_a and logged in; client B tries
# to register client_a too and gets `Username telah dipakai` (prompted and
# one-line forms), then registers client_b.

scenario() {
  story_a_logs_in
  session b \
    'regist' 'client_a' '123' \
    'regist client_a 456' \
    'regist' 'client_b' '123'
}
