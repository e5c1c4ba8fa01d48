//! SPEC section 9 against the real binary: messages for users who are not
//! online are stored (`STORED` after fsync), survive SIGKILL, are delivered
//! once at the next login after the replayed broadcasts and before any live
//! line, marked with their time in `TZ`'s zone; the caps, `STORE_FAILED`, the
//! file's rules (torn tail, bad line, 0600, lock), compaction, and
//! `--history none`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, FAST_HASH, Server};
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

/// A fresh directory for one test's files, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("chat-history-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn accounts(&self) -> PathBuf {
        self.0.join("accounts.db")
    }

    fn history(&self) -> PathBuf {
        self.0.join("history.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's command on `dir`'s accounts and history files, with cheap
/// hashing, no flood control and `extra` flags.
fn command(dir: &TempDir, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command
        .args(["--accounts", dir.accounts().to_str().unwrap()])
        .args(["--history", dir.history().to_str().unwrap()])
        .args(["--hash-params", FAST_HASH, "--flood-rate", "0"])
        .args(extra)
        .env("TZ", "UTC");
    command
}

fn start(dir: &TempDir, extra: &[&str]) -> Server {
    Server::start_command(&mut command(dir, extra))
}

fn kill9(server: &mut Server) {
    server.signal(libc::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

fn stop(server: &mut Server) {
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("no exit");
    assert!(status.success(), "{status:?}");
}

fn register(server: &Server, names: &[&str]) {
    let mut c = server.connect();
    for name in names {
        c.send(&format!("regist {name} pw"));
        c.expect("Anda berhasil terdaftar");
    }
}

fn login(server: &Server, name: &str) -> Client {
    let mut c = server.connect();
    c.send(&format!("login {name} pw"));
    c.expect("Login sukses");
    c
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The line with its `(...) ` marker removed, checking the marker's shape.
fn unmarked(line: &str) -> &str {
    assert!(line.starts_with('('), "no time marker: {line:?}");
    let (marker, rest) = line.split_once(") ").expect("no marker end");
    let inner = &marker[1..];
    assert!(
        inner.len() == 5 || inner.len() == 16,
        "marker {marker:?} is neither (HH:MM) nor (YYYY-MM-DD HH:MM)"
    );
    rest
}

#[test]
fn stored_survives_sigkill_and_is_delivered_once_after_a_clean_restart() {
    let dir = TempDir::new("kill");
    let mut server = start(&dir, &[]);
    register(&server, &["alice", "bob"]);
    let mut alice = login(&server, "alice");
    alice.send("send-to bob rahasia  kecil");
    alice.expect("Pesan untuk bob disimpan");
    alice.send("send-to nobody hi");
    alice.expect("User nobody tidak sedang online");
    kill9(&mut server);
    assert!(
        !server.log_text().contains("rahasia"),
        "message text logged"
    );
    let mode = std::fs::metadata(dir.history())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mut server = start(&dir, &[]);
    let mut bob = login(&server, "bob");
    assert_eq!(
        unmarked(&bob.line()),
        "Pesan pribadi dari [alice] rahasia  kecil"
    );
    bob.expect_silence(Duration::from_millis(200));
    drop(bob);
    stop(&mut server);

    let server = start(&dir, &[]);
    let mut bob = login(&server, "bob");
    bob.expect_silence(Duration::from_millis(300));
}

/// A crash after the messages were handed to the connection but before the
/// delivered record reached the disk is simulated by putting back the file
/// as it was before that record: the message comes a second time, and no
/// third time after a clean restart.
#[test]
fn a_crash_before_the_delivered_record_delivers_at_most_twice() {
    let dir = TempDir::new("twice");
    let mut server = start(&dir, &[]);
    register(&server, &["alice", "bob"]);
    let mut alice = login(&server, "alice");
    alice.send("send-to bob sekali");
    alice.expect("Pesan untuk bob disimpan");
    let before_delivery = std::fs::read(dir.history()).unwrap();
    let mut bob = login(&server, "bob");
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] sekali");
    drop(bob);
    kill9(&mut server);
    std::fs::write(dir.history(), &before_delivery).unwrap();

    let mut server = start(&dir, &[]);
    let mut bob = login(&server, "bob");
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] sekali");
    drop(bob);
    stop(&mut server);
    let server = start(&dir, &[]);
    let mut bob = login(&server, "bob");
    bob.expect_silence(Duration::from_millis(300));
}

#[test]
fn inbox_full_at_101_messages_and_at_64_kib() {
    let dir = TempDir::new("caps");
    let server = start(&dir, &[]);
    register(&server, &["alice", "bob", "carol"]);
    let mut alice = login(&server, "alice");
    // All at once: the sender is held per message, the replies keep order.
    let burst: String = (0..101).map(|i| format!("send-to bob m{i}\n")).collect();
    alice.send_raw(burst.as_bytes());
    for _ in 0..100 {
        alice.expect("Pesan untuk bob disimpan");
    }
    alice.expect("Kotak pesan bob penuh");
    let big = "x".repeat(4000);
    for _ in 0..16 {
        alice.send(&format!("send-to carol {big}"));
        alice.expect("Pesan untuk carol disimpan");
    }
    alice.send(&format!("send-to carol {big}"));
    alice.expect("Kotak pesan carol penuh");
    // Delivery empties the inbox.
    let mut bob = login(&server, "bob");
    for i in 0..100 {
        assert_eq!(
            unmarked(&bob.line()),
            format!("Pesan pribadi dari [alice] m{i}")
        );
    }
    bob.send("logout");
    bob.expect("Logout sukses");
    alice.expect("Teman anda [bob] telah offline");
    alice.send("send-to bob again");
    alice.expect("Pesan untuk bob disimpan");
}

/// Replayed broadcasts, then stored messages, then live lines, even with
/// live traffic flowing while the user logs in.
#[test]
fn replay_and_stored_lines_come_before_any_live_line() {
    let dir = TempDir::new("order");
    let server = start(&dir, &["--replay", "3"]);
    register(&server, &["alice", "bob", "carol"]);
    let mut alice = login(&server, "alice");
    for i in 1..=5 {
        alice.send(&format!("old {i}"));
    }
    alice.send("send-to bob p1");
    alice.expect("Pesan untuk bob disimpan");
    alice.send("send-to bob p2");
    alice.expect("Pesan untuk bob disimpan");
    let addr = server.addr;
    let chatter = std::thread::spawn(move || {
        let mut carol = Client::connect(addr);
        carol.send("login carol pw");
        carol.expect("Login sukses");
        for i in 0..300 {
            carol.send(&format!("live {i}"));
            std::thread::sleep(Duration::from_millis(1));
        }
        carol
    });
    std::thread::sleep(Duration::from_millis(30));
    let mut bob = login(&server, "bob");
    // The last three broadcasts, whoever sent them (carol's live lines
    // count once sent), each marked; then the stored ones, marked.
    let replayed: Vec<String> = (0..3).map(|_| unmarked(&bob.line()).to_owned()).collect();
    for line in &replayed {
        assert!(
            line.starts_with("[alice] old ") || line.starts_with("[carol] live "),
            "{replayed:?}"
        );
    }
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] p1");
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] p2");
    // Then live lines only, unmarked, going on exactly where the replay
    // stopped: none came early, none was lost.
    let next_live = match replayed[2].strip_prefix("[carol] live ") {
        Some(n) => n.parse::<u32>().unwrap() + 1,
        None => 0,
    };
    let carol = chatter.join().unwrap();
    alice.send("after");
    for n in next_live..300 {
        assert_eq!(bob.line(), format!("[carol] live {n}"));
    }
    assert_eq!(bob.line(), "[alice] after");
    drop(carol);
}

/// The markers in the zone `TZ` names: a POSIX rule string and UTC; the
/// date form for a message from another day (a record written into the
/// file with an older time).
#[test]
fn markers_follow_tz_and_show_the_date_when_not_from_today() {
    let dir = TempDir::new("tz");
    let two_days_ago = unix_now() - 2 * 86_400;
    std::fs::write(
        dir.history(),
        format!("chat-history v1\nM 1 {two_days_ago} bob alice dulu\n"),
    )
    .unwrap();
    let in_zone = |at: i64, hours: i32, format: &str| {
        let zone = TimeZone::fixed(Offset::constant(hours as i8));
        Timestamp::from_second(at)
            .unwrap()
            .to_zoned(zone)
            .strftime(format)
            .to_string()
    };
    {
        let mut first = command(&dir, &[]);
        first.env("TZ", "WIB-7");
        let mut server = Server::start_command(&mut first);
        register(&server, &["alice", "bob"]);
        let mut bob = login(&server, "bob");
        assert_eq!(
            bob.line(),
            format!(
                "({}) Pesan pribadi dari [alice] dulu",
                in_zone(two_days_ago, 7, "%Y-%m-%d %H:%M")
            )
        );
        bob.send("logout");
        bob.expect("Logout sukses");
        let mut alice = login(&server, "alice");
        let before = unix_now();
        alice.send("send-to bob sekarang");
        alice.expect("Pesan untuk bob disimpan");
        let after = unix_now();
        bob.send("login bob pw");
        bob.expect("Login sukses");
        let got = bob.line();
        let expect = |at| {
            format!(
                "({}) Pesan pribadi dari [alice] sekarang",
                in_zone(at, 7, "%H:%M")
            )
        };
        assert!(
            got == expect(before) || got == expect(after),
            "{got:?} (WIB, UTC+7)"
        );
        stop(&mut server);
    }
    let mut second = command(&dir, &["--lang", "en"]);
    second.env("TZ", "UTC");
    let server = Server::start_command(&mut second);
    let mut alice = login_en(&server, "alice");
    let before = unix_now();
    alice.send("send-to bob now");
    alice.expect("Message for bob saved");
    let after = unix_now();
    let mut bob = login_en(&server, "bob");
    let got = bob.line();
    let expect = |at| {
        format!(
            "({}) Private message from [alice] now",
            in_zone(at, 0, "%H:%M")
        )
    };
    assert!(
        got == expect(before) || got == expect(after),
        "{got:?} (UTC)"
    );
}

fn login_en(server: &Server, name: &str) -> Client {
    let mut c = server.connect();
    c.send(&format!("login {name} pw"));
    c.expect("Login successful");
    c
}

#[test]
fn a_torn_tail_is_cut_and_a_bad_line_stops_the_start_naming_it() {
    let dir = TempDir::new("torn");
    let now = unix_now();
    let whole = format!("chat-history v1\nM 1 {now} bob alice utuh\n");
    std::fs::write(dir.history(), format!("{whole}M 2 {now} bob alice terpot")).unwrap();
    std::fs::set_permissions(dir.history(), std::fs::Permissions::from_mode(0o644)).unwrap();
    {
        let server = start(&dir, &[]);
        let log = server.log_text();
        assert!(log.contains("torn last line"), "{log}");
        assert!(log.contains("made it 0600"), "{log}");
        let mode = std::fs::metadata(dir.history())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(dir.history()).unwrap(), whole);
        register(&server, &["alice", "bob"]);
        let mut bob = login(&server, "bob");
        assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] utuh");
        bob.expect_silence(Duration::from_millis(200));
        // One server per history file.
        let other = TempDir::new("torn-other");
        let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args([
                "--port",
                "0",
                "--accounts",
                other.accounts().to_str().unwrap(),
            ])
            .args(["--history", dir.history().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("in use by another server"), "{stderr}");
    }
    let bad = format!("chat-history v1\nM 1 {now} bob alice a\nM x {now} bob alice b\nD bob 1\n");
    std::fs::write(dir.history(), &bad).unwrap();
    let output = command(&dir, &["--port", "0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}: line 3:", dir.history().display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(dir.history()).unwrap(), bad);
}

/// A file of many delivered messages and one that waits: the start
/// compacts it to the one, which is still delivered.
#[test]
fn compaction_shrinks_the_file_and_keeps_what_waits() {
    let dir = TempDir::new("compact");
    let now = unix_now();
    let mut text = String::from("chat-history v1\n");
    let body = "y".repeat(500);
    for id in 1..=4000 {
        text.push_str(&format!("M {id} {now} bob alice {body}\n"));
    }
    text.push_str("D bob 4000\n");
    text.push_str(&format!("M 4001 {now} bob alice tunggu\n"));
    text.push_str(&format!(
        "M 4002 {} bob alice kedaluwarsa\n",
        now - 40 * 86_400
    ));
    std::fs::write(dir.history(), &text).unwrap();
    let before = text.len() as u64;
    let server = start(&dir, &[]);
    let after = std::fs::metadata(dir.history()).unwrap().len();
    assert!(after < 200, "{before} -> {after} bytes");
    assert!(server.log_text().contains("compacted"));
    register(&server, &["alice", "bob"]);
    let mut bob = login(&server, "bob");
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] tunggu");
    // The expired one (older than --history-days 30) is gone.
    bob.expect_silence(Duration::from_millis(200));
}

#[test]
fn history_none_keeps_not_online() {
    let server = Server::start(&["--history", "none"]);
    register(&server, &["alice", "bob"]);
    let mut alice = login(&server, "alice");
    alice.send("send-to bob hi");
    alice.expect("User bob tidak sedang online");
}

/// A write that fails gets STORE_FAILED and keeps nothing; the next one is
/// stored. The failure is real: the server runs under a file size limit
/// (RLIMIT_FSIZE, with SIGXFSZ ignored), so the write that would pass it
/// fails with EFBIG, as on a full disk.
#[test]
fn a_failed_write_gets_store_failed_and_keeps_nothing() {
    let dir = TempDir::new("fail");
    let mut command = command(&dir, &[]);
    command.args(["--accounts", ":memory:"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 6000,
                rlim_max: 6000,
            };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::start_command(&mut command);
    register(&server, &["alice", "bob"]);
    let mut alice = login(&server, "alice");
    let big = "z".repeat(4000);
    alice.send(&format!("send-to bob {big}"));
    alice.expect("Pesan untuk bob disimpan");
    alice.send(&format!("send-to bob {big}"));
    alice.expect("Gagal menyimpan pesan, coba lagi nanti");
    alice.send("send-to bob kecil");
    alice.expect("Pesan untuk bob disimpan");
    let mut bob = login(&server, "bob");
    assert_eq!(
        unmarked(&bob.line()),
        format!("Pesan pribadi dari [alice] {big}")
    );
    assert_eq!(unmarked(&bob.line()), "Pesan pribadi dari [alice] kecil");
    bob.expect_silence(Duration::from_millis(200));
    assert!(!server.log_text().contains(&big[..100]));
}

#[allow(dead_code)]
fn _uses(_: &Path) {}
