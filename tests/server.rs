//! The real `chat-server` binary over loopback: clients chatting, every error
//! path of SPEC section 2, and how connections end.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn three_clients_chat_as_in_the_seed_figures_9_to_12() {
    let server = Server::start(&[]);
    let mut a = server.login("client_a");
    let mut b = server.login("client_b");
    let mut c = server.login("client_c");
    c.send("halo");
    a.expect("[client_c] halo");
    b.expect("[client_c] halo");
    a.send("apa kabar, client c");
    b.expect("[client_a] apa kabar, client c");
    c.expect("[client_a] apa kabar, client c");
    c.send("send-to client_a");
    c.expect("Perintah yang anda ketikkan salah");
    c.send("send-to client_a apa kabar juga");
    a.expect("Pesan pribadi dari [client_c] apa kabar juga");
    c.send("list-user hal");
    c.expect("Perintah yang anda masukkan salah");
    c.send("list-user");
    c.expect("list user : client_a, client_b, client_c.");
    // Nobody heard their own messages, and b heard no private message.
    a.expect_silence(QUIET);
    b.expect_silence(Duration::ZERO);
    c.expect_silence(Duration::ZERO);
}

#[test]
fn registration_and_login_errors() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send("halo");
    a.expect("Anda harus login terlebih dahulu");
    a.send("login andre 123");
    a.expect("Username atau Password anda Salah");
    a.send("regist");
    a.expect_raw("Username : ");
    a.send("client a");
    a.expect_raw("Password : ");
    a.send("123");
    a.expect("Username tidak valid: gunakan 1-32 huruf, angka, _ atau -");
    a.send("regist client_a 123");
    a.expect("Anda berhasil terdaftar");
    a.send("regist client_a 456");
    a.expect("Username telah dipakai");
    a.send("regist x");
    a.expect("Perintah yang anda ketikkan salah");
    a.send("login a b c");
    a.expect("Perintah yang anda ketikkan salah");
    a.send("login client_a 234");
    a.expect("Username atau Password anda Salah");
    a.send("login");
    a.expect_raw("Username : ");
    a.send("client_a");
    a.expect_raw("Password : ");
    a.send("123");
    a.expect("Login sukses");
    a.send("login client_a 123");
    a.expect("Anda telah melakukan login sebelumnya.");
    let mut b = server.connect();
    b.send("login client_a 123");
    b.expect("Username tersebut telah melakukan login sebelumnya.");
    b.send("send-to client_a hi");
    b.expect("Anda harus login terlebih dahulu");
    a.send("send-to nobody hi");
    a.expect("User nobody tidak sedang online");
}

#[test]
fn a_closed_connection_frees_its_name_and_tells_the_others() {
    let server = Server::start(&[]);
    let mut a = server.login("client_a");
    let mut b = server.login("client_b");
    drop(a);
    b.expect("Teman anda [client_a] telah offline");
    a = server.connect();
    a.send("login client_a pw");
    a.expect("Login sukses");
    a.send("logout");
    a.expect("Logout sukses");
    b.expect("Teman anda [client_a] telah offline");
    b.send("list-user");
    b.expect("list user : client_b.");
}

#[test]
fn a_half_closed_client_gets_every_reply_then_the_server_closes() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    // Everything in one write, then end of input, like `nc -N` with a script;
    // the last line has no newline.
    a.send_raw(b"regist client_a 123\nlogin client_a 123\nlist-user\nhelp\nlist-user");
    a.shutdown_write();
    a.expect("Anda berhasil terdaftar");
    a.expect("Login sukses");
    a.expect("list user : client_a.");
    let mut help = a.line();
    while help.starts_with("  ") || help.ends_with(':') {
        help = a.line();
    }
    assert_eq!(help, "list user : client_a.");
    a.expect_closed();
}

#[test]
fn quit_says_goodbye_and_ignores_the_rest() {
    let server = Server::start(&[]);
    let mut a = server.login("a");
    let mut b = server.login("b");
    a.send_raw(b"quit\nthis is ignored\nlist-user\n");
    a.expect("Sampai jumpa");
    a.expect_closed();
    b.expect("Teman anda [a] telah offline");
    b.expect_silence(QUIET);
}

#[test]
fn the_fifth_failed_login_closes_even_if_more_lines_follow() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    let mut burst = String::new();
    for _ in 0..5 {
        burst.push_str("login nobody wrong\n");
    }
    burst.push_str("login nobody wrong\nhalo\n");
    a.send_raw(burst.as_bytes());
    for _ in 0..5 {
        a.expect("Username atau Password anda Salah");
    }
    a.expect("Terlalu banyak percobaan login yang gagal");
    a.expect_closed();
}

#[test]
fn login_timeout_closes_a_connection_that_never_logs_in() {
    let server = Server::start(&["--login-timeout", "1"]);
    let mut idle = server.connect();
    let mut chatty = server.connect();
    let mut user = server.login("stays");
    let start = Instant::now();
    // Sending lines does not keep a connection from timing out.
    chatty.send("help");
    chatty.line();
    idle.expect("Waktu login habis");
    idle.expect_closed();
    assert!(start.elapsed() >= Duration::from_millis(500));
    while chatty.line() != "Waktu login habis" {}
    chatty.expect_closed();
    // A logged-in user is not timed out.
    user.send("list-user");
    user.expect("list user : stays.");
}

#[test]
fn english_catalogue() {
    let server = Server::start(&["--lang", "en"]);
    let mut a = server.connect();
    a.send("halo");
    a.expect("You must log in first");
    a.send("regist client_a 123");
    a.expect("Registration successful");
    a.send("login client_a 123");
    a.expect("Login successful");
    a.send("list-user");
    a.expect("online users : client_a.");
    a.send("send-to client_a hi");
    a.expect("Private message from [client_a] hi");
    a.send("quit");
    a.expect("Goodbye");
}

#[test]
fn telnet_line_endings_and_negotiation_are_understood() {
    let server = Server::start(&[]);
    let mut b = server.login("b");
    let mut a = server.connect();
    // What a telnet client may send first: IAC DO SUPPRESS-GO-AHEAD, IAC WILL
    // TERMINAL-TYPE, then lines ending in \r\n.
    a.send_raw(b"\xff\xfd\x03\xff\xfb\x18regist a pw\r\nlogin a pw\r\nhalo\r\n");
    // Both options are refused at once (SPEC 1), before any line's reply.
    let mut refusals = [0u8; 6];
    std::io::Read::read_exact(&mut a.stream, &mut refusals).expect("telnet refusals");
    assert_eq!(&refusals, b"\xff\xfc\x03\xff\xfe\x18");
    a.expect("Anda berhasil terdaftar");
    a.expect("Login sukses");
    b.expect("[a] halo");
}

#[test]
fn help_and_version_flags() {
    let bin = env!("CARGO_BIN_EXE_chat-server");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--host",
        "--port",
        "--accounts",
        "--max-clients",
        "--login-timeout",
        "--lang",
        "--log-level",
        "--hash-params",
        "--max-pending-auth",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let version = Command::new(bin).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let bad = Command::new(bin).args(["--lang", "fr"]).output().unwrap();
    assert!(!bad.status.success());
}

#[test]
fn passwords_never_reach_the_log() {
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.send("regist logcheck Sekr1tPassw0rd");
    a.expect("Anda berhasil terdaftar");
    a.send("login logcheck Wr0ngPassw0rd");
    a.expect("Username atau Password anda Salah");
    // A password typed at the Username prompt names no account: not logged.
    a.send("login");
    a.expect_raw("Username : ");
    a.send("Sekr1tPassw0rd");
    a.expect_raw("Password : ");
    a.send("logcheck");
    a.expect("Username atau Password anda Salah");
    a.send("login");
    a.expect_raw("Username : ");
    a.send("logcheck");
    a.expect_raw("Password : ");
    a.send("Sekr1tPassw0rd");
    a.expect("Login sukses");
    a.send("quit");
    a.expect("Sampai jumpa");
    let log = server.log_text();
    assert!(log.contains("logcheck logged in"), "{log}");
    assert!(!log.contains("Sekr1t") && !log.contains("Wr0ng"), "{log}");
}
