# shellcheck shell=bash
# Seed figure 10: after figure 9, C types `send-to client_a` (fewer than 3
# words) and gets `Perintah yang anda ketikkan salah`; `send-to` alone too.
# At the end A, B and C leave in that order (end of input): each one still
# online gets OFFLINE for each one that leaves before it.

scenario() {
  story_a_logs_in
  story_b_logs_in
  story_c_logs_in
  story_broadcast
  story_bad_send_to
  client_send c 'send-to'
  wait_for c 'Perintah yang anda ketikkan salah' 2
}
