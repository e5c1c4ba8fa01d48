//! `make soak`: a bounded soak of the real server. 1000 clients register, log
//! in, chat, reconnect and misbehave (over-long lines, control bytes, byte-at-
//! a-time lines, failed logins, stalled readers, abrupt closes) for a few
//! minutes. Afterwards the server must still be running without a panic, its
//! memory back near where it started, and every account that received
//! `REGIST_OK` must still log in. Meanwhile one more client sends private
//! messages to users who are never online: every one that got `STORED` must
//! arrive when they log in, after a restart (SPEC section 9).
//!
//! Ignored by `cargo test`; run with `make soak` (SOAK_SECS, SOAK_CLIENTS tune it).

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tiny deterministic generator (xorshift), so a failing soak can be rerun
/// with the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One simulated user.
struct SoakClient {
    stream: Option<TcpStream>,
    name: String,
    /// Registration replies still expected (the client sent `regist` but
    /// has not seen an answer yet).
    registering: bool,
    next_action: Instant,
    /// A stalled reader does not read until this moment.
    stalled_until: Option<Instant>,
    partial: Vec<u8>,
    generation: u32,
}

/// What the soak saw.
#[derive(Default)]
struct Tally {
    registered: Vec<String>,
    lines_received: u64,
    actions: u64,
    reconnects: u64,
}

fn soak_threads(
    addr: SocketAddr,
    clients: usize,
    threads: usize,
    run_for: Duration,
    phase: u32,
) -> Tally {
    let per_thread = clients.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || soak_worker(addr, t, per_thread, run_for, phase)))
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle.join().expect("soak worker panicked");
        total.registered.extend(tally.registered);
        total.lines_received += tally.lines_received;
        total.actions += tally.actions;
        total.reconnects += tally.reconnects;
    }
    total
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_nonblocking(true).ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

fn soak_worker(
    addr: SocketAddr,
    thread: usize,
    count: usize,
    run_for: Duration,
    phase: u32,
) -> Tally {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((thread as u64 + 1) << 20) ^ u64::from(phase));
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut clients: Vec<SoakClient> = (0..count)
        .map(|_| SoakClient {
            stream: None,
            name: String::new(),
            registering: false,
            next_action: start + Duration::from_millis(rng.below(2000)),
            stalled_until: None,
            partial: Vec::new(),
            generation: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < run_for {
        let now = Instant::now();
        for (i, c) in clients.iter_mut().enumerate() {
            // Read what is there, unless this client plays a stalled reader.
            if c.stalled_until.is_some_and(|t| now < t) {
            } else if let Some(stream) = c.stream.as_mut() {
                c.stalled_until = None;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            c.stream = None;
                            break;
                        }
                        Ok(n) => {
                            c.partial.extend_from_slice(&buf[..n]);
                            while let Some(at) = c.partial.iter().position(|&b| b == b'\n') {
                                let line: Vec<u8> = c.partial.drain(..=at).collect();
                                tally.lines_received += 1;
                                if c.registering && line.ends_with(b"Anda berhasil terdaftar\n") {
                                    c.registering = false;
                                    tally.registered.push(c.name.clone());
                                } else if c.registering
                                    && (line.ends_with(b"Username telah dipakai\n")
                                        || line.ends_with(b"Server sibuk, coba lagi nanti\n"))
                                {
                                    c.registering = false;
                                }
                            }
                            // Prompts have no newline; keep the buffer small.
                            if c.partial.len() > 8192 {
                                c.partial.clear();
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            c.stream = None;
                            break;
                        }
                    }
                }
            }
            if now < c.next_action {
                continue;
            }
            c.next_action = now + Duration::from_millis(100 + rng.below(400));
            tally.actions += 1;
            let Some(stream) = c.stream.as_mut() else {
                // (Re)connect, register a fresh name and log in.
                c.generation += 1;
                c.name = format!("p{phase}t{thread}c{i}g{}", c.generation);
                c.partial.clear();
                c.stream = connect(addr);
                if let Some(s) = c.stream.as_mut() {
                    tally.reconnects += 1;
                    let hello = format!("regist {0} pw{0}\nlogin {0} pw{0}\n", c.name);
                    c.registering = s.write_all(hello.as_bytes()).is_ok();
                }
                continue;
            };
            let message: Vec<u8> = match rng.below(100) {
                0..=1 => format!("halo dari {} nomor {}\n", c.name, rng.below(1000)).into_bytes(),
                2..=31 => b"list-user\n".to_vec(),
                32..=51 => format!(
                    "send-to p{phase}t{thread}c{} hai\n",
                    rng.below(count as u64)
                )
                .into_bytes(),
                52..=56 => [&[b'x'; 10_000][..], b"\n"].concat(),
                57..=61 => b"\x1b[2J\x07\xff\xfb\x01\xc2\x9b\xfe\xfftrash\r\n".to_vec(),
                62..=64 => b"login nobody wrong\n".repeat(6),
                65..=69 => {
                    c.stalled_until = Some(now + Duration::from_secs(1 + rng.below(5)));
                    Vec::new()
                }
                70..=72 => {
                    // Abrupt close in the middle of a line.
                    let _ = stream.write_all(b"half a li");
                    c.stream = None;
                    continue;
                }
                73..=74 => b"quit\n".to_vec(),
                75..=77 => b"logout\n".to_vec(),
                78..=80 => b"regist\nsomeone\n".to_vec(),
                81..=83 => format!("login {0} pw{0}\n", c.name).into_bytes(),
                84..=86 => {
                    // A line one byte per write.
                    for &b in b"help\n" {
                        let _ = stream.write_all(&[b]);
                    }
                    Vec::new()
                }
                _ => b"help\n".to_vec(),
            };
            if !message.is_empty() {
                match stream.write(&message) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => c.stream = None,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tally
}

/// Longer than the server's idle sweep (5 s), after which it has released
/// the buffers of the burst.
const SETTLE: Duration = Duration::from_secs(6);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a few minutes long: run with `make soak`"]
fn soak() {
    raise_own_fd_limit();
    let secs = env_or("SOAK_SECS", 150);
    let clients = env_or("SOAK_CLIENTS", 1000) as usize;
    let dir = std::env::temp_dir().join(format!("chat-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let accounts = dir.join("accounts.db");
    let history = dir.join("history.db");
    let mut server = Server::start_command(Command::new(env!("CARGO_BIN_EXE_chat-server")).args([
        "--accounts",
        accounts.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
        "--hash-params",
        FAST_HASH,
        "--login-timeout",
        "20",
        // The soak's own flooders measure the loop, not flood control.
        "--flood-rate",
        "0",
    ]));
    let pid = server.child.id();
    // Warm up: one client does a bit of everything, then leaves.
    {
        let mut warm = server.login("warmup");
        warm.send("list-user");
        warm.line();
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_start = rss_kib(pid);
    // Two equal halves: memory after the second should not exceed the first
    // by much, whatever the allocator keeps cached.
    let half = Duration::from_secs(secs / 2);
    let started = Instant::now();
    let mailer = {
        let addr = server.addr;
        let until = Instant::now() + 2 * half;
        std::thread::spawn(move || mail_offline(addr, until))
    };
    let first = soak_threads(server.addr, clients, 8, half, 1);
    // The server releases idle buffers and trims its heap every 5 s.
    std::thread::sleep(SETTLE);
    let rss_after_first = rss_kib(pid);
    let second = soak_threads(server.addr, clients, 8, half, 2);
    std::thread::sleep(SETTLE);
    let rss_end = rss_kib(pid);
    let stored = mailer.join().expect("the mailer panicked");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died during the soak:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    // Every account that got REGIST_OK logs in, on the same server and after
    // a restart from the accounts file.
    let mut registered: Vec<String> = first.registered;
    registered.extend(second.registered);
    let unique: HashSet<&String> = registered.iter().collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "a name was registered twice"
    );
    let check_all = |server: &Server| {
        let mut checker = server.connect();
        let mut batch = String::new();
        for name in &registered {
            batch.push_str(&format!("login {name} pw{name}\nlogout\n"));
        }
        checker.send_raw(batch.as_bytes());
        for name in &registered {
            let reply = checker.line();
            assert_eq!(reply, "Login sukses", "account {name} no longer logs in");
            checker.expect("Logout sukses");
        }
    };
    check_all(&server);
    server.signal(libc::SIGTERM);
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(0)
    );
    let restarted = Server::start_command(Command::new(env!("CARGO_BIN_EXE_chat-server")).args([
        "--accounts",
        accounts.to_str().unwrap(),
        "--history",
        history.to_str().unwrap(),
        "--hash-params",
        FAST_HASH,
        // The checks send two lines per account at once: flood control
        // would pace them at 5 a second.
        "--flood-rate",
        "0",
    ]));
    let stored_count: usize = stored.iter().map(Vec::len).sum();
    check_mailboxes(&restarted, &stored);
    check_all(&restarted);

    let actions = first.actions + second.actions;
    let received = first.lines_received + second.lines_received;
    let reconnects = first.reconnects + second.reconnects;
    eprintln!(
        "soak: {clients} clients, {:.0} s, {actions} actions, {reconnects} connections, \
         {received} lines received, {} accounts registered and verified after restart, \
         {stored_count} messages STORED for offline users and all delivered after restart; \
         server RSS {rss_start} KiB at start, {rss_after_first} KiB after the first half, \
         {rss_end} KiB at the end",
        started.elapsed().as_secs_f64(),
        registered.len()
    );
    // Memory back near where it started: idle connections hold no buffers,
    // and what stays is the accounts (about 270 bytes each; 512 allowed).
    let allowed = rss_start + 8 * 1024 + registered.len() as u64 / 2;
    assert!(
        rss_end < allowed,
        "server RSS grew from {rss_start} KiB to {rss_end} KiB (allowed {allowed} KiB)"
    );
    assert!(
        rss_end < rss_after_first + rss_after_first / 4 + 8 * 1024,
        "server RSS kept growing: {rss_after_first} KiB then {rss_end} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Users who never log in during the soak: the mailer's messages wait for them.
const MAILBOXES: usize = 50;

/// Registers [`MAILBOXES`] users and, until `until`, sends private messages
/// to them one at a time; returns, per mailbox, the texts that got `STORED`
/// (the replies to one connection come in order, among the broadcasts and
/// notices the mailer also receives).
fn mail_offline(addr: SocketAddr, until: Instant) -> Vec<Vec<String>> {
    let mut c = Client::connect(addr);
    for i in 0..MAILBOXES {
        c.send(&format!("regist mailbox{i} pw"));
    }
    c.send("regist mailer pw");
    c.send("login mailer pw");
    let mut stored = vec![Vec::new(); MAILBOXES];
    let mut seq = 0u64;
    // Skip to LOGIN_OK.
    while c.line() != "Login sukses" {}
    while Instant::now() < until {
        let to = (seq % MAILBOXES as u64) as usize;
        let text = format!("surat{seq}");
        c.send(&format!("send-to mailbox{to} {text}"));
        loop {
            let line = c.line();
            if line == format!("Pesan untuk mailbox{to} disimpan") {
                stored[to].push(text);
                break;
            }
            if line == format!("Kotak pesan mailbox{to} penuh")
                || line == "Gagal menyimpan pesan, coba lagi nanti"
            {
                // Full inboxes answer at once: do not spin.
                std::thread::sleep(Duration::from_millis(5));
                break;
            }
        }
        seq += 1;
    }
    stored
}

/// Every message that got `STORED` arrives, in order, once, at login.
fn check_mailboxes(server: &Server, stored: &[Vec<String>]) {
    for (i, texts) in stored.iter().enumerate() {
        let mut c = server.connect();
        c.send(&format!("login mailbox{i} pw"));
        c.expect("Login sukses");
        c.send("logout");
        let mut got = Vec::new();
        loop {
            let line = c.line();
            if line == "Logout sukses" {
                break;
            }
            if let Some((_, rest)) = line.split_once(") Pesan pribadi dari [mailer] ") {
                got.push(rest.to_owned());
            }
        }
        assert_eq!(&got, texts, "mailbox{i}");
    }
}
