# shellcheck shell=bash
# SPEC 8.1: the seed's session (figures 2 and 3) through the TLS door with
# `openssl s_client -quiet`, byte for byte as over nc: the prompts of a bare
# `regist` and `login`, LOGIN_FIRST, list-user, then quit. The server's
# certificate is verified by openssl (P-256 key in PKCS#8).

TLS_KEY=ec

scenario() {
  session tls_a \
    'halo' \
    'regist' 'client_a' '123' \
    'login' 'client_a' '123' \
    'list-user' \
    'quit'
  session tls_b 'login client_a 123' 'quit'
}
