# shellcheck shell=bash
# Seed figures 4 and 5: login with a user that is not registered (andre), and
# with a registered user but the wrong password (client_a / 234): both get
# `Username atau Password anda Salah`. The same in the one-line forms, then the
# right password still works (4 failures: under the limit of 5).

scenario() {
  session a \
    'login' 'andre' '123' \
    'regist' 'client_a' '123' \
    'login' 'client_a' '234' \
    'login andre 123' \
    'login client_a 234' \
    'login client_a 123'
}
