//! Shared helpers for the integration tests: start the real `chat-server`
//! binary on a free loopback port, and talk to it as a line client would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single expected reply may take before a test fails. Generous:
/// the machine is shared and noisy; no test measures speed with it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Cheap hashing so tests can log in thousands of times quickly.
pub const FAST_HASH: &str = "m=256,t=1,p=1";

/// A running `chat-server` child process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The TLS door's address, when started with `--tls-cert`.
    pub tls_addr: Option<SocketAddr>,
    /// Everything the server has logged to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with in-memory accounts, fast hashing and `extra`
    /// flags (later flags override earlier ones).
    pub fn start(extra: &[&str]) -> Server {
        let mut args = vec!["--accounts", ":memory:", "--hash-params", FAST_HASH];
        args.extend_from_slice(extra);
        Self::start_raw(&args)
    }

    /// Starts the server with exactly `args` plus `--port 0`, and waits until
    /// it logs the address it listens on.
    pub fn start_raw(args: &[&str]) -> Server {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_chat-server")).args(args))
    }

    /// Starts a prepared command (for tests that set limits or a working
    /// directory); `--port 0` and `--log-level debug` are added.
    /// Unless the test chose `--history`, the history is kept in memory, so
    /// that no test leaves a `history.db` in the working directory.
    pub fn start_command(command: &mut Command) -> Server {
        if !command.get_args().any(|a| a == "--history") {
            command.args(["--history", ":memory:"]);
        }
        let tls = command.get_args().any(|a| a == "--tls-cert");
        let mut child = command
            .args(["--port", "0", "--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chat-server");
        let stderr = child.stderr.take().expect("no stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (tls_tx, tls_rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
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
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("bad listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "server did not start ({status:?}); log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        // The TLS door's line follows the plain one.
        let tls_addr = tls.then(|| match tls_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("bad TLS listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not log its TLS door; log:\n{}",
                    log.lock().unwrap()
                );
            }
        });
        Server {
            child,
            addr,
            tls_addr,
            log,
        }
    }

    /// Opens a client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A client that has registered and logged in as `name` (password `pw`).
    pub fn login(&self, name: &str) -> Client {
        let mut c = self.connect();
        c.send(&format!("regist {name} pw"));
        c.expect("Anda berhasil terdaftar");
        c.send(&format!("login {name} pw"));
        c.expect("Login sukses");
        c
    }

    /// A client logged in as `name` (password `pw`), already registered.
    pub fn login_existing(&self, name: &str) -> Client {
        let mut c = self.connect();
        c.send(&format!("login {name} pw"));
        c.expect("Login sukses");
        c
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the server to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
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
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("cannot connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client whose socket is bound to `from` (127.0.0.2, 127.0.0.3, ...)
    /// before it connects, so the server sees distinct addresses.
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Client {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)
            .expect("cannot create a socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|e| panic!("cannot bind to {from}: {e}"));
        socket.connect(&addr.into()).expect("cannot connect");
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `line` and a `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send failed");
    }

    /// Reads until `n` bytes are buffered or the connection ends.
    fn fill(&mut self, until: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !until(&self.buf) {
            if Instant::now() > deadline {
                return false;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return until(&self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return false;
                }
                Err(_) => return until(&self.buf),
            }
        }
        true
    }

    /// The next line, without its `\n`; panics on timeout or end of stream.
    pub fn line(&mut self) -> String {
        let ok = self.fill(|b| b.contains(&b'\n'));
        let Some(at) = self.buf.iter().position(|&b| b == b'\n') else {
            panic!(
                "no line arrived (ok={ok}); buffered: {:?}",
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

    /// Asserts the next bytes are exactly `expected` (for prompts, which end
    /// without a newline).
    pub fn expect_raw(&mut self, expected: &str) {
        let n = expected.len();
        self.fill(|b| b.len() >= n);
        let got: Vec<u8> = self.buf.drain(..n.min(self.buf.len())).collect();
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    /// Asserts nothing arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        // A zero timeout means "block forever" to the OS: wait a moment instead.
        let wait = wait.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 4096];
        let got = match self.stream.read(&mut chunk) {
            Ok(n) => chunk[..n].to_vec(),
            Err(_) => Vec::new(),
        };
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        assert!(
            self.buf.is_empty() && got.is_empty(),
            "expected silence, got {:?}",
            String::from_utf8_lossy(&[&self.buf[..], &got[..]].concat())
        );
    }

    /// Asserts the server closes the connection (after any buffered lines,
    /// which must have been read).
    pub fn expect_closed(&mut self) {
        let closed = self.fill(|_| false);
        assert!(!closed);
        assert!(
            self.buf.is_empty(),
            "unread data before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut chunk = [0u8; 16];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected close, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected close, got error {e}"),
        }
    }

    /// Half-closes the sending side, as `nc -N` does.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
}

impl Client {
    /// The next line as raw bytes, without its `\n` (no lossy decoding, so a
    /// test can check exactly which bytes the server relayed); panics on
    /// timeout or end of stream.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let ok = self.fill(|b| b.contains(&b'\n'));
        let Some(at) = self.buf.iter().position(|&b| b == b'\n') else {
            panic!(
                "no line arrived (ok={ok}); buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let mut line: Vec<u8> = self.buf.drain(..=at).collect();
        line.pop();
        line
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
