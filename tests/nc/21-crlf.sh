# shellcheck shell=bash
# Telnet-style line ends (SPEC 1): every line ends in \r\n, as `telnet
# localhost 10000` sends them. The \r is dropped: prompt answers, commands and
# chat work as in seed figures 2, 3, 9, 11 and 12, no \r is relayed, and an
# empty \r\n line gets nothing. A line split over two TCP writes is one line.

scenario() {
  client_open a
  client_send_raw a 'regist\r\nclient_a\r\n123\r\n'
  client_send_raw a 'login client_a 123\r\n\r\n'
  wait_for a 'Login sukses'

  client_open b
  client_send_raw b 'regist client_b 123\r\nlogin\r\nclient_b\r\n123\r\n'
  client_send_raw b 'list-user\r\n'
  wait_for b 'list user : client_a, client_b.'

  client_send_raw a 'apa kabar, client b\r\n'
  wait_for b '[client_a] apa kabar, client b'
  client_send_raw b 'send-to client_a apa kabar juga\r\n'
  wait_for a 'Pesan pribadi dari [client_b] apa kabar juga'

  client_send_raw b 'hal'
  sleep 0.3
  client_send_raw b 'o\r\n'
  wait_for a '[client_b] halo'
}
