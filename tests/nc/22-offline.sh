# shellcheck shell=bash
# OFFLINE (SPEC 2; the original server's `Teman anda telah offline`, now with
# the name; no seed figure shows it). A, B and C are logged in as in seed
# figures 6 to 12. A types `quit` (then `halo`, which is ignored): A gets
# `Sampai jumpa` and is closed, B and C get `Teman anda [client_a] telah
# offline`. B logs out: C gets the notice for client_b. C's connection just
# closes: B, logged out, gets no notice. The closed connection freed client_c:
# a new client D logs in as client_c while B is back as client_b.

scenario() {
  story_a_logs_in
  story_b_logs_in
  story_c_logs_in

  client_send a 'quit' 'halo'
  wait_for a 'Sampai jumpa'
  wait_for b 'Teman anda [client_a] telah offline'
  wait_for c 'Teman anda [client_a] telah offline'
  client_close a

  client_send b 'logout'
  wait_for b 'Logout sukses'
  wait_for c 'Teman anda [client_b] telah offline'
  client_close c

  client_send b 'list-user' 'login client_b 123'
  wait_for b 'Login sukses' 2
  client_open d
  client_send d 'login client_c 123'
  wait_for d 'Login sukses'
  client_send b 'list-user'
  wait_for b 'list user : client_b, client_c.'
}
