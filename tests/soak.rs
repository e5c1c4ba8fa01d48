//! `make soak`: a bounded soak of the real server, with SPEC 7's limits on.
//! 1000 honest clients register, log in, chat, reconnect and are sloppy
//! (over-long lines, control bytes, byte-at-a-time lines, stalled readers,
//! abrupt closes) for a few minutes, while three attackers, each from its own
//! loopback address, do their worst: a flooder (127.0.0.2) broadcasts as
//! fast as its socket takes lines, a password guesser (127.0.0.3) tries
//! wrong passwords over reconnecting connections, and a connection spammer
//! (127.0.0.4) opens and drops connections as fast as it can.
//!
//! The server runs with `--exempt none`, so the per-address limits apply to
//! everyone, at their defaults. Honest clients come two to an address
//! (127.0.1.x and 127.0.2.x: a household behind one NAT), so what an honest
//! user does must fit the default limits: a client registers at most
//! [`REGISTS_PER_HALF`] accounts per half and otherwise logs back in, and
//! it never guesses passwords (that is the guesser's part).
//!
//! Afterwards the server must still be running without a panic, its memory
//! back near where it started, every account that received `REGIST_OK` must
//! still log in (on the same server and after a restart), no honest client
//! may have been closed by the server (every close it did not ask for with
//! `quit` or by dropping its own socket counts), and the guesser may have
//! had at most `--max-login-fails` passwords checked per 10 minutes.
//! Meanwhile one more client (from 127.0.5.x) sends private messages to
//! users who are never online: every one that got `STORED` must arrive when
//! they log in, after a restart (SPEC section 9).
//!
//! Ignored by `cargo test`; run with `make soak` (SOAK_SECS, SOAK_CLIENTS tune it).

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
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
    /// The loopback address this client's sockets are bound to.
    ip: IpAddr,
    /// Accounts this client registered (or tried to) in this half.
    regists: u32,
    /// `name` is an account that exists (REGIST_OK or NAME_TAKEN seen).
    has_account: bool,
    logged_in: bool,
    /// A `login` is under way since then.
    login_sent: Option<Instant>,
    /// The client sent `quit`: a close by the server is what it asked for.
    quitting: bool,
    /// The last line the server sent, for the report of an unexpected close.
    last_line: String,
}

/// Accounts an honest client registers per half, at most, before it only
/// logs back in: 3 per half, 2 halves, 2 clients to an address make 12
/// registrations per address per run, under `--max-regist-per-ip` (20 an
/// hour).
const REGISTS_PER_HALF: u32 = 3;

/// Honest clients per address.
const CLIENTS_PER_ADDRESS: usize = 2;

/// What the soak saw.
#[derive(Default)]
struct Tally {
    registered: Vec<String>,
    lines_received: u64,
    actions: u64,
    reconnects: u64,
    /// Honest connections closed by the server without the client asking.
    unexpected_closes: u64,
    /// A few of them: who, and the last line the server sent before.
    close_examples: Vec<String>,
    /// Honest connections that could not be opened.
    connect_failures: u64,
    /// The flooder's broadcasts, as received by all honest clients together.
    flood_lines_received: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.registered.extend(other.registered);
        self.lines_received += other.lines_received;
        self.actions += other.actions;
        self.reconnects += other.reconnects;
        self.unexpected_closes += other.unexpected_closes;
        for e in other.close_examples {
            if self.close_examples.len() < 10 {
                self.close_examples.push(e);
            }
        }
        self.connect_failures += other.connect_failures;
        self.flood_lines_received += other.flood_lines_received;
    }
}

/// What the attackers did and what the server answered them.
#[derive(Default, Debug)]
struct Attacks {
    flood_lines_written: u64,
    flooder_closed: u64,
    guesses: u64,
    /// `LOGIN_FAIL`: a password was checked.
    guess_fails: u64,
    guess_throttled: u64,
    guess_too_many_fails: u64,
    guess_refused_conns: u64,
    guess_connections: u64,
    spam_connections: u64,
    spam_connect_errors: u64,
    spam_sampled: u64,
    /// Sampled spam connections that got `TOO_MANY_CONNS`.
    spam_refused: u64,
}

impl Attacks {
    fn add(&mut self, o: Attacks) {
        self.flood_lines_written += o.flood_lines_written;
        self.flooder_closed += o.flooder_closed;
        self.guesses += o.guesses;
        self.guess_fails += o.guess_fails;
        self.guess_throttled += o.guess_throttled;
        self.guess_too_many_fails += o.guess_too_many_fails;
        self.guess_refused_conns += o.guess_refused_conns;
        self.guess_connections += o.guess_connections;
        self.spam_connections += o.spam_connections;
        self.spam_connect_errors += o.spam_connect_errors;
        self.spam_sampled += o.spam_sampled;
        self.spam_refused += o.spam_refused;
    }
}

const FLOODER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const GUESSER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const SPAMMER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// Honest client number `n`'s address: 127.0.1.1 to 127.0.2.250, two
/// clients to an address (wrapping around past 1000 clients).
fn honest_ip(n: usize) -> IpAddr {
    let slot = (n / CLIENTS_PER_ADDRESS) % 500;
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (slot / 250) as u8,
        1 + (slot % 250) as u8,
    ))
}

/// One half of the soak: the honest workers and the three attackers, side
/// by side for `run_for`.
fn soak_threads(
    addr: SocketAddr,
    clients: usize,
    threads: usize,
    run_for: Duration,
    phase: u32,
) -> (Tally, Attacks) {
    let per_thread = clients.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| std::thread::spawn(move || soak_worker(addr, t, per_thread, run_for, phase)))
        .collect();
    let attackers = [
        std::thread::spawn(move || flooder(addr, run_for, phase)),
        std::thread::spawn(move || guesser(addr, run_for)),
        std::thread::spawn(move || spammer(addr, run_for)),
    ];
    let mut total = Tally::default();
    for handle in handles {
        total.add(handle.join().expect("soak worker panicked"));
    }
    let mut attacks = Attacks::default();
    for handle in attackers {
        attacks.add(handle.join().expect("soak attacker panicked"));
    }
    (total, attacks)
}

/// A blocking connect from `from` (within `timeout`); `None` if it fails.
fn connect_socket(from: IpAddr, addr: SocketAddr, timeout: Duration) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .ok()?;
    socket.bind(&SocketAddr::new(from, 0).into()).ok()?;
    socket.connect_timeout(&addr.into(), timeout).ok()?;
    Some(socket)
}

/// A non-blocking client stream from `from`.
fn connect(from: IpAddr, addr: SocketAddr) -> Option<TcpStream> {
    let stream: TcpStream = connect_socket(from, addr, Duration::from_secs(5))?.into();
    stream.set_nonblocking(true).ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

/// 127.0.0.2: registers, logs in, then broadcasts lines as fast as its
/// socket takes them (reading and dropping what it is sent), reconnecting
/// if closed. Flood control should hold it to 5 lines a second.
fn flooder(addr: SocketAddr, run_for: Duration, phase: u32) -> Attacks {
    let mut a = Attacks::default();
    let start = Instant::now();
    let from = IpAddr::V4(FLOODER_IP);
    let name = format!("flood{phase}");
    let line = b"banjir banjir banjir banjir banjir banjir banjir banjir\n";
    let mut buf = vec![0u8; 65536];
    let mut first = true;
    while start.elapsed() < run_for {
        let Some(mut stream) = connect(from, addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let hello = if first {
            format!("regist {name} pw{name}\nlogin {name} pw{name}\n")
        } else {
            format!("login {name} pw{name}\n")
        };
        first = false;
        if stream.write_all(hello.as_bytes()).is_err() {
            continue;
        }
        // Up to 64 lines at a time, the rest of a partial write first.
        let mut pending: Vec<u8> = Vec::new();
        let mut written_bytes: u64 = 0;
        let closed = loop {
            if start.elapsed() >= run_for {
                break false;
            }
            let mut progress = false;
            if pending.is_empty() {
                pending = line.repeat(64);
            }
            match stream.write(&pending) {
                Ok(0) => break true,
                Ok(n) => {
                    pending.drain(..n);
                    written_bytes += n as u64;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => progress = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
            if !progress {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        a.flood_lines_written += written_bytes / line.len() as u64;
        if closed {
            a.flooder_closed += 1;
        }
    }
    a
}

/// 127.0.0.3: wrong passwords for a real honest account, one at a time, over
/// connections it reopens whenever the server closes one (the 5th failure
/// on a connection closes it; so does the login timeout).
fn guesser(addr: SocketAddr, run_for: Duration) -> Attacks {
    let mut a = Attacks::default();
    let start = Instant::now();
    let from = IpAddr::V4(GUESSER_IP);
    let victim = "p1t0c0g1";
    let mut buf = vec![0u8; 4096];
    while start.elapsed() < run_for {
        let Some(mut stream) = connect(from, addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        a.guess_connections += 1;
        let mut partial: Vec<u8> = Vec::new();
        let mut waiting = false;
        'conn: while start.elapsed() < run_for {
            if !waiting {
                a.guesses += 1;
                let guess = format!("login {victim} tebakan{}\n", a.guesses);
                if stream.write_all(guess.as_bytes()).is_err() {
                    break;
                }
                waiting = true;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            while let Some(at) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=at).collect();
                match &line[..line.len() - 1] {
                    b"Username atau Password anda Salah" => {
                        a.guess_fails += 1;
                        waiting = false;
                    }
                    b"Terlalu banyak percobaan, coba lagi nanti" => {
                        a.guess_throttled += 1;
                        waiting = false;
                    }
                    b"Terlalu banyak percobaan login yang gagal" => a.guess_too_many_fails += 1,
                    b"Terlalu banyak koneksi dari alamat anda" => {
                        a.guess_refused_conns += 1;
                        break 'conn;
                    }
                    b"Server sibuk, coba lagi nanti" => waiting = false,
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    a
}

/// 127.0.0.4: opens connections as fast as it can and drops each at once
/// with a reset (SO_LINGER 0, so no TIME_WAIT uses up its ports); one in 16
/// waits up to 200 ms for a reply, to count the `TOO_MANY_CONNS` refusals.
fn spammer(addr: SocketAddr, run_for: Duration) -> Attacks {
    let mut a = Attacks::default();
    let start = Instant::now();
    let from = IpAddr::V4(SPAMMER_IP);
    let mut buf = [0u8; 256];
    while start.elapsed() < run_for {
        let Some(socket) = connect_socket(from, addr, Duration::from_secs(1)) else {
            a.spam_connect_errors += 1;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        a.spam_connections += 1;
        let _ = socket.set_linger(Some(Duration::ZERO));
        if a.spam_connections % 16 == 0 {
            a.spam_sampled += 1;
            let mut stream: TcpStream = socket.into();
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            if let Ok(n) = stream.read(&mut buf)
                && buf[..n].starts_with(b"Terlalu banyak koneksi dari alamat anda")
            {
                a.spam_refused += 1;
            }
        }
    }
    a
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
        .map(|i| SoakClient {
            stream: None,
            name: String::new(),
            registering: false,
            next_action: start + Duration::from_millis(rng.below(2000)),
            stalled_until: None,
            partial: Vec::new(),
            generation: 0,
            ip: honest_ip(thread * count + i),
            regists: 0,
            has_account: false,
            logged_in: false,
            login_sent: None,
            quitting: false,
            last_line: String::new(),
        })
        .collect();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < run_for {
        let now = Instant::now();
        for (i, c) in clients.iter_mut().enumerate() {
            // Read what is there, unless this client plays a stalled reader.
            let mut closed = false;
            if c.stalled_until.is_some_and(|t| now < t) {
            } else if let Some(mut stream) = c.stream.take() {
                c.stalled_until = None;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => {
                            c.partial.extend_from_slice(&buf[..n]);
                            while let Some(at) = c.partial.iter().position(|&b| b == b'\n') {
                                let line: Vec<u8> = c.partial.drain(..=at).collect();
                                tally.lines_received += 1;
                                honest_line(c, &line[..at], &mut tally);
                            }
                            // Prompts have no newline; keep the buffer small.
                            if c.partial.len() > 8192 {
                                c.partial.clear();
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
                c.stream = Some(stream);
            }
            if closed {
                server_closed(c, &mut tally);
            }
            if now < c.next_action {
                continue;
            }
            c.next_action = now + Duration::from_millis(100 + rng.below(400));
            tally.actions += 1;
            let Some(stream) = c.stream.as_mut() else {
                // (Re)connect; register a fresh name while this half allows,
                // else log back in to the last one.
                c.partial.clear();
                c.quitting = false;
                c.logged_in = false;
                c.last_line.clear();
                c.stream = connect(c.ip, addr);
                let Some(s) = c.stream.as_mut() else {
                    tally.connect_failures += 1;
                    continue;
                };
                tally.reconnects += 1;
                let hello = if c.regists < REGISTS_PER_HALF || !c.has_account {
                    c.regists += 1;
                    c.generation += 1;
                    c.name = format!("p{phase}t{thread}c{i}g{}", c.generation);
                    c.has_account = false;
                    c.registering = true;
                    format!("regist {0} pw{0}\nlogin {0} pw{0}\n", c.name)
                } else {
                    format!("login {0} pw{0}\n", c.name)
                };
                c.login_sent = Some(now);
                if s.write_all(hello.as_bytes()).is_err() {
                    server_closed(c, &mut tally);
                }
                continue;
            };
            // Logged out (or the login was refused): an honest user logs
            // back in before the login timeout, unless a login is under way;
            // one whose registration was refused (BUSY) registers again.
            if !c.logged_in
                && c.login_sent
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
            {
                c.login_sent = Some(now);
                let again = if c.has_account {
                    format!("login {0} pw{0}\n", c.name)
                } else {
                    c.registering = true;
                    format!("regist {0} pw{0}\nlogin {0} pw{0}\n", c.name)
                };
                if stream.write_all(again.as_bytes()).is_err() {
                    server_closed(c, &mut tally);
                }
                continue;
            }
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
                // A mistyped login: never relayed, not a failed login.
                // (Failed logins are the guesser's part.)
                62..=64 => format!("Login {0} pw{0}\n", c.name).into_bytes(),
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
                73..=74 => {
                    c.quitting = true;
                    b"quit\n".to_vec()
                }
                75..=77 => b"logout\n".to_vec(),
                // The prompt dialogue, all three lines of it.
                78..=80 => b"regist\nsomeone\nsomepw\n".to_vec(),
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
                    Err(_) => server_closed(c, &mut tally),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tally
}

/// One line the server sent an honest client: track registration and login.
fn honest_line(c: &mut SoakClient, line: &[u8], tally: &mut Tally) {
    // Replies may follow a prompt (`Password : `) on the same line.
    let ends = |s: &[u8]| line.ends_with(s);
    if c.registering && ends(b"Anda berhasil terdaftar") {
        c.registering = false;
        c.has_account = true;
        tally.registered.push(c.name.clone());
    } else if c.registering && ends(b"Username telah dipakai") {
        // Registered by an earlier connection whose reply never came.
        c.registering = false;
        c.has_account = true;
    } else if c.registering
        && (ends(b"Server sibuk, coba lagi nanti")
            || ends(b"Terlalu banyak percobaan, coba lagi nanti"))
    {
        // Not registered: the next connection registers afresh.
        c.registering = false;
    } else if ends(b"Login sukses") {
        c.logged_in = true;
        c.login_sent = None;
    } else if ends(b"Logout sukses") {
        c.logged_in = false;
    } else if ends(b"Username atau Password anda Salah")
        || ends(b"Username tersebut telah melakukan login sebelumnya.")
        || ends(b"Server sibuk, coba lagi nanti")
        || ends(b"Terlalu banyak percobaan, coba lagi nanti")
    {
        c.login_sent = None;
    } else if line.starts_with(b"[flood") {
        tally.flood_lines_received += 1;
    }
    c.last_line = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
}

/// The server closed an honest client's connection (or a write to it
/// failed). After `quit` that is what the client asked for; otherwise it is
/// an honest user dropped, which the soak does not allow.
fn server_closed(c: &mut SoakClient, tally: &mut Tally) {
    c.stream = None;
    c.logged_in = false;
    if !c.quitting {
        tally.unexpected_closes += 1;
        if tally.close_examples.len() < 10 {
            tally.close_examples.push(format!(
                "{} from {}: last line {:?}",
                c.name, c.ip, c.last_line
            ));
        }
    }
}

/// Every name in `names` logs in (and out again) with its password. Flood
/// control paces each connection to 5 lines a second after a burst of 20,
/// so the names are spread over up to 200 connections, each from its own
/// address in 127.0.3.x / 127.0.4.x (per-address limits apply: 20
/// connections an address); all send first, then all are read, so the
/// check takes about as long as one connection's share.
fn check_all(server: &Server, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let conns = names.len().div_ceil(10).min(200);
    let share = names.len().div_ceil(conns);
    let mut checkers: Vec<(Client, &[String])> = names
        .chunks(share)
        .enumerate()
        .map(|(k, chunk)| {
            let ip = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                3 + (k / 250) as u8,
                1 + (k % 250) as u8,
            ));
            (Client::connect_from(ip, server.addr), chunk)
        })
        .collect();
    for (checker, chunk) in &mut checkers {
        let mut batch = String::new();
        for name in chunk.iter() {
            batch.push_str(&format!("login {name} pw{name}\nlogout\n"));
        }
        checker.send_raw(batch.as_bytes());
    }
    // The checkers see each other log out: skip those notices.
    let reply = |c: &mut Client| loop {
        let line = c.line();
        if !(line.starts_with("Teman anda [") && line.ends_with("] telah offline")) {
            return line;
        }
    };
    for (checker, chunk) in &mut checkers {
        for name in chunk.iter() {
            assert_eq!(
                reply(checker),
                "Login sukses",
                "account {name} no longer logs in"
            );
            assert_eq!(reply(checker), "Logout sukses", "account {name}");
        }
    }
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
        // Every address is limited, loopback too: the attackers and the
        // honest clients each have their own 127.x.y.z. Flood control and
        // every other limit keep their defaults.
        "--exempt",
        "none",
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
    let (first, attacks1) = soak_threads(server.addr, clients, 8, half, 1);
    // The server releases idle buffers and trims its heap every 5 s.
    std::thread::sleep(SETTLE);
    let rss_after_first = rss_kib(pid);
    let (second, attacks2) = soak_threads(server.addr, clients, 8, half, 2);
    std::thread::sleep(SETTLE);
    let rss_end = rss_kib(pid);
    let soak_time = started.elapsed();
    let stored = mailer.join().expect("the mailer panicked");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died during the soak:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    let mut honest = first;
    honest.add(second);
    let mut attacks = attacks1;
    attacks.add(attacks2);

    // Every account that got REGIST_OK logs in, on the same server and after
    // a restart from the accounts file.
    let registered: Vec<String> = std::mem::take(&mut honest.registered);
    let unique: HashSet<&String> = registered.iter().collect();
    assert_eq!(
        unique.len(),
        registered.len(),
        "a name was registered twice"
    );
    check_all(&server, &registered);
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
    check_all(&restarted, &registered);

    let received = honest.lines_received;
    let honest_secs = 2 * half.as_secs().max(1);
    eprintln!(
        "soak: {clients} clients, {:.0} s, {} actions, {} connections, \
         {received} lines received, {} accounts registered and verified after restart, \
         {stored_count} messages STORED for offline users and all delivered after restart; \
         server RSS {rss_start} KiB at start, {rss_after_first} KiB after the first half, \
         {rss_end} KiB at the end",
        soak_time.as_secs_f64(),
        honest.actions,
        honest.reconnects,
        registered.len()
    );
    eprintln!(
        "soak: honest clients: {} closed by the server unasked, {} could not connect",
        honest.unexpected_closes, honest.connect_failures
    );
    eprintln!(
        "soak: flooder (127.0.0.2): {} lines written, closed {} times; honest clients got \
         {} of its lines, {:.1} a second each",
        attacks.flood_lines_written,
        attacks.flooder_closed,
        honest.flood_lines_received,
        honest.flood_lines_received as f64 / clients.max(1) as f64 / honest_secs as f64
    );
    eprintln!(
        "soak: guesser (127.0.0.3): {} guesses over {} connections: {} passwords checked \
         (LOGIN_FAIL), {} THROTTLED, {} TOO_MANY_FAILS, {} connections refused",
        attacks.guesses,
        attacks.guess_connections,
        attacks.guess_fails,
        attacks.guess_throttled,
        attacks.guess_too_many_fails,
        attacks.guess_refused_conns
    );
    eprintln!(
        "soak: connection spammer (127.0.0.4): {} connections opened, {} failed to open; \
         {} of {} sampled got TOO_MANY_CONNS",
        attacks.spam_connections,
        attacks.spam_connect_errors,
        attacks.spam_refused,
        attacks.spam_sampled
    );
    assert_eq!(
        honest.unexpected_closes,
        0,
        "honest clients were disconnected by the server; for instance:\n{}",
        honest.close_examples.join("\n")
    );
    // `--max-login-fails` (10) per address per 10 minutes, the whole soak
    // counting as one window per 10 minutes started.
    let windows = 1 + soak_time.as_secs() / 600;
    assert!(
        attacks.guess_fails <= 10 * windows,
        "the guesser had {} passwords checked; at most {} allowed",
        attacks.guess_fails,
        10 * windows
    );
    assert!(
        attacks.guess_throttled > 0,
        "the guesser was never THROTTLED"
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
    // The soak's server limits every address (`--exempt none`): 51
    // registrations from one address would pass `--max-regist-per-ip`, so
    // each mailbox is registered from its own 127.0.5.x.
    for i in 0..MAILBOXES {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 5, 1 + i as u8));
        let mut m = Client::connect_from(ip, addr);
        // The soak's honest clients register at the same moment: the hash
        // queue may be full (BUSY, which reserves nothing); try again.
        for attempt in 0.. {
            m.send(&format!("regist mailbox{i} pw"));
            let reply = m.line();
            if reply == "Anda berhasil terdaftar" {
                break;
            }
            assert!(
                reply == "Server sibuk, coba lagi nanti" && attempt < 200,
                "mailbox{i}: {reply}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut c = Client::connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 5, 250)), addr);
    for attempt in 0.. {
        c.send("regist mailer pw");
        let reply = c.line();
        if reply == "Anda berhasil terdaftar" {
            break;
        }
        assert!(
            reply == "Server sibuk, coba lagi nanti" && attempt < 200,
            "mailer: {reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.send("login mailer pw");
    let mut stored = vec![Vec::new(); MAILBOXES];
    let mut seq = 0u64;
    // Skip to LOGIN_OK, logging in again after a BUSY.
    for attempt in 0.. {
        let reply = c.line();
        if reply == "Login sukses" {
            break;
        }
        if reply == "Server sibuk, coba lagi nanti" {
            assert!(attempt < 200, "the mailer cannot log in");
            std::thread::sleep(Duration::from_millis(50));
            c.send("login mailer pw");
        }
    }
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
