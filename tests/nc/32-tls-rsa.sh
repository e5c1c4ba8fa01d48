# shellcheck shell=bash
# SPEC 8.1: an RSA key in PKCS#1 ("RSA PRIVATE KEY") loads too; English
# replies through the TLS door.

TLS_KEY=rsa
SERVER_ARGS=(--lang en)

scenario() {
  session tls_a 'regist client_a 123' 'login client_a 123' 'list-user' 'quit'
}
