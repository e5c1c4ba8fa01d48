# shellcheck shell=bash
# Seed figure 6 (and figure 1): before login, chat and commands get
# `Anda harus login terlebih dahulu` (an empty line gets nothing); the failed
# and successful logins of client A; then logging in again gets
# `Anda telah melakukan login sebelumnya.`, in the one-line form that
# chat-client sends and as a bare `login` (no prompts once logged in).

scenario() {
  session a \
    '' \
    'halo' \
    'login' 'andre' '123' \
    'regist' 'client_a' '123' \
    'login' 'client_a' '234' \
    'client_a' \
    'list-user' \
    'login' 'client_a' '123' \
    'login client_a 123' \
    'login'
}
