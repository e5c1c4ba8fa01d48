# shellcheck shell=bash
# Seed figure 12: after figure 11, C types `list-user hal` and gets
# `Perintah yang anda masukkan salah`, then `list-user` and gets
# `list user : client_a, client_b, client_c.` (the seed shows a 4th name,
# `client`, left by its `client a` registration; per SPEC 2 that name got
# BAD_USERNAME, so it is not there).
# At the end A, B and C leave in that order (end of input): each one still
# online gets OFFLINE for each one that leaves before it.

scenario() {
  story_a_logs_in
  story_b_logs_in
  story_c_logs_in
  story_broadcast
  story_bad_send_to
  story_send_to
  story_list_user
}
