//! Telnet option refusal against the real binary (SPEC section 1, issue 9).
//!
//! A telnet client that sends Ctrl-C (`IAC IP IAC DO TIMING-MARK`) waits for the
//! answer to TIMING-MARK before it shows anything else; it sends no newline
//! after it. So the server must answer options as soon as the bytes arrive,
//! each time asked, however TCP cuts the sequence.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

/// What telnet sends on Ctrl-C: IAC IP, IAC DO TIMING-MARK.
const CTRL_C: &[u8] = b"\xff\xf4\xff\xfd\x06";
/// IAC WONT TIMING-MARK.
const WONT_TIMING_MARK: &[u8] = b"\xff\xfc\x06";
const LOGIN_FIRST: &[u8] = b"Anda harus login terlebih dahulu\n";

/// A raw connection: telnet replies are bytes, not lines.
fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("cannot connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("send failed");
}

/// Asserts the next bytes are exactly `expected`, arriving within `within`.
fn expect_bytes(stream: &mut TcpStream, expected: &[u8], within: Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut got = vec![0; expected.len()];
    let mut have = 0;
    while have < got.len() {
        match stream.read(&mut got[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        if start.elapsed() > within {
            break;
        }
    }
    assert_eq!(
        &got[..have],
        expected,
        "after {:?}: got {:?}, want {:?}",
        start.elapsed(),
        String::from_utf8_lossy(&got[..have]),
        String::from_utf8_lossy(expected)
    );
}

fn expect_silence(stream: &mut TcpStream, wait: Duration) {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => assert_eq!(n, usize::MAX, "expected silence, got {:?}", &buf[..n]),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "expected silence, got {e}"
        ),
    }
}

/// Prompt: no newline is ever sent, yet the refusal arrives (generous bound
/// for a loaded machine; without the refusal it never comes at all).
const PROMPTLY: Duration = Duration::from_secs(3);
const REPLY: Duration = Duration::from_secs(10);

#[test]
fn ctrl_c_is_answered_at_once_and_later_replies_still_arrive() {
    let server = Server::start(&[]);
    let mut a = connect(&server);
    send(&mut a, CTRL_C);
    expect_bytes(&mut a, WONT_TIMING_MARK, PROMPTLY);
    send(&mut a, b"halo\r\n");
    expect_bytes(&mut a, LOGIN_FIRST, REPLY);
    // Every Ctrl-C is answered, not just the first.
    send(&mut a, CTRL_C);
    expect_bytes(&mut a, WONT_TIMING_MARK, PROMPTLY);
    send(&mut a, CTRL_C);
    expect_bytes(&mut a, WONT_TIMING_MARK, PROMPTLY);
    send(&mut a, b"halo\r\n");
    expect_bytes(&mut a, LOGIN_FIRST, REPLY);
}

#[test]
fn a_sequence_cut_across_reads_is_answered() {
    let server = Server::start(&[]);
    let mut a = connect(&server);
    // IAC in one read, DO in the next, the option in a third.
    for piece in [&b"\xff"[..], b"\xfd", b"\x06"] {
        send(&mut a, piece);
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_bytes(&mut a, WONT_TIMING_MARK, PROMPTLY);
    // IAC WILL ECHO cut after IAC WILL: refused with DONT.
    send(&mut a, b"\xff\xfb");
    std::thread::sleep(Duration::from_millis(100));
    send(&mut a, b"\x01");
    expect_bytes(&mut a, b"\xff\xfe\x01", PROMPTLY);
    send(&mut a, b"halo\n");
    expect_bytes(&mut a, LOGIN_FIRST, REPLY);
}

#[test]
fn wont_dont_and_subnegotiations_get_no_answer() {
    let server = Server::start(&[]);
    let mut a = connect(&server);
    // IAC WONT x, IAC DONT x, IAC IAC, IAC SB ... IAC DO-like bytes ... IAC SE.
    send(
        &mut a,
        b"\xff\xfc\x01\xff\xfe\x03\xff\xff\xff\xfa\x18\xff\xfd\x01\xff\xf0",
    );
    expect_silence(&mut a, Duration::from_millis(300));
    send(&mut a, b"help\r\n");
    let mut first = [0u8; 9];
    a.set_read_timeout(Some(REPLY)).expect("timeout");
    a.read_exact(&mut first).expect("help reply");
    assert_eq!(&first, b"Perintah:");
}

#[test]
fn ctrl_c_in_the_middle_of_a_chat_line_keeps_the_line() {
    let server = Server::start(&[]);
    let mut b = server.login("b");
    let mut a = connect(&server);
    send(&mut a, b"regist a pw\r\nlogin a pw\r\n");
    expect_bytes(&mut a, b"Anda berhasil terdaftar\nLogin sukses\n", REPLY);
    // Half a line, Ctrl-C, the rest: the refusal comes before the line ends,
    // and the line reaches b with the telnet commands dropped.
    send(&mut a, b"hal");
    send(&mut a, CTRL_C);
    expect_bytes(&mut a, WONT_TIMING_MARK, PROMPTLY);
    send(&mut a, b"o\r\n");
    b.expect("[a] halo");
    expect_silence(&mut a, Duration::from_millis(200));
}
