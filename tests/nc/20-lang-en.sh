# shellcheck shell=bash
# `--lang en` (SPEC 3): the story of seed figures 2 to 12 with the English
# replies, plus BAD_PASSWORD, NOT_ONLINE, LOGOUT_OK and BYE. Two clients, A and
# B (each argument of client_send is one line).

# shellcheck disable=SC2034 # read by run_scenario (lib.sh)
SERVER_ARGS=(--lang en)

scenario() {
  client_open a
  client_send a '' 'halo'                      # fig 6: not logged in
  client_send a 'login andre 123'              # fig 4: unknown user
  client_send a 'regist' 'client a' '123'      # fig 2: a space in the name
  client_send a 'regist' 'client_x' 'a b'      # a space in the password
  client_send a 'regist client_a 123'
  client_send a 'login' 'client_a' '123'       # fig 3
  client_send a 'login client_a 123'           # fig 6: already logged in
  wait_for a 'You are already logged in.'

  client_open b
  client_send b 'regist client_a 123'          # fig 7: name taken
  client_send b 'regist client_b'              # one word short
  client_send b 'regist client_b 123'
  client_send b 'login client_a 123'           # fig 8: logged in elsewhere
  client_send b 'login client_b 123'
  wait_for b 'Login successful'

  client_send a 'apa kabar'                    # fig 9: broadcast
  wait_for b '[client_a] apa kabar'

  client_send b 'send-to client_a'             # fig 10
  client_send b 'send-to client_a hello too'   # fig 11
  client_send b 'send-to nobody hi'
  client_send b 'list-user x' 'list-user'      # fig 12
  wait_for b 'online users : client_a, client_b.'
  wait_for a 'Private message from [client_b] hello too'

  client_send a 'logout'
  wait_for b 'Your friend [client_a] went offline'
  client_send a 'quit'
  wait_for a 'Goodbye'
}
