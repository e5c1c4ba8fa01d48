# shellcheck shell=bash
# Seed figure 2: client A types `login` before registering (LOGIN_FAIL), then
# `regist` alone: the server prompts `Username : ` and `Password : ` (no
# newline) and takes the next two lines as the answers. The seed's username
# `client a` (with a space) is one answer, so per SPEC 2 it gets BAD_USERNAME;
# `client_a` then registers. Last, the one-line form that chat-client sends.

scenario() {
  session a \
    '' \
    'login' 'andre' '123' \
    'regist' 'client a' '123' \
    'regist' 'client_a' '123' \
    'regist client_b 123'
}
