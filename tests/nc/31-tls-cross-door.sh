# shellcheck shell=bash
# SPEC 8: one chat, two doors. client_a on nc (plain) and client_t through
# openssl s_client (TLS, SEC1 key) see each other: broadcasts both ways,
# send-to both ways, list-user naming both, one login per name across doors,
# and OFFLINE when the TLS user quits.

TLS_KEY=sec1

scenario() {
  client_open a
  client_send a 'regist client_a 123' 'login client_a 123'
  wait_for a 'Login sukses'
  client_open tls_t
  client_send tls_t 'regist client_t 123' 'login client_a 123' 'login client_t 123'
  wait_for tls_t 'Login sukses'
  client_send tls_t 'list-user'
  wait_for tls_t 'list user : client_a, client_t.'
  client_send a 'halo dari nc'
  wait_for tls_t '[client_a] halo dari nc'
  client_send tls_t 'halo dari tls'
  wait_for a '[client_t] halo dari tls'
  client_send a 'send-to client_t rahasia'
  wait_for tls_t 'Pesan pribadi dari [client_a] rahasia'
  client_send tls_t 'send-to client_a juga'
  wait_for a 'Pesan pribadi dari [client_t] juga'
  client_send tls_t 'quit'
  wait_for a 'Teman anda [client_t] telah offline'
  client_close tls_t
  client_send a 'list-user'
  wait_for a 'list user : client_a.'
}
