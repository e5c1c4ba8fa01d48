//! `make bench-history`: how many `STORED` messages per second the server
//! acknowledges with group commit, against one fsync per message, in the
//! same run and on the same disk; and the chat round trip of two online
//! users while a burst of 10 000 messages is being stored (goal: p99 within
//! 10 ms). Ignored by `cargo test`: it measures, and takes half a minute.

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, FAST_HASH, Server};

const SENDERS: usize = 100;
const PER_SENDER: usize = 100;

fn start(history: &std::path::Path, each: bool) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["--accounts", ":memory:", "--hash-params", FAST_HASH])
        .args(["--history", history.to_str().unwrap(), "--flood-rate", "0"])
        .args(["--log-level", "warn"]);
    if each {
        command.arg("--history-fsync-each");
    }
    Server::start_command(&mut command)
}

/// Registers `SENDERS` senders and as many offline recipients, then every
/// sender sends `PER_SENDER` messages as fast as the replies come; returns
/// STORED per second, and the round trips measured meanwhile.
fn run(server: &Server) -> (f64, Vec<Duration>) {
    let mut setup = server.connect();
    for i in 0..SENDERS {
        setup.send(&format!("regist s{i} pw"));
        setup.send(&format!("regist r{i} pw"));
    }
    setup.send("regist ping pw");
    setup.send("regist pong pw");
    for _ in 0..2 * SENDERS + 2 {
        setup.expect("Anda berhasil terdaftar");
    }
    let mut ping = server.login_existing("ping");
    let mut pong = server.login_existing("pong");
    let barrier = Arc::new(Barrier::new(SENDERS + 1));
    let handles: Vec<_> = (0..SENDERS)
        .map(|i| {
            let addr = server.addr;
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(&format!("login s{i} pw"));
                c.expect("Login sukses");
                barrier.wait();
                for n in 0..PER_SENDER {
                    c.send(&format!("send-to r{i} message {n}"));
                    // Senders that finish leave: skip their OFFLINE notices.
                    assert_eq!(next_reply(&mut c), format!("Pesan untuk r{i} disimpan"));
                }
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut round_trips = Vec::new();
    while !handles.iter().all(|h| h.is_finished()) {
        let sent = Instant::now();
        ping.send("send-to pong rt");
        assert_eq!(next_reply(&mut pong), "Pesan pribadi dari [ping] rt");
        round_trips.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    (
        (SENDERS * PER_SENDER) as f64 / elapsed.as_secs_f64(),
        round_trips,
    )
}

/// The next line that is not an OFFLINE notice.
fn next_reply(c: &mut Client) -> String {
    loop {
        let line = c.line();
        if !line.starts_with("Teman anda [") {
            return line;
        }
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

#[test]
#[ignore = "a measurement: run with `make bench-history`"]
fn stored_per_second_group_commit_against_fsync_each() {
    let dir = std::env::temp_dir().join(format!("chat-history-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut results = Vec::new();
    for (label, each) in [("group commit", false), ("fsync each", true)] {
        let path = dir.join(format!("{}.db", if each { "each" } else { "group" }));
        let server = start(&path, each);
        let (rate, rts) = run(&server);
        let p99 = p99(rts.clone());
        eprintln!(
            "history bench: {label}: {rate:.0} STORED/s ({} messages, {SENDERS} senders); \
             chat round trip during the burst: p99 {:.2} ms over {} samples",
            SENDERS * PER_SENDER,
            p99.as_secs_f64() * 1e3,
            rts.len()
        );
        results.push((label, rate, p99));
    }
    eprintln!(
        "history bench: group commit is {:.1}x one fsync per message",
        results[0].1 / results[1].1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
