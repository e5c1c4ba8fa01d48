# shellcheck shell=bash
# Seed figure 8 (and the top of figure 9): client A is logged in as client_a;
# client B registers client_b, then logs in as client_a with the right password
# and gets `Username tersebut telah melakukan login sebelumnya.`, then logs in
# as client_b. SPEC 2 extra: with a wrong password B gets LOGIN_FAIL, which
# does not tell whether client_a is online. B leaves last: A gets OFFLINE.

scenario() {
  story_a_logs_in
  session b \
    'regist' 'client_a' '123' \
    'regist' 'client_b' '123' \
    'login' 'client_a' '234' \
    'login' 'client_a' '123' \
    'login' 'client_b' '123'
}
