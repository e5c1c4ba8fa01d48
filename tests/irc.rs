//! The IRC door (SPEC 8.3) against the real binary on loopback: raw IRC
//! transcripts for each way to log in, each error numeric, splitting,
//! PING/PONG both ways, and IRC and line users chatting across doors.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

const QUIET: Duration = Duration::from_millis(300);

/// Starts a server with the IRC door on a free port; returns it and the
/// door's address (read from the log line "IRC listening on ADDR").
fn start(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--irc-port", "0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let log = server.log_text();
        if let Some(rest) = log.split("IRC listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            return (server, addr.parse().expect("bad IRC address"));
        }
        assert!(Instant::now() < deadline, "no IRC listener; log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An IRC client over a raw socket.
struct Irc(Client);

impl Irc {
    fn connect(addr: SocketAddr) -> Irc {
        Irc(Client::connect(addr))
    }

    fn send(&mut self, line: &str) {
        self.0.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// The next line, without `\r\n`; every line must end in `\r\n` and
    /// fit in 512 bytes.
    fn line(&mut self) -> String {
        let bytes = self.0.line_bytes();
        assert!(bytes.len() < 512, "line of {} bytes", bytes.len() + 1);
        let line = String::from_utf8(bytes).expect("not UTF-8");
        line.strip_suffix('\r')
            .unwrap_or_else(|| panic!("no \\r\\n: {line:?}"))
            .to_owned()
    }

    fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Skips lines until one starts with `prefix`; returns it.
    fn until(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// The welcome: 001-005 then 422, addressed to `nick`.
    fn expect_welcome(&mut self, nick: &str) {
        for code in ["001", "002", "003", "004", "005", "422"] {
            let line = self.line();
            assert!(
                line.starts_with(&format!(":chat {code} {nick} ")),
                "expected {code} to {nick}, got {line:?}"
            );
        }
    }

    /// The JOIN of `nick` to #chat and the names, which must be `names`.
    fn expect_join(&mut self, nick: &str, names: &str) {
        self.expect(&format!(":{nick}!{nick}@chat JOIN #chat"));
        self.expect(&format!(":chat 353 {nick} = #chat :{names}"));
        self.expect(&format!(":chat 366 {nick} #chat :End of /NAMES list."));
    }

    /// Registers with `PASS` and expects to be logged in as `nick`.
    fn login(addr: SocketAddr, nick: &str, names: &str) -> Irc {
        let mut c = Irc::connect(addr);
        c.send("PASS pw");
        c.send(&format!("NICK {nick}"));
        c.send(&format!("USER {nick} 0 * :{nick}"));
        c.expect_welcome(nick);
        c.expect_join(nick, names);
        c
    }
}

/// Registers `name` (password `pw`) through the line door and leaves.
fn register(server: &Server, name: &str) {
    let mut c = server.connect();
    c.send(&format!("regist {name} pw"));
    c.expect("Anda berhasil terdaftar");
    c.send("quit");
    c.expect("Sampai jumpa");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn pass_login_then_chat_both_ways_with_a_line_user() {
    let (server, addr) = start(&[]);
    register(&server, "alice");
    let mut bob = server.login("bob");
    let mut alice = Irc::login(addr, "alice", "alice bob");
    // The 005 tells the truth about the one channel and the nick length.
    // Broadcasts and private messages, both ways.
    bob.send("halo semua");
    alice.expect(":bob!bob@chat PRIVMSG #chat :halo semua");
    alice.send("PRIVMSG #chat :hi bob");
    bob.expect("[alice] hi bob");
    alice.send("PRIVMSG bob :psst");
    bob.expect("Pesan pribadi dari [alice] psst");
    bob.send("send-to alice  yo  there");
    alice.expect(":bob!bob@chat PRIVMSG alice :yo  there");
    // list-user and NAMES both list both doors.
    bob.send("list-user");
    bob.expect("list user : alice, bob.");
    alice.send("NAMES #chat");
    alice.expect(":chat 353 alice = #chat :alice bob");
    alice.expect(":chat 366 alice #chat :End of /NAMES list.");
    // A login through the line door is a JOIN; leaving is a QUIT.
    let mut carol = server.login("carol");
    alice.expect(":carol!carol@chat JOIN #chat");
    carol.send("quit");
    carol.expect("Sampai jumpa");
    alice.expect(":carol!carol@chat QUIT :offline");
    // No echo of one's own messages.
    alice.0.expect_silence(QUIET);
    // QUIT: ERROR, closed, and the line user hears OFFLINE.
    alice.send("QUIT :bye");
    alice.until("ERROR :Sampai jumpa");
    alice.0.expect_closed();
    bob.expect("Teman anda [carol] telah offline");
    bob.expect("Teman anda [alice] telah offline");
    bob.expect_silence(QUIET);
}

#[test]
fn pass_with_account_and_password_names_the_nick() {
    let (server, addr) = start(&[]);
    register(&server, "carol");
    let mut c = Irc::connect(addr);
    c.send("PASS carol:pw");
    c.send("NICK somebody");
    c.send("USER x 0 * :X");
    c.expect_welcome("carol");
    c.expect_join("carol", "carol");
}

#[test]
fn sasl_plain_logs_in_before_the_welcome() {
    let (server, addr) = start(&[]);
    register(&server, "dave");
    let mut c = Irc::connect(addr);
    c.send("CAP LS 302");
    c.send("NICK dave");
    c.send("USER dave 0 * :Dave");
    c.expect(":chat CAP * LS :sasl=PLAIN server-time");
    c.send("CAP REQ :sasl");
    c.expect(":chat CAP dave ACK :sasl");
    c.send("AUTHENTICATE PLAIN");
    c.expect("AUTHENTICATE +");
    c.send(&format!("AUTHENTICATE {}", b64(b"\0dave\0pw")));
    c.expect(":chat 900 dave dave!dave@chat dave :You are now logged in as dave");
    c.expect(":chat 903 dave :SASL authentication successful");
    c.send("CAP END");
    c.expect_welcome("dave");
    c.expect_join("dave", "dave");
}

#[test]
fn wrong_passwords_get_464_and_904_and_count_as_failures() {
    let (server, addr) = start(&[]);
    register(&server, "erin");
    // PASS: 464, then the welcome without an account.
    let mut c = Irc::connect(addr);
    c.send("PASS nope");
    c.send("NICK erin");
    c.send("USER erin 0 * :E");
    c.expect(":chat 464 erin :Password incorrect");
    c.expect_welcome("erin");
    assert!(
        c.line()
            .starts_with(":NickServ!NickServ@services NOTICE erin :")
    );
    // Not logged in: the channel answers LOGIN_FIRST as a notice.
    c.send("PRIVMSG #chat :hello?");
    c.expect(":chat NOTICE erin :Anda harus login terlebih dahulu");
    // Four more wrong passwords through NickServ: the fifth closes.
    for _ in 0..3 {
        c.send("PRIVMSG NickServ :IDENTIFY wrong");
        c.expect(":NickServ!NickServ@services NOTICE erin :Username atau Password anda Salah");
    }
    c.send("PRIVMSG NickServ :IDENTIFY wrong");
    c.expect(":NickServ!NickServ@services NOTICE erin :Username atau Password anda Salah");
    c.expect("ERROR :Terlalu banyak percobaan login yang gagal");
    c.0.expect_closed();
    // SASL: 904.
    let mut c = Irc::connect(addr);
    c.send("CAP LS");
    c.expect(":chat CAP * LS :sasl server-time");
    c.send("CAP REQ :sasl");
    c.expect(":chat CAP * ACK :sasl");
    c.send("AUTHENTICATE PLAIN");
    c.expect("AUTHENTICATE +");
    c.send(&format!("AUTHENTICATE {}", b64(b"\0erin\0nope")));
    c.expect(":chat 904 * :SASL authentication failed");
    // Garbage is a failure too, without a login.
    c.send("AUTHENTICATE PLAIN");
    c.expect("AUTHENTICATE +");
    c.send("AUTHENTICATE !!!");
    c.expect(":chat 904 * :SASL authentication failed");
    c.send("AUTHENTICATE SCRAM-SHA-256");
    c.expect(":chat 908 * PLAIN :are available SASL mechanisms");
    c.expect(":chat 904 * :SASL authentication failed");
}

#[test]
fn a_name_online_elsewhere_gets_433() {
    let (server, addr) = start(&[]);
    let _frank = server.login("frank");
    let mut c = Irc::connect(addr);
    c.send("PASS pw");
    c.send("NICK frank");
    c.send("USER frank 0 * :F");
    c.expect(":chat 433 * frank :Nickname is already in use");
    // Registration goes on with another nick, without an account.
    c.send("NICK frank_");
    c.expect_welcome("frank_");
}

#[test]
fn nickserv_register_then_identify() {
    let (server, addr) = start(&["--lang", "en"]);
    let mut watcher = server.connect();
    watcher.send("regist watcher pw");
    watcher.expect("Registration successful");
    watcher.send("login watcher pw");
    watcher.expect("Login successful");
    let mut c = Irc::connect(addr);
    c.send("NICK gina");
    c.send("USER gina 0 * :G");
    c.expect_welcome("gina");
    c.expect(
        ":NickServ!NickServ@services NOTICE gina :This chat needs an account. Create one for your nick: /msg NickServ REGISTER password, then log in: /msg NickServ IDENTIFY password",
    );
    c.send("PRIVMSG NickServ :REGISTER secret");
    c.expect(":NickServ!NickServ@services NOTICE gina :Registration successful");
    c.send("PRIVMSG NickServ :REGISTER secret");
    c.expect(":NickServ!NickServ@services NOTICE gina :Username is already taken");
    c.send("PRIVMSG NickServ :IDENTIFY secret");
    c.expect(":NickServ!NickServ@services NOTICE gina :Login successful");
    c.expect_join("gina", "gina watcher");
    watcher.send("hello gina");
    c.expect(":watcher!watcher@chat PRIVMSG #chat :hello gina");
    // The nick is the account now.
    c.send("NICK other");
    c.expect(
        ":chat 447 gina other :Your nick is your account name: it cannot change while logged in",
    );
}

#[test]
fn error_numerics_403_421_417_and_harmless_mode_and_who() {
    let (server, addr) = start(&[]);
    register(&server, "hank");
    let mut c = Irc::login(addr, "hank", "hank");
    c.send("JOIN #elsewhere");
    c.expect(":chat 403 hank #elsewhere :No such channel");
    c.send("JOIN #chat");
    c.send("FROBNICATE now");
    c.expect(":chat 421 hank FROBNICATE :Unknown command");
    c.send(&format!("PRIVMSG #chat :{}", "x".repeat(600)));
    c.expect(":chat 417 hank :Input line was too long");
    c.send("MODE #chat");
    c.expect(":chat 324 hank #chat +nt");
    c.send("MODE hank +i");
    c.expect(":chat 221 hank +");
    c.send("WHO #chat");
    c.expect(":chat 352 hank #chat hank chat chat hank H :0 hank");
    c.expect(":chat 315 hank #chat :End of /WHO list.");
    c.send("PRIVMSG nobody :hi");
    c.expect(":chat 401 hank nobody :No such nick/channel");
    c.send("PRIVMSG #other :hi");
    c.expect(":chat 403 hank #other :No such channel");
    // Before registration, chat commands wait for it.
    let mut d = Irc::connect(addr);
    d.send("PRIVMSG #chat :early");
    d.expect(":chat 451 * :You have not registered");
    d.send("NICK bad*nick");
    d.expect(":chat 432 * bad*nick :Erroneous nickname");
    c.0.expect_silence(QUIET);
}

#[test]
fn long_messages_are_split_on_characters_to_fit_512_bytes() {
    let (server, addr) = start(&[]);
    register(&server, "ivy");
    let mut sender = server.login("a_sender_with_a_long_name_000000");
    let mut ivy = Irc::login(addr, "ivy", "a_sender_with_a_long_name_000000 ivy");
    let text: String = "Selamat pagi, dunia! é€𝄞 ".repeat(130);
    let text = text.trim().to_owned();
    assert!(text.len() > 4000 && text.len() <= 4096);
    sender.send(&text);
    let prefix =
        ":a_sender_with_a_long_name_000000!a_sender_with_a_long_name_000000@chat PRIVMSG #chat :";
    let mut got = String::new();
    let mut lines = 0;
    while got.len() < text.len() {
        let line = ivy.line();
        got.push_str(
            line.strip_prefix(prefix)
                .expect("a PRIVMSG from the sender"),
        );
        lines += 1;
    }
    assert_eq!(got, text);
    assert!(lines >= 9, "{lines} lines");
    // Private messages are split the same way.
    sender.send(&format!("send-to ivy {text}"));
    let prefix =
        ":a_sender_with_a_long_name_000000!a_sender_with_a_long_name_000000@chat PRIVMSG ivy :";
    let mut got = String::new();
    while got.len() < text.len() {
        got.push_str(ivy.line().strip_prefix(prefix).expect("a private PRIVMSG"));
    }
    assert_eq!(got, text);
}

#[test]
fn ping_pong_both_ways_and_a_silent_client_is_dropped() {
    let (server, addr) = start(&["--irc-ping", "1"]);
    register(&server, "jack");
    let mut watcher = server.login("watcher");
    let mut c = Irc::login(addr, "jack", "jack watcher");
    c.send("PING :lag-check 42");
    c.expect(":chat PONG chat :lag-check 42");
    // Silent for the interval: the server PINGs (checked every 5 s).
    c.0.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    c.expect("PING :chat");
    c.send("PONG :chat");
    c.expect("PING :chat");
    // Never answered: dropped, and the others hear it.
    c.expect("ERROR :Ping timeout");
    c.0.expect_closed();
    watcher.expect("Teman anda [jack] telah offline");
}

#[test]
fn the_limits_hold_for_irc_connections_too() {
    // --max-clients counts both doors together.
    let (_server, addr) = start(&["--max-clients", "1"]);
    let line_addr = _server.addr;
    let _first = Client::connect(line_addr);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Irc::connect(addr);
    c.expect("ERROR :Server penuh, coba lagi nanti");
    c.0.expect_closed();
    // The login timeout: welcomed without an account, then closed.
    let (_server, addr) = start(&["--login-timeout", "1"]);
    let mut c = Irc::connect(addr);
    c.send("NICK kim");
    c.send("USER kim 0 * :K");
    c.expect_welcome("kim");
    c.until("ERROR :Waktu login habis");
    c.0.expect_closed();
}

#[test]
fn senders_of_both_doors_at_once_each_reader_in_its_own_dialect_and_order() {
    let (server, addr) = start(&["--flood-rate", "0"]);
    for name in ["ib", "id"] {
        register(&server, name);
    }
    let mut la = server.login("la");
    let mut lc = server.login("lc");
    let mut ib = Irc::login(addr, "ib", "ib la lc");
    let mut id = Irc::login(addr, "id", "ib id la lc");
    ib.expect(":id!id@chat JOIN #chat");
    const N: usize = 50;
    // Both senders write all their lines at once, so the server sees them
    // in the same turns.
    let from_a: String = (0..N).map(|i| format!("a-{i}\n")).collect();
    // The IRC sender's private messages make the server deliver what it
    // gathered while that sender's own lines are being handled.
    let from_b: String = (0..N)
        .map(|i| format!("PRIVMSG #chat :b-{i}\r\nPRIVMSG la :p-{i}\r\n"))
        .collect();
    la.send_raw(from_a.as_bytes());
    ib.0.send_raw(from_b.as_bytes());
    // Each sender's lines arrive in order, in the reader's dialect; nobody
    // hears themselves.
    let check_line = |c: &mut Client, count_a: usize, count_b: usize, privates: usize| {
        let (mut a, mut b, mut private) = (0, 0, 0);
        while a < count_a || b < count_b || private < privates {
            let line = c.line();
            if let Some(i) = line.strip_prefix("[la] a-") {
                assert_eq!(i, a.to_string());
                a += 1;
            } else if let Some(i) = line.strip_prefix("[ib] b-") {
                assert_eq!(i, b.to_string());
                b += 1;
            } else if line.starts_with("Pesan pribadi dari [ib] p-") {
                private += 1;
            } else {
                panic!("unexpected line {line:?}");
            }
        }
    };
    let check_irc = |c: &mut Irc, count_a: usize, count_b: usize| {
        let (mut a, mut b) = (0, 0);
        while a < count_a || b < count_b {
            let line = c.line();
            if let Some(i) = line.strip_prefix(":la!la@chat PRIVMSG #chat :a-") {
                assert_eq!(i, a.to_string());
                a += 1;
            } else if let Some(i) = line.strip_prefix(":ib!ib@chat PRIVMSG #chat :b-") {
                assert_eq!(i, b.to_string());
                b += 1;
            } else {
                panic!("unexpected line {line:?}");
            }
        }
    };
    check_line(&mut lc, N, N, 0);
    check_line(&mut la, 0, N, N);
    check_irc(&mut id, N, N);
    check_irc(&mut ib, N, 0);
    for c in [&mut la, &mut lc] {
        c.expect_silence(QUIET);
    }
    for c in [&mut ib, &mut id] {
        c.0.expect_silence(Duration::ZERO);
    }
}

#[test]
fn a_door_that_cannot_listen_stops_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--accounts", ":memory:", "--port", "0"])
        .args(["--irc-port", &port.to_string()])
        .output()
        .expect("cannot run chat-server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("IRC door: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn flood_control_paces_an_irc_client_too() {
    // 20 lines at once, then 5 a second (the defaults): 30 PINGs take about
    // 2 s to be answered, all of them, in order.
    let (server, addr) = start(&[]);
    register(&server, "quick");
    let mut c = Irc::login(addr, "quick", "quick");
    let pings: String = (0..30).map(|i| format!("PING :p{i}\r\n")).collect();
    let started = Instant::now();
    c.0.send_raw(pings.as_bytes());
    for i in 0..30 {
        c.expect(&format!(":chat PONG chat :p{i}"));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "answered in {took:?}: not paced"
    );
}

#[test]
fn messages_for_an_offline_user_are_kept_and_replayed_over_irc() {
    let (server, addr) = start(&[]);
    register(&server, "lena");
    let mut bob = server.login("bob");
    // From the line door to an IRC user who is not online: STORED.
    bob.send("send-to lena see you later");
    bob.expect("Pesan untuk lena disimpan");
    // From an IRC user to a line user who is not online: STORED, as a notice.
    register(&server, "omar");
    let mut lena = Irc::login(addr, "lena", "bob lena");
    // The kept message follows the JOIN, from its sender, its time in front.
    let line = lena.line();
    let text = line
        .strip_prefix(":bob!bob@chat PRIVMSG lena :(")
        .unwrap_or_else(|| panic!("not the kept message: {line:?}"));
    assert!(text.ends_with(") see you later"), "{line:?}");
    lena.send("PRIVMSG omar :call me");
    lena.expect(":chat NOTICE lena :Pesan untuk omar disimpan");
}

/// SPEC 9 over IRC with IRCv3 `server-time`: a kept message carries the
/// time it was sent as a `@time=` tag, for a client that asked for it.
#[test]
fn kept_messages_carry_server_time_for_a_client_that_asked() {
    let (server, addr) = start(&[]);
    register(&server, "tess");
    let mut bob = server.login("bob");
    bob.send("send-to tess hello from before");
    bob.expect("Pesan untuk tess disimpan");
    let mut c = Irc::connect(addr);
    c.send("CAP LS 302");
    c.expect(":chat CAP * LS :sasl=PLAIN server-time");
    c.send("CAP REQ :server-time");
    c.expect(":chat CAP * ACK :server-time");
    c.send("PASS pw");
    c.send("NICK tess");
    c.send("USER tess 0 * :Tess");
    c.send("CAP END");
    c.expect_welcome("tess");
    c.expect_join("tess", "bob tess");
    let line = c.line();
    let (tag, rest) = line.split_once(' ').unwrap_or_default();
    let time = tag
        .strip_prefix("@time=")
        .unwrap_or_else(|| panic!("no server-time tag: {line:?}"));
    // YYYY-MM-DDThh:mm:ss.sssZ
    assert_eq!(time.len(), 24, "{time:?}");
    assert!(
        time.ends_with(".000Z") && time.as_bytes()[10] == b'T',
        "{time:?}"
    );
    assert!(
        rest.starts_with(":bob!bob@chat PRIVMSG tess :(") && rest.ends_with(") hello from before"),
        "{line:?}"
    );
    // A client that did not ask gets no tag.
    register(&server, "ugo");
    bob.send("send-to ugo hi");
    bob.expect("Pesan untuk ugo disimpan");
    let mut plain = Irc::login(addr, "ugo", "bob tess ugo");
    let line = plain.line();
    assert!(line.starts_with(":bob!bob@chat PRIVMSG ugo :("), "{line:?}");
}

/// The IRC door advertises `CASEMAPPING=ascii`, so a nick in other letter
/// case names the same user (the look-alike rule keeps it unambiguous).
#[test]
fn privmsg_to_a_nick_in_other_letter_case_reaches_its_user() {
    let (server, addr) = start(&[]);
    register(&server, "ib");
    let mut la = server.login("la");
    let mut ib = Irc::login(addr, "ib", "ib la");
    ib.send("PRIVMSG LA :halo");
    la.expect("Pesan pribadi dari [ib] halo");
    ib.send("PRIVMSG La :lagi");
    la.expect("Pesan pribadi dari [ib] lagi");
    // The line door keeps exact names (the seed's `send-to`).
    la.send("send-to IB hai");
    la.expect("User IB tidak sedang online");
}

/// `NickServ` is the IRC door's own voice: nobody may register it, or a
/// look-alike of it, through any door, whether or not the IRC door is open.
#[test]
fn nobody_can_register_the_name_of_nickserv() {
    let (server, _) = start(&[]);
    let mut c = server.connect();
    for name in ["NickServ", "nickserv", "NICKSERV", "n1ckserv"] {
        c.send(&format!("regist {name} pw"));
        c.expect("Username telah dipakai");
    }
    let plain = Server::start(&[]);
    let mut c = plain.connect();
    c.send("regist nickserv pw");
    c.expect("Username telah dipakai");
}
