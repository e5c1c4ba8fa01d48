//! Issue 9, the rows that live in the event loop, against the real binary:
//! TCP keepalive, the server-wide output limit, the reserve descriptor, SIGHUP
//! and `--version`.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SERVER_FULL: &str = "Server penuh, coba lagi nanti";
const LOGIN_FIRST: &str = "Anda harus login terlebih dahulu";

/// The timer column (`tr`) of the server's end of an IPv4 loopback
/// connection in /proc/net/tcp (what `ss -tnoe` reads): 2 is the keepalive
/// timer, 0 no timer at all.
fn server_side_timer(server_port: u16, client_port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{server_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
        let (l, r, timer) = (cols.get(1)?, cols.get(2)?, cols.get(5)?);
        (l.ends_with(&local) && r.ends_with(&remote))
            .then(|| u32::from_str_radix(timer.split(':').next()?, 16).ok())
            .flatten()
    })
}

/// SPEC 5: every connection has TCP keepalive, so a peer that vanished is
/// found in about two minutes. An idle established socket without keepalive
/// has no timer at all; with it, the keepalive timer runs.
#[test]
fn every_connection_has_a_keepalive_timer() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send("help");
    client.line();
    let client_port = client.stream.local_addr().unwrap().port();
    // Give the ACKs a moment to settle, so no retransmit timer hides it.
    let timer = (0..50)
        .find_map(|_| {
            thread::sleep(Duration::from_millis(20));
            server_side_timer(server.addr.port(), client_port).filter(|&t| t == 2)
        })
        .or_else(|| server_side_timer(server.addr.port(), client_port));
    assert_eq!(
        timer,
        Some(2),
        "the server's socket has no keepalive timer (0 = none, 2 = keepalive)"
    );
    // And the probes start after a minute: the timer's expiry is 45-60 s away.
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let row = table
        .lines()
        .find(|r| {
            r.contains(&format!(":{:04X} ", server.addr.port()))
                && r.contains(&format!(":{client_port:04X} "))
        })
        .unwrap_or_default()
        .to_owned();
    eprintln!("/proc/net/tcp row of the server's end: {row}");
}

/// Sets SO_RCVBUF small, so a client that does not read fills up quickly.
fn small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a live socket with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// SPEC 5: all output buffers together stay under `--max-output-mb`; past
/// it, the reader furthest behind is disconnected first, while readers that
/// keep up are never dropped. Four readers that never read could hold 1 MiB
/// each; with a 2 MiB total, the server must shed some of them well before
/// each reaches its own 1 MiB limit.
#[test]
fn the_server_wide_output_limit_sheds_the_readers_furthest_behind() {
    let server = Server::start(&[
        "--max-output-mb",
        "2",
        "--flood-rate",
        "5000",
        "--flood-burst",
        "500",
    ]);
    let mut stalled = Vec::new();
    for i in 0..4 {
        let c = server.login(&format!("stalled{i}"));
        small_receive_buffer(&c.stream);
        stalled.push(c);
    }
    let mut reader = server.login("reader");
    let mut sender = server.login("sender");
    let line = format!("payload {}", "x".repeat(1000));
    let reading = thread::spawn(move || {
        let mut got = 0;
        loop {
            let l = reader.line();
            if l.starts_with("[sender] payload") {
                got += 1;
            } else if l == "[sender] done" {
                return (reader, got);
            }
        }
    });
    // 12 MB in all: the kernel holds up to about 4 MB per stalled reader
    // (the server's send buffer), then each would pass 1 MiB of the
    // server's own buffer if nothing but the per-reader limit applied.
    let mut batch = String::new();
    for _ in 0..40 {
        batch.push_str(&line);
        batch.push('\n');
    }
    for _ in 0..300 {
        sender.send_raw(batch.as_bytes());
    }
    sender.send("done");
    let (_reader, got) = reading.join().expect("the reading client lost messages");
    assert_eq!(got, 12000, "the reader that keeps up lost messages");
    let shed = wait_for(Duration::from_secs(10), || {
        server.log_text().contains("furthest behind")
    });
    let log = server.log_text();
    assert!(
        shed,
        "no reader was shed for the total; log:\n{}",
        tail(&log)
    );
    let shed_count = log.matches("furthest behind").count();
    eprintln!("readers shed for the server-wide limit: {shed_count} of 4");
    // Every shed line names a reader that was below its own 1 MiB limit.
    for l in log.lines().filter(|l| l.contains("furthest behind")) {
        let pending: usize = l
            .rsplit('(')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        assert!(pending < 1024 * 1024, "shed only at its own limit: {l}");
    }
    // The sender is still there.
    sender.send("list-user");
    let mut reply = sender.line();
    while reply.starts_with("Teman anda") {
        reply = sender.line();
    }
    assert!(
        reply.contains("reader") && reply.contains("sender"),
        "{reply}"
    );
}

/// SPEC 5: with no descriptor left, a connection the server cannot keep gets
/// `SERVER_FULL` and is closed (a descriptor is held in reserve for that),
/// instead of waiting unanswered in the backlog.
#[test]
fn out_of_descriptors_newcomers_get_server_full_instead_of_silence() {
    const LIMIT: libc::rlim_t = 48;
    const CONNECTIONS: usize = 80;
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command.args(["--accounts", ":memory:", "--hash-params", FAST_HASH]);
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(&mut command);
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| server.connect()).collect();
    let (mut served, mut refused) = (0, 0);
    for c in &mut clients {
        c.send("halo");
        match c.line().as_str() {
            LOGIN_FIRST => served += 1,
            SERVER_FULL => {
                refused += 1;
                c.expect_closed();
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    eprintln!(
        "{CONNECTIONS} clients, descriptor limit {LIMIT}: {served} served, {refused} told SERVER_FULL"
    );
    assert_eq!(served + refused, CONNECTIONS);
    assert!(refused > 0 && served > 0);
    let log = server.log_text();
    assert_eq!(
        log.matches("cannot accept").count(),
        1,
        "one warning per episode; log:\n{}",
        tail(&log)
    );
    // Descriptors free up: newcomers are served again.
    clients.truncate(5);
    let mut fresh = server.connect();
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        fresh.send("halo");
        let reply = fresh.line();
        if reply == LOGIN_FIRST {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        fresh = server.connect();
    }
}

/// SPEC 5: SIGHUP never stops the server, and it says so in the log.
#[test]
fn sighup_is_logged_and_survived() {
    let mut server = Server::start(&[]);
    let mut before = server.login("before");
    server.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(5), || server
            .log_text()
            .contains("SIGHUP")),
        "SIGHUP not logged; log:\n{}",
        tail(&server.log_text())
    );
    assert!(
        server.wait_exit(Duration::from_millis(300)).is_none(),
        "SIGHUP stopped the server"
    );
    let mut after = server.login("after");
    after.send("still here");
    before.expect("[after] still here");
    before.send("list-user");
    before.expect("list user : after, before.");
}

#[test]
fn version_names_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--version")
        .output()
        .expect("cannot run chat-server");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("chat-server "),
        "--version printed {text:?}"
    );
}

/// A peer that goes away without a word (here: its socket simply closes
/// while it is logged in) frees its name at once, and the others hear of it.
#[test]
fn a_vanished_logged_in_peer_frees_its_name() {
    let server = Server::start(&[]);
    let mut other = server.login("other");
    let gone = server.login("ghost");
    drop(gone);
    other.expect("Teman anda [ghost] telah offline");
    let mut again = server.connect();
    again.send("login ghost pw");
    again.expect("Login sukses");
    let mut buf = [0u8; 1];
    again
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(again.stream.read(&mut buf).is_err(), "unexpected bytes");
}

/// SPEC 2: a new name that looks like an existing one (letter case, l/I/1,
/// O/0) gets NAME_TAKEN; login stays exact.
#[test]
fn look_alike_names_cannot_be_registered() {
    let server = Server::start(&[]);
    let mut alice = server.login("alice");
    let mut c = server.connect();
    for name in ["Alice", "ALICE", "aIice", "a1ice"] {
        c.send(&format!("regist {name} pw"));
        c.expect("Username telah dipakai");
    }
    c.send("login Alice pw");
    c.expect("Username atau Password anda Salah");
    c.send("regist b0b pw");
    c.expect("Anda berhasil terdaftar");
    c.send("regist BOB pw");
    c.expect("Username telah dipakai");
    alice.send("list-user");
    alice.expect("list user : alice.");
}
