//! The TLS door (SPEC section 8.1, issue 12) against the real binary, with a
//! rustls client: chat over TLS, across doors, a garbage ClientHello, a
//! handshake that never finishes, certificate reload on SIGHUP (good and
//! broken), the door off by default and a port that cannot bind.
//!
//! Each test makes its own throwaway self-signed certificate for `localhost`
//! with rcgen, and its client trusts exactly that certificate.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use common::*;

const OFFLINE_T: &str = "Teman anda [t] telah offline";

/// A directory of PEM files for one test, removed when dropped.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Certs { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Writes a new self-signed pair for localhost; returns its certificate,
    /// the one root a client needs to trust it.
    fn make_pair(&self) -> CertificateDer<'static> {
        let pair = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        std::fs::write(self.cert(), pair.cert.pem()).unwrap();
        std::fs::write(self.key(), pair.signing_key.serialize_pem()).unwrap();
        pair.cert.der().clone()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a server with both doors, the TLS one on a free port.
fn start_tls(certs: &Certs, extra: &[&str]) -> Server {
    let cert = certs.cert();
    let key = certs.key();
    let mut args = vec![
        "--accounts",
        ":memory:",
        "--hash-params",
        FAST_HASH,
        "--tls-port",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_raw(&args)
}

fn client_config(root: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A line client over TLS, trusting `root`.
struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake, or returns rustls's error.
    fn try_connect(addr: SocketAddr, root: &CertificateDer<'static>) -> Result<TlsClient, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(client_config(root), name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(TlsClient {
            stream,
            buf: Vec::new(),
        })
    }

    fn connect(addr: SocketAddr, root: &CertificateDer<'static>) -> TlsClient {
        Self::try_connect(addr, root).unwrap_or_else(|e| panic!("TLS connect failed: {e}"))
    }

    /// Registers and logs in as `name` (password `pw`).
    fn login(addr: SocketAddr, root: &CertificateDer<'static>, name: &str) -> TlsClient {
        let mut c = Self::connect(addr, root);
        c.send(&format!("regist {name} pw"));
        c.expect("Anda berhasil terdaftar");
        c.send(&format!("login {name} pw"));
        c.expect("Login sukses");
        c
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send failed");
        self.stream.flush().unwrap();
    }

    /// Reads until `until` holds; false on timeout, end of stream or error.
    fn fill(&mut self, until: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !until(&self.buf) {
            if Instant::now() > deadline {
                return false;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return until(&self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("TLS client read: {e}");
                    return until(&self.buf);
                }
            }
        }
        true
    }

    fn line(&mut self) -> String {
        self.fill(|b| b.contains(&b'\n'));
        let Some(at) = self.buf.iter().position(|&b| b == b'\n') else {
            panic!(
                "no line arrived; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let line: Vec<u8> = self.buf.drain(..=at).collect();
        String::from_utf8_lossy(&line[..at]).into_owned()
    }

    fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    fn expect_raw(&mut self, expected: &str) {
        let n = expected.len();
        self.fill(|b| b.len() >= n);
        let got: Vec<u8> = self.buf.drain(..n.min(self.buf.len())).collect();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    /// The server closes cleanly: `close_notify`, then end of stream. (A TCP
    /// close without `close_notify` is an `UnexpectedEof` error in rustls.)
    fn expect_close_notify(&mut self) {
        let mut chunk = [0u8; 256];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected close, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) => panic!("expected close_notify, got error {e}"),
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a raw socket until the peer closes (or resets); returns what came
/// and whether it closed within `timeout`.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn register_login_broadcast_and_send_to_over_tls() {
    let certs = Certs::new();
    let root = certs.make_pair();
    // The burst below is on purpose: flood control (SPEC 7) off.
    let server = start_tls(&certs, &["--flood-rate", "0"]);
    let tls = server.tls_addr.unwrap();
    let mut a = TlsClient::connect(tls, &root);
    // The prompt dialogue, prompts without a newline, inside TLS.
    a.send("regist");
    a.expect_raw("Username : ");
    a.send("alice");
    a.expect_raw("Password : ");
    a.send("secret");
    a.expect("Anda berhasil terdaftar");
    a.send("login alice secret");
    a.expect("Login sukses");
    let mut b = TlsClient::login(tls, &root, "bob");
    a.send("halo semua");
    b.expect("[alice] halo semua");
    b.send("send-to alice apa kabar");
    a.expect("Pesan pribadi dari [bob] apa kabar");
    a.send("list-user");
    a.expect("list user : alice, bob.");
    a.send("quit");
    a.expect("Sampai jumpa");
    a.expect_close_notify();
    b.expect("Teman anda [alice] telah offline");
    // Many lines in one record and a burst of broadcasts arrive whole and
    // in order.
    let mut c = TlsClient::login(tls, &root, "carol");
    let burst: String = (0..200).map(|i| format!("line {i}\n")).collect();
    b.stream.write_all(burst.as_bytes()).unwrap();
    for i in 0..200 {
        c.expect(&format!("[bob] line {i}"));
    }
}

#[test]
fn a_tls_user_and_a_plain_user_are_in_one_chat() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let server = start_tls(&certs, &[]);
    let mut p = server.login("p");
    let mut t = TlsClient::login(server.tls_addr.unwrap(), &root, "t");
    p.send("list-user");
    p.expect("list user : p, t.");
    t.send("list-user");
    t.expect("list user : p, t.");
    p.send("dari plain");
    t.expect("[p] dari plain");
    t.send("dari tls");
    p.expect("[t] dari tls");
    t.send("send-to p rahasia");
    p.expect("Pesan pribadi dari [t] rahasia");
    p.send("send-to t juga");
    t.expect("Pesan pribadi dari [p] juga");
    // One login per name, across doors.
    let mut again = server.connect();
    again.send("login t pw");
    again.expect("Username tersebut telah melakukan login sebelumnya.");
    t.send("logout");
    t.expect("Logout sukses");
    p.expect(OFFLINE_T);
    p.send("list-user");
    p.expect("list user : p.");
}

#[test]
fn max_clients_counts_both_doors() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let server = start_tls(&certs, &["--max-clients", "2"]);
    let _p = server.login("p");
    let _t = TlsClient::login(server.tls_addr.unwrap(), &root, "t");
    let mut third = server.connect();
    third.expect("Server penuh, coba lagi nanti");
    // Through the TLS door there is no handshake to say it in: the refused
    // connection gets a fatal access_denied alert, which clients name.
    let refused = TlsClient::try_connect(server.tls_addr.unwrap(), &root).err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("AccessDenied")),
        "{refused:?}"
    );
}

#[test]
fn too_many_connections_from_one_address_get_an_alert_over_tls() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let server = start_tls(&certs, &["--max-conns-per-ip", "1", "--exempt", "none"]);
    let tls = server.tls_addr.unwrap();
    let mut first = TlsClient::login(tls, &root, "t");
    let refused = TlsClient::try_connect(tls, &root).err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("AccessDenied")),
        "{refused:?}"
    );
    // The refusal was logged, and the first connection chats on.
    assert!(wait_for(Duration::from_secs(5), || server
        .log_text()
        .contains("refused, too many connections from this address")));
    first.send("list-user");
    first.expect("list user : t.");
}

#[test]
fn a_garbage_client_hello_closes_only_that_connection() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let server = start_tls(&certs, &[]);
    let tls = server.tls_addr.unwrap();
    let mut t = TlsClient::login(tls, &root, "t");
    let mut p = server.login("p");
    // A handshake record whose message is nonsense.
    let mut raw = TcpStream::connect(tls).unwrap();
    raw.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0xff, 0xff,
    ])
    .unwrap();
    let (got, closed) = read_until_closed(&mut raw, Duration::from_secs(5));
    assert!(closed, "a failed handshake did not close the connection");
    // rustls's alert came first: content type 21 (alert), level fatal.
    assert!(
        got.len() >= 7 && got[0] == 0x15 && got[5] == 2,
        "no fatal alert before close: {got:?}"
    );
    // Plain text on the TLS port, as a confused nc would send.
    let mut raw = TcpStream::connect(tls).unwrap();
    raw.write_all(b"login t pw\n").unwrap();
    let (_, closed) = read_until_closed(&mut raw, Duration::from_secs(5));
    assert!(
        closed,
        "plain text on the TLS door did not close the connection"
    );
    // Everyone else carries on.
    t.send("masih di sini");
    p.expect("[t] masih di sini");
    let mut u = TlsClient::login(tls, &root, "u");
    p.send("juga");
    u.expect("[p] juga");
    t.expect("[p] juga");
    assert!(
        wait_for(Duration::from_secs(5), || server
            .log_text()
            .contains("TLS failed")),
        "the failed handshake was not logged at debug"
    );
}

#[test]
fn a_handshake_that_never_finishes_is_closed_after_ten_seconds() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let server = start_tls(&certs, &[]);
    let tls = server.tls_addr.unwrap();
    let started = Instant::now();
    // One says nothing; one sends half a ClientHello record.
    let mut silent = TcpStream::connect(tls).unwrap();
    let mut half = TcpStream::connect(tls).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // Chat goes on meanwhile.
    let mut t = TlsClient::login(tls, &root, "t");
    let mut p = server.login("p");
    t.send("sementara itu");
    p.expect("[t] sementara itu");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(20));
    let waited = started.elapsed();
    assert!(closed, "a silent TLS connection was never closed");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(16),
        "closed after {waited:?}, not about 10 s"
    );
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(5));
    assert!(closed, "a half handshake was never closed");
    // A logged-in TLS user is not affected by the timeout.
    p.send("masih");
    t.expect("[p] masih");
    assert!(server.log_text().contains("TLS handshake not finished"));
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let certs = Certs::new();
    let old_root = certs.make_pair();
    let mut server = start_tls(&certs, &[]);
    let tls = server.tls_addr.unwrap();
    let mut old = TlsClient::login(tls, &old_root, "old");
    let new_root = certs.make_pair();
    server.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(5), || server
            .log_text()
            .contains("reloaded")),
        "reload not logged; log:\n{}",
        server.log_text()
    );
    // A new connection is shown the new certificate...
    let mut new = TlsClient::login(tls, &new_root, "new");
    // ...so one trusting only the old one refuses it.
    let err = TlsClient::try_connect(tls, &old_root)
        .err()
        .expect("a new connection still got the old certificate");
    assert!(err.contains("certificate"), "unexpected error: {err}");
    // The connection opened before the reload keeps chatting.
    old.send("masih hidup");
    new.expect("[old] masih hidup");
    new.send("halo old");
    old.expect("[new] halo old");
    assert!(
        server.wait_exit(Duration::from_millis(100)).is_none(),
        "the server stopped"
    );
}

#[test]
fn a_broken_pair_on_reload_is_logged_and_the_old_one_stays() {
    let certs = Certs::new();
    let root = certs.make_pair();
    let mut server = start_tls(&certs, &[]);
    let tls = server.tls_addr.unwrap();
    let mut before = TlsClient::login(tls, &root, "before");
    let cert_pem = std::fs::read(certs.cert()).unwrap();
    let key_pem = std::fs::read(certs.key()).unwrap();

    // A certificate file that is not PEM at all.
    std::fs::write(certs.cert(), b"-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    reload_fails(&server, 1);
    let mut after = TlsClient::login(tls, &root, "after1");

    // A key that does not belong to the certificate.
    std::fs::write(certs.cert(), &cert_pem).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(certs.key(), other.serialize_pem()).unwrap();
    reload_fails(&server, 2);
    let _after2 = TlsClient::login(tls, &root, "after2");

    // An empty key file.
    std::fs::write(certs.key(), b"").unwrap();
    reload_fails(&server, 3);
    std::fs::write(certs.key(), &key_pem).unwrap();

    before.send("masih");
    after.expect("[before] masih");
    assert!(
        server.wait_exit(Duration::from_millis(100)).is_none(),
        "the server stopped"
    );
}

/// Sends SIGHUP and waits for the `n`-th failed reload in the log.
fn reload_fails(server: &Server, n: usize) {
    server.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(5), || server
            .log_text()
            .matches("TLS reload failed, keeping the old pair")
            .count()
            >= n),
        "failed reload {n} not logged; log:\n{}",
        server.log_text()
    );
    assert!(server.log_text().contains("ERROR"));
}

/// Listening sockets the process holds, from /proc (what `ss -ltnp` reads).
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let p = p.to_string_lossy().into_owned();
            p.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // st 0A is LISTEN; column 9 is the inode.
            if cols.get(3) == Some(&"0A")
                && cols.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
            {
                count += 1;
            }
        }
    }
    count
}

#[test]
fn the_door_is_off_by_default() {
    let server = Server::start(&[]);
    assert_eq!(listening_sockets(server.child.id()), 1);
    assert!(!server.log_text().contains("TLS"));
    let certs = Certs::new();
    certs.make_pair();
    let with_tls = start_tls(&certs, &[]);
    assert_eq!(listening_sockets(with_tls.child.id()), 2);
}

#[test]
fn a_tls_port_that_cannot_bind_stops_the_start() {
    let certs = Certs::new();
    certs.make_pair();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--port", "0", "--accounts", ":memory:", "--tls-port", &port])
        .arg("--tls-cert")
        .arg(certs.cert())
        .arg("--tls-key")
        .arg(certs.key())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TLS door") && stderr.contains(&format!("127.0.0.1:{port}")),
        "error does not name the door and address: {stderr}"
    );
}

#[test]
fn a_missing_or_broken_pair_stops_the_start() {
    let certs = Certs::new();
    let run = |cert: &Path, key: &Path| {
        Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--port", "0", "--tls-port", "0", "--accounts", ":memory:"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let output = run(&certs.cert(), &certs.key());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TLS door") && stderr.contains("cert.pem"),
        "{stderr}"
    );
    certs.make_pair();
    std::fs::write(certs.key(), b"no key here\n").unwrap();
    let output = run(&certs.cert(), &certs.key());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key.pem"), "{stderr}");
    // --tls-cert without --tls-key is a usage error.
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--port", "0", "--accounts", ":memory:", "--tls-cert"])
        .arg(certs.cert())
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// A small kernel receive buffer, so a client that never reads falls behind
/// after kilobytes, not megabytes.
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

/// SPEC 5 through the TLS door: ciphertext waits in the same output buffer,
/// so a TLS reader that never reads is cut off at 1 MiB like any other,
/// while a TLS reader that keeps up gets every line.
#[test]
fn a_tls_reader_that_falls_behind_is_disconnected_alone() {
    let certs = Certs::new();
    let root = certs.make_pair();
    // The sender floods on purpose: flood control (SPEC 7) off.
    let server = start_tls(&certs, &["--flood-rate", "0"]);
    let tls = server.tls_addr.unwrap();
    let mut sender = server.login("sender");
    let mut keeps_up = TlsClient::login(tls, &root, "keepsup");
    let stalled = TlsClient::login(tls, &root, "stalled");
    small_receive_buffer(&stalled.stream.sock);
    let reading = thread::spawn(move || {
        let (mut got, mut offline) = (0, false);
        loop {
            let l = keeps_up.line();
            if l.starts_with("[sender] payload") {
                got += 1;
            } else if l == "Teman anda [stalled] telah offline" {
                offline = true;
            } else if l == "[sender] done" {
                return (keeps_up, got, offline);
            }
        }
    });
    let mut batch = String::new();
    for _ in 0..40 {
        batch.push_str(&format!("payload {}\n", "x".repeat(1000)));
    }
    for _ in 0..150 {
        sender.send_raw(batch.as_bytes());
    }
    sender.send("done");
    let (_keeps_up, got, offline) = reading.join().expect("the reader that keeps up lost lines");
    assert_eq!(got, 6000);
    assert!(
        server.log_text().contains("too slow"),
        "a stalled TLS reader was never disconnected"
    );
    assert!(offline, "the stalled reader's user did not go offline");
    sender.expect("Teman anda [stalled] telah offline");
    sender.send("list-user");
    sender.expect("list user : keepsup, sender.");
    drop(stalled);
}
