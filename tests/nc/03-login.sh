# shellcheck shell=bash
# Seed figure 3: client A registers client_a and logs in with `login` alone,
# answering the prompts (`Login sukses`). After A's connection closes, a new
# connection logs in with the one-line form `login client_a 123`: the account
# outlives the connection, and the closed connection freed the name.

scenario() {
  session a \
    'regist' 'client_a' '123' \
    'login' 'client_a' '123'
  session b 'login client_a 123'
}
