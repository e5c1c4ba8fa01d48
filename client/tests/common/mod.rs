//! What the client tests need of the server: the real `chat-server` binary of
//! the root package on a free loopback port, and a plain line client to play
//! the other users. A trimmed copy of the root package's `tests/common`, which
//! cannot be shared as is: it finds the server through
//! `CARGO_BIN_EXE_chat-server`, which cargo sets only for the server's own
//! package.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long any single expected reply may take before a test fails. Generous:
/// the machine is shared and noisy; no test measures speed with it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Cheap hashing so the tests do not wait on argon2's real cost.
pub const FAST_HASH: &str = "m=256,t=1,p=1";

/// The `chat-server` binary in the same target directory and profile as this
/// test executable (`target/<profile>/deps/client-…` → `target/<profile>/`).
///
/// `cargo test --workspace` (what `make test` runs) builds it, up to date, as
/// the root package's own tests need it. Only when it is absent, as with
/// `cargo test -p chat-client` on a fresh checkout, is it built here with
/// `$CARGO build -p chat --bin chat-server` (cargo has released its build lock
/// by the time tests run). It is not rebuilt when present: that build selects
/// one package, so its dependencies' features differ from the workspace's and
/// it would recompile them on every run. After changing the server, run the
/// client tests with the workspace, or build the server first.
pub fn server_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executable outside target/<profile>/deps")
            .to_path_buf();
        let binary = profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX));
        if !binary.is_file()
            && let Some(cargo) = std::env::var_os("CARGO")
        {
            // `target/debug` is the `dev` profile; other directories are named
            // after their profile.
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(name) => name,
            };
            let status = Command::new(cargo)
                .args(["build", "-p", "chat", "--bin", "chat-server"])
                .args(["--profile", profile])
                .status()
                .expect("cannot run cargo to build chat-server");
            assert!(status.success(), "building chat-server failed: {status}");
        }
        assert!(
            binary.is_file(),
            "{} not found: build it with `cargo build -p chat --bin chat-server`",
            binary.display()
        );
        binary
    })
}

/// A running `chat-server` child process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The TLS door's address, when started with `--tls-cert`.
    pub tls_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts the server with in-memory accounts, fast hashing, `--port 0`
    /// and `extra` flags, and waits until it logs the address it listens on.
    pub fn start(extra: &[&str]) -> Server {
        let tls = extra.contains(&"--tls-cert");
        let mut child = Command::new(server_binary())
            .args([
                "--accounts",
                ":memory:",
                "--history",
                ":memory:",
                "--hash-params",
                FAST_HASH,
            ])
            .args(extra)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chat-server");
        let stderr = child.stderr.take().expect("no stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let (tls_tx, tls_rx) = std::sync::mpsc::channel();
        // Reads the log to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut tls_tx = Some(tls_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("TLS listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = tls_tx.take() {
                        let _ = tx.send(addr);
                    }
                } else if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("bad listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("server did not start ({status:?})");
            }
        };
        // The TLS door's line follows the plain one.
        let tls_addr = tls.then(|| {
            let addr = tls_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("server did not log its TLS door");
            addr.parse().expect("bad TLS listening address")
        });
        Server {
            child,
            addr,
            tls_addr,
        }
    }

    /// A client that has registered and logged in as `name` (password `pw`).
    pub fn login(&self, name: &str) -> Client {
        let mut c = Client::connect(self.addr);
        c.send(&format!("regist {name} pw"));
        c.expect("Anda berhasil terdaftar");
        c.send(&format!("login {name} pw"));
        c.expect("Login sukses");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line client over a real TCP connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("cannot connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("read timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `line` and a `\n`.
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send failed");
    }

    /// The next line, without its `\n`; panics on timeout or end of stream.
    pub fn line(&mut self) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !self.buf.contains(&b'\n') && Instant::now() < deadline {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let Some(at) = self.buf.iter().position(|&b| b == b'\n') else {
            panic!(
                "no line arrived; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let line: Vec<u8> = self.buf.drain(..=at).collect();
        String::from_utf8_lossy(&line[..at]).into_owned()
    }

    /// Asserts the next line is exactly `expected`.
    pub fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }
}
