# shellcheck shell=bash
# Seed figure 9: clients A, B and C are logged in (story in lib.sh: figures 6,
# 7, 8 and the top of 12). C says `halo`, A says `apa kabar, client c`:
# every other logged-in user gets `[client_c] halo` / `[client_a] apa kabar,
# client c`, and neither is echoed to its sender.
# At the end A, B and C leave in that order (end of input): each one still
# online gets OFFLINE for each one that leaves before it.

scenario() {
  story_a_logs_in
  story_b_logs_in
  story_c_logs_in
  story_broadcast
}
