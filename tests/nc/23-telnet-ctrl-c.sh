# shellcheck shell=bash
# Telnet Ctrl-C (SPEC 1): telnet sends `IAC IP IAC DO TIMING-MARK` and shows
# nothing more until the server answers. A sends it with no newline after it
# and gets `IAC WONT TIMING-MARK` (FF FC 06) at once, then its next line is
# still answered. Logged in, A presses Ctrl-C in the middle of a chat line with
# the sequence cut between two writes: A gets the refusal again, and B gets
# the line with the telnet commands dropped.

scenario() {
  client_open a
  client_send_raw a '\xff\xf4\xff\xfd\x06'
  sleep 0.3
  client_send_raw a 'halo\r\n'
  wait_for a 'Anda harus login terlebih dahulu'
  client_send_raw a 'regist client_a 123\r\nlogin client_a 123\r\n'
  wait_for a 'Login sukses'

  client_open b
  client_send b 'regist client_b 123' 'login client_b 123'
  wait_for b 'Login sukses'

  client_send_raw a 'hal\xff\xf4\xff'
  sleep 0.3
  client_send_raw a '\xfd\x06o\r\n'
  wait_for b '[client_a] halo'
}
