//! Issue 11, SPEC section 7: limits against abuse, against the real binary.
//! Per-address limits exempt loopback by default, so these tests run the
//! server with `--exempt none` and tell clients apart by binding their
//! sockets to 127.0.0.2, 127.0.0.3, ...

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const TOO_MANY_CONNS: &str = "Terlalu banyak koneksi dari alamat anda";
const THROTTLED: &str = "Terlalu banyak percobaan, coba lagi nanti";
const LOGIN_FAIL: &str = "Username atau Password anda Salah";
const LOGIN_FIRST: &str = "Anda harus login terlebih dahulu";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A connection the server keeps: it answers `halo` with LOGIN_FIRST.
fn assert_kept(c: &mut Client) {
    c.send("halo");
    c.expect(LOGIN_FIRST);
}

#[test]
fn connections_per_address_are_capped_and_other_addresses_are_not_affected() {
    let server = Server::start(&["--exempt", "none", "--max-conns-per-ip", "3"]);
    let mut kept: Vec<Client> = (0..3)
        .map(|_| Client::connect_from(ip(2), server.addr))
        .collect();
    for c in &mut kept {
        assert_kept(c);
    }
    let mut over = Client::connect_from(ip(2), server.addr);
    over.expect(TOO_MANY_CONNS);
    over.expect_closed();
    // Another address is not affected.
    let mut other = Client::connect_from(ip(3), server.addr);
    assert_kept(&mut other);
    // One closes: there is room again.
    drop(kept.pop());
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut again = Client::connect_from(ip(2), server.addr);
        again.send("halo");
        let reply = again.line();
        if reply == LOGIN_FIRST {
            break;
        }
        assert_eq!(reply, TOO_MANY_CONNS);
        assert!(Instant::now() < deadline, "no room after a close");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn new_connections_per_minute_are_capped() {
    let server = Server::start(&["--exempt", "none", "--max-new-conns-per-ip", "5"]);
    for _ in 0..5 {
        let mut c = Client::connect_from(ip(4), server.addr);
        assert_kept(&mut c);
    }
    let mut sixth = Client::connect_from(ip(4), server.addr);
    sixth.expect(TOO_MANY_CONNS);
    sixth.expect_closed();
    let mut other = Client::connect_from(ip(5), server.addr);
    assert_kept(&mut other);
    // The default exempts loopback: the same churn there is never refused.
    let open = Server::start(&["--max-new-conns-per-ip", "5"]);
    for _ in 0..8 {
        let mut c = Client::connect_from(ip(4), open.addr);
        assert_kept(&mut c);
    }
}

/// 1000 guesses from one address check at most 10 passwords; the rest get
/// THROTTLED, as fast for a known name as for an unknown one, and another
/// address logs in as usual. Default hash cost, so a checked password is
/// tens of milliseconds and a THROTTLED reply is not.
#[test]
fn a_thousand_guesses_from_one_address_check_at_most_ten_passwords() {
    let server = Server::start(&[
        "--exempt",
        "none",
        "--flood-rate",
        "0",
        "--hash-params",
        "m=19456,t=2,p=1",
    ]);
    let mut owner = Client::connect_from(ip(7), server.addr);
    owner.send("regist alice right");
    owner.expect("Anda berhasil terdaftar");

    let (mut fails, mut throttled) = (0, 0);
    let mut guesses = 0;
    let mut conn = Client::connect_from(ip(6), server.addr);
    let mut known_ms = Vec::new();
    let mut unknown_ms = Vec::new();
    while guesses < 1000 {
        // Half the guesses name an account, half a name nobody has.
        let name = if guesses % 2 == 0 { "alice" } else { "nobody" };
        let start = Instant::now();
        conn.send(&format!("login {name} guess{guesses}"));
        let reply = conn.line();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        guesses += 1;
        match reply.as_str() {
            LOGIN_FAIL => {
                fails += 1;
                // The fifth failure on one connection closes it.
                if fails % 5 == 0 {
                    conn.expect("Terlalu banyak percobaan login yang gagal");
                    conn.expect_closed();
                    conn = Client::connect_from(ip(6), server.addr);
                }
            }
            THROTTLED => {
                throttled += 1;
                if name == "alice" {
                    known_ms.push(ms);
                } else {
                    unknown_ms.push(ms);
                }
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    let log = server.log_text();
    let checked = log.matches(": failed login ").count();
    eprintln!(
        "1000 guesses: {fails} LOGIN_FAIL, {throttled} THROTTLED, {checked} failed logins logged"
    );
    assert_eq!(fails, 10, "log:\n{}", tail(&log));
    assert_eq!(throttled, 990);
    assert!(checked <= 10, "{checked} passwords checked");
    // Same speed for known and unknown names: no hash either way.
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (known, unknown) = (median(&mut known_ms), median(&mut unknown_ms));
    eprintln!("THROTTLED median: known name {known:.3} ms, unknown name {unknown:.3} ms");
    assert!(
        known < 5.0 && unknown < 5.0,
        "THROTTLED took {known} / {unknown} ms"
    );
    // Another address is not throttled.
    owner.send("login alice right");
    owner.expect("Login sukses");
    // THROTTLED is not itself a failure: the connection stays open.
    conn.send("halo");
    conn.expect(LOGIN_FIRST);
}

#[test]
fn registrations_per_address_are_capped_and_throttled_ones_reserve_no_name() {
    let server = Server::start(&["--exempt", "none", "--max-regist-per-ip", "3"]);
    let mut c = Client::connect_from(ip(8), server.addr);
    for i in 0..3 {
        c.send(&format!("regist user{i} pw"));
        c.expect("Anda berhasil terdaftar");
    }
    c.send("regist squat pw");
    c.expect(THROTTLED);
    c.send("regist");
    c.expect_raw("Username : ");
    c.send("squat2");
    c.expect_raw("Password : ");
    c.send("pw");
    c.expect(THROTTLED);
    // The names were not reserved: another address takes them.
    let mut other = Client::connect_from(ip(9), server.addr);
    other.send("regist squat pw");
    other.expect("Anda berhasil terdaftar");
    other.send("regist squat2 pw");
    other.expect("Anda berhasil terdaftar");
    // Logging in is not a registration.
    c.send("login user0 pw");
    c.expect("Login sukses");
}

/// One address holds at most a quarter of --max-pending-auth hash jobs (at
/// least one); one more gets BUSY, and BUSY is not a failed login.
#[test]
fn one_address_holds_at_most_its_share_of_the_hash_queue() {
    let server = Server::start(&[
        "--exempt",
        "none",
        "--max-pending-auth",
        "4",
        "--auth-threads",
        "1",
        "--hash-params",
        "m=65536,t=4,p=1",
    ]);
    let mut first = Client::connect_from(ip(10), server.addr);
    let mut second = Client::connect_from(ip(10), server.addr);
    let mut elsewhere = Client::connect_from(ip(11), server.addr);
    first.send("login nobody x");
    // The first job takes ~100 ms or more: these arrive while it runs.
    thread::sleep(Duration::from_millis(10));
    second.send("login nobody y");
    second.expect("Server sibuk, coba lagi nanti");
    elsewhere.send("login nobody z");
    first.expect(LOGIN_FAIL);
    elsewhere.expect(LOGIN_FAIL);
    // The address's job is done: it may start another.
    second.send("login nobody w");
    second.expect(LOGIN_FAIL);
}

/// A connection over its flood allowance is read more slowly: every line is
/// answered, in order, none dropped, none answered with an error.
#[test]
fn a_flooding_connections_lines_are_all_answered_in_order_just_later() {
    let server = Server::start(&["--flood-burst", "10", "--flood-rate", "20"]);
    let mut a = server.login("flooder");
    let mut batch = String::new();
    for i in 0..60 {
        batch.push_str(&format!("send-to flooder line {i}\n"));
    }
    let start = Instant::now();
    a.send_raw(batch.as_bytes());
    for i in 0..60 {
        a.expect(&format!("Pesan pribadi dari [flooder] line {i}"));
    }
    let took = start.elapsed();
    // 10 at once, then 20 a second: the last of 60 after 2.5 s at the
    // earliest. (A lower bound: it shows the pacing, and cannot fail on a
    // slow machine.)
    eprintln!("60 lines at burst 10, rate 20/s: answered in {took:?}");
    assert!(took >= Duration::from_millis(2400), "not paced: {took:?}");
}

/// While one connection floods at full speed, a reader that keeps up is never
/// disconnected and a second pair's round trips go on.
#[test]
fn a_flooder_slows_nobody_else_and_gets_nobody_dropped() {
    let server = Server::start(&[]);
    let mut flooder = server.login("flooder");
    let reader = server.login("reader");
    let mut ping = server.login("ping");
    let mut pong = server.login("pong");
    let flooding = thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(1000));
        let batch = line.repeat(64);
        let until = Instant::now() + Duration::from_secs(3);
        let mut sent = 0;
        flooder
            .stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while Instant::now() < until {
            use std::io::Write;
            match flooder.stream.write(batch.as_bytes()) {
                Ok(n) => sent += n,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        (flooder, sent)
    });
    let reading = thread::spawn(move || {
        let mut reader = reader;
        let mut got = 0;
        reader
            .stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let line = reader.line();
            if line.starts_with("[flooder] ") {
                got += 1;
            }
        }
        (reader, got)
    });
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let start = Instant::now();
        ping.send(&format!("send-to pong trip {trips}"));
        // pong hears the flooder's paced broadcasts too.
        let mut line = pong.line();
        while line.starts_with("[flooder] ") {
            line = pong.line();
        }
        assert_eq!(line, format!("Pesan pribadi dari [ping] trip {trips}"));
        worst = worst.max(start.elapsed());
        trips += 1;
        // Under the flood allowance itself.
        thread::sleep(Duration::from_millis(250));
    }
    let (flooder, sent) = flooding.join().unwrap();
    let (mut reader, got) = reading.join().unwrap();
    eprintln!(
        "flooder wrote {sent} bytes in 3 s; the reader got {got} of its lines; {trips} round trips, worst {worst:?}"
    );
    // Flood control held the flooder to its burst and rate.
    assert!(
        got <= 20 + 5 * 5,
        "the reader got {got} lines: flood control off?"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a round trip took {worst:?}"
    );
    // Nobody was dropped.
    for c in [&mut reader, &mut ping, &mut pong] {
        c.send("list-user");
        let mut reply = c.line();
        while !reply.starts_with("list user") {
            reply = c.line();
        }
        assert_eq!(reply, "list user : flooder, ping, pong, reader.");
    }
    assert!(!server.log_text().contains("too slow"));
    drop(flooder.stream.shutdown(std::net::Shutdown::Both));
}
