# shellcheck shell=bash
# Seed figure 11: after figure 10, C types `send-to client_a apa kabar juga`:
# only A gets `Pesan pribadi dari [client_c] apa kabar juga`, C gets nothing.
# SPEC 2 extras: to a user who is not online C gets NOT_ONLINE; the text keeps
# its inner spacing and loses the surrounding spaces.
# At the end A, B and C leave in that order (end of input): each one still
# online gets OFFLINE for each one that leaves before it.

scenario() {
  story_a_logs_in
  story_b_logs_in
  story_c_logs_in
  story_broadcast
  story_bad_send_to
  story_send_to
  client_send c 'send-to client_d halo' 'send-to client_b   dua  spasi  '
  wait_for c 'User client_d tidak sedang online'
  wait_for b 'Pesan pribadi dari [client_c] dua  spasi'
}
