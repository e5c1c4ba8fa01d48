//! The real `chat-client` binary against the real `chat-server`: scripted from
//! a pipe, driven under a pseudo-terminal as a person would type, and with no
//! server to talk to.
//!
//! The terminal tests open a pty with `portable-pty` and keep a `vt100`
//! screen of everything the client writes, so they check what a person would
//! see, without tmux or any other system package.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU16;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{REPLY_TIMEOUT, Server};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

/// The client's arguments for a server at `addr`.
fn client_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "--host".into(),
        addr.ip().to_string(),
        "--port".into(),
        addr.port().to_string(),
    ]
}

/// Waits for a child to exit, at most [`REPLY_TIMEOUT`].
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chat-client did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `chat-client` with its stdin and stdout on pipes, as a script runs it.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines of its stdout, as they come.
    lines: Receiver<String>,
    /// Every stdout line taken so far.
    seen: Vec<String>,
}

impl Piped {
    fn start(addr: SocketAddr) -> Piped {
        Self::start_args(client_args(addr))
    }

    fn start_args(args: Vec<String>) -> Piped {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chat-client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Piped {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").expect("write to chat-client");
    }

    /// Waits until the client has printed exactly `want` as a line.
    fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == want;
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("no line {want:?}; printed so far: {:#?}", self.seen),
            }
        }
    }

    /// Closes stdin, waits for the exit and returns it with stdout's remaining
    /// lines and all of stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child);
        let rest: Vec<String> = self.lines.iter().collect();
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        (status, rest, stderr)
    }
}

#[test]
fn piped_client_registers_logs_in_and_hears_a_broadcast_and_a_private_message() {
    let server = Server::start(&[]);
    let mut bob = server.login("bob");
    let mut alice = Piped::start(server.addr);
    alice.expect(&format!(
        "connected to 127.0.0.1 port {}",
        server.addr.port()
    ));
    // A bare regist / login: the next two input lines are the answers.
    for line in ["regist", "alice", "rahasia"] {
        alice.send(line);
    }
    alice.expect("Anda berhasil terdaftar");
    for line in ["login", "alice", "rahasia"] {
        alice.send(line);
    }
    alice.expect("Login sukses");
    bob.send("halo semua");
    alice.expect("[bob] halo semua");
    bob.send("send-to alice apa   kabar");
    alice.expect("Pesan pribadi dari [bob] apa   kabar");
    alice.send("halo bob");
    bob.expect("[alice] halo bob");
    alice.send("quit");
    alice.expect("Sampai jumpa");
    let seen = alice.seen.clone();
    let (status, rest, stderr) = alice.finish();
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    assert!(rest.is_empty(), "after the goodbye: {rest:?}");
    assert_eq!(stderr, "");
    // No local prompts from a pipe, and the password never printed.
    assert!(
        seen.iter()
            .all(|l| !l.contains("Username") && !l.contains("rahasia")),
        "{seen:#?}"
    );
    bob.expect("Teman anda [alice] telah offline");
}

/// A stored message and a replayed broadcast (SPEC section 9) are printed
/// as the server sends them, time marker included.
#[test]
fn piped_client_prints_replayed_and_stored_lines_as_they_are() {
    let server = Server::start(&["--replay", "1"]);
    let mut alice = server.login("alice");
    alice.send("regist bob pw");
    alice.expect("Anda berhasil terdaftar");
    alice.send("halo semua");
    alice.send("send-to bob ditunggu");
    alice.expect("Pesan untuk bob disimpan");
    let mut bob = Piped::start(server.addr);
    bob.send("login bob pw");
    bob.expect("Login sukses");
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = bob.lines.recv_timeout(REPLY_TIMEOUT) {
            got.push(line);
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    for (line, tail) in got.iter().zip([
        ") [alice] halo semua",
        ") Pesan pribadi dari [alice] ditunggu",
    ]) {
        assert!(line.starts_with('(') && line.ends_with(tail), "{got:?}");
    }
    let (status, _, _) = bob.finish();
    assert!(status.success());
}

#[test]
fn piped_input_ending_still_gets_every_reply_then_exits() {
    let server = Server::start(&[]);
    let mut client = Piped::start(server.addr);
    // All input at once, then end of input: the client half-closes and
    // prints the replies that come after.
    for line in ["regist", "carol", "pw", "login carol pw", "list-user"] {
        client.send(line);
    }
    let (status, lines, stderr) = client.finish();
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    assert_eq!(
        lines,
        [
            format!("connected to 127.0.0.1 port {}", server.addr.port()),
            "Anda berhasil terdaftar".into(),
            "Login sukses".into(),
            "list user : carol.".into(),
        ]
    );
}

#[test]
fn no_server_gives_one_line_error_and_failure() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run chat-client");
    assert!(!out.status.success());
    assert_eq!(out.stdout, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("cannot connect to 127.0.0.1 port {port}: ");
    assert!(stderr.starts_with(&prefix), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.len() > prefix.len() + 1,
        "no reason given: {stderr:?}"
    );
}

/// The client on a pseudo-terminal: what it writes is kept both raw and as a
/// rendered 24x80 screen.
struct Term {
    master: Box<dyn MasterPty + Send>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    screen: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

/// The terminal's "where is the cursor" query, which rustyline sends before
/// each prompt and waits 100 ms on. A real terminal answers it; so does
/// [`Term`], from its rendered screen.
const CURSOR_QUERY: &[u8] = b"\x1b[6n";

impl Term {
    fn start(addr: SocketAddr) -> Term {
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-client"));
        cmd.args(client_args(addr));
        Term::start_command(cmd)
    }

    /// Runs `cmd` on a new pty.
    fn start_command(mut cmd: CommandBuilder) -> Term {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        cmd.env("TERM", "xterm");
        let child = pair.slave.spawn_command(cmd).expect("spawn chat-client");
        // Only the child holds the slave now, so its exit ends our reads.
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = Arc::new(Mutex::new(pair.master.take_writer().expect("pty writer")));
        let size = |n| NonZeroU16::new(n).expect("non-zero");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(size(24), size(80), 0)));
        let raw = Arc::new(Mutex::new(Vec::new()));
        {
            let (writer, screen, raw) = (writer.clone(), screen.clone(), raw.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    let mut chunk = &buf[..n];
                    raw.lock().unwrap().extend_from_slice(chunk);
                    let mut screen = screen.lock().unwrap();
                    while let Some(at) = chunk.windows(4).position(|w| w == CURSOR_QUERY) {
                        screen.process(&chunk[..at + CURSOR_QUERY.len()]);
                        chunk = &chunk[at + CURSOR_QUERY.len()..];
                        let (row, col) = screen.screen().cursor_position();
                        let answer = format!("\x1b[{};{}R", row + 1, col + 1);
                        let _ = writer.lock().unwrap().write_all(answer.as_bytes());
                    }
                    screen.process(chunk);
                }
            });
        }
        Term {
            master: pair.master,
            writer,
            child,
            screen,
            raw,
        }
    }

    /// Types `keys` (`\r` is Enter).
    fn keys(&self, keys: &str) {
        let mut writer = self.writer.lock().unwrap();
        writer.write_all(keys.as_bytes()).expect("type");
        writer.flush().expect("flush");
    }

    /// The visible rows, trailing blanks trimmed.
    fn rows(&self) -> Vec<String> {
        let parser = self.screen.lock().unwrap();
        parser
            .screen()
            .rows(0, 80)
            .map(|r| r.trim_end().to_string())
            .collect()
    }

    /// The screen as one string, for failure messages.
    fn dump(&self) -> String {
        self.rows().join("\n")
    }

    /// The row the cursor is on, and the cursor's column.
    fn cursor_row(&self) -> (String, u16) {
        let parser = self.screen.lock().unwrap();
        let (row, col) = parser.screen().cursor_position();
        let text = parser.screen().rows(0, 80).nth(usize::from(row));
        (text.unwrap_or_default().trim_end().to_string(), col)
    }

    /// Waits until the screen satisfies `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&Term) -> bool) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{}",
                self.dump()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the cursor sits at the end of a row reading `text`: the
    /// client is ready for the next key.
    fn wait_cursor_after(&self, text: &str) {
        self.wait_for(&format!("the cursor after {text:?}"), |t| {
            let (row, col) = t.cursor_row();
            // A prompt's trailing blank is trimmed from the row.
            row == text.trim_end() && usize::from(col) == text.chars().count()
        });
    }

    /// Waits until some row reads exactly `line`.
    fn wait_line(&self, line: &str) {
        self.wait_for(&format!("{line:?}"), |t| t.rows().iter().any(|r| r == line));
    }

    /// Waits for the client to exit and returns its exit code.
    fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.exit_code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("chat-client did not exit; screen:\n{}", self.dump());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the terminal is back in its normal mode (echo, line editing),
    /// as the client must leave it.
    /// Waits for plain mode's password prompt and checks that echo is off
    /// by then, so that a password typed the moment the prompt shows is not
    /// echoed.
    fn wait_password_prompt(&self) {
        self.wait_cursor_after("Password : ");
        assert!(!self.is_cooked(), "echo on at the password prompt");
    }

    fn is_cooked(&self) -> bool {
        let fd = self.master.as_raw_fd().expect("pty fd");
        // SAFETY: tcgetattr on the open pty master fills a plain C struct.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut mode) }, 0);
        mode.c_lflag & libc::ECHO != 0 && mode.c_lflag & libc::ICANON != 0
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn terminal_keeps_the_half_typed_line_and_never_shows_the_password() {
    const PASSWORD: &str = "S3cr3t-Pw";
    let server = Server::start(&[]);
    let term = Term::start(server.addr);
    term.wait_line(&format!(
        "connected to 127.0.0.1 port {}",
        server.addr.port()
    ));
    term.wait_cursor_after("[Anda] ");
    for dialog in ["regist", "login"] {
        term.keys(&format!("{dialog}\r"));
        term.wait_cursor_after("Username : ");
        term.keys("dave\r");
        term.wait_cursor_after("Password : ");
        term.keys(PASSWORD);
        // Typed but not yet entered: still nothing on screen.
        thread::sleep(Duration::from_millis(200));
        let (row, _) = term.cursor_row();
        assert_eq!(row, "Password :", "{}", term.dump());
        term.keys("\r");
        term.wait_cursor_after("[Anda] ");
    }
    term.wait_line("Anda berhasil terdaftar");
    term.wait_line("Login sukses");

    let mut bob = server.login("bob");
    term.keys("hello wor");
    term.wait_cursor_after("[Anda] hello wor");
    bob.send("halo dave");
    term.wait_line("[bob] halo dave");
    // The message went above the line being typed, which is redrawn intact
    // below it with the cursor where it was.
    term.wait_cursor_after("[Anda] hello wor");
    let rows = term.rows();
    let at = rows.iter().position(|r| r == "[bob] halo dave").unwrap();
    assert_eq!(rows[at + 1], "[Anda] hello wor", "{}", term.dump());
    // And rustyline's buffer is intact too: the finished line goes out whole.
    term.keys("ld\r");
    bob.expect("[dave] hello world");

    let screen = term.dump();
    assert!(!screen.contains(PASSWORD), "{screen}");
    let raw = String::from_utf8_lossy(&term.raw.lock().unwrap()).into_owned();
    assert!(!raw.contains(PASSWORD), "password written to the terminal");

    let mut term = term;
    term.wait_cursor_after("[Anda] ");
    term.keys("quit\r");
    assert_eq!(term.exit_code(), 0, "{}", term.dump());
    term.wait_line("Sampai jumpa");
    assert!(term.is_cooked(), "terminal left in raw mode");
}

#[test]
fn terminal_ctrl_c_cancels_the_line_and_the_server_closing_ends_the_client() {
    // The server closes a connection that does not log in within 2 seconds.
    let server = Server::start(&["--login-timeout", "2"]);
    let mut term = Term::start(server.addr);
    term.wait_cursor_after("[Anda] ");
    term.keys("never sent\x03");
    // A new, empty prompt under the cancelled line.
    term.wait_for("a prompt after the cancelled line", |t| {
        let rows = t.rows();
        let (row, col) = t.screen.lock().unwrap().screen().cursor_position();
        let row = usize::from(row);
        row > 0 && rows[row - 1] == "[Anda] never sent" && rows[row] == "[Anda]" && col == 7
    });
    term.keys("half typed");
    // The last reply is shown before the client ends, and the terminal is
    // given back in its normal mode.
    term.wait_line("Waktu login habis");
    assert_eq!(term.exit_code(), 0, "{}", term.dump());
    term.wait_line("connection closed by server");
    let rows = term.rows();
    assert!(rows.contains(&"[Anda] never sent".to_string()), "{rows:#?}");
    assert!(rows.contains(&"[Anda] half typed".to_string()), "{rows:#?}");
    // The cancelled line was never sent: it would have got LOGIN_FIRST.
    assert!(
        !rows.contains(&"Anda harus login terlebih dahulu".to_string()),
        "{rows:#?}"
    );
    assert!(term.is_cooked(), "terminal left in raw mode");
}

#[test]
fn terminal_input_with_output_redirected_hides_the_password_and_ctrl_c_cancels() {
    // stdin a terminal but stdout a file: plain mode, where the dialogue's
    // prompts go to stderr (the terminal) and the password is read by
    // rpassword with echo off.
    const PASSWORD: &str = "Hidden-Pw9";
    let server = Server::start(&[]);
    let out = std::env::temp_dir().join(format!("chat-client-out-{}", std::process::id()));
    let mut cmd = CommandBuilder::new("sh");
    cmd.args([
        "-c",
        "out=$1; shift; exec \"$@\" > \"$out\"",
        "sh",
        &out.to_string_lossy(),
        env!("CARGO_BIN_EXE_chat-client"),
    ]);
    cmd.args(client_args(server.addr));
    let mut term = Term::start_command(cmd);
    term.keys("regist\r");
    term.wait_cursor_after("Username : ");
    term.keys("erin\r");
    term.wait_password_prompt();
    term.keys(PASSWORD);
    thread::sleep(Duration::from_millis(200));
    assert!(
        !term.is_cooked(),
        "echo still on while the password is typed"
    );
    term.keys("\r");
    // Ctrl-C at the password prompt drops the dialogue, and echo comes back.
    term.keys("login\r");
    term.wait_cursor_after("Username : ");
    term.keys("erin\r");
    term.wait_password_prompt();
    term.keys("typo\x03");
    term.wait_for("echo back on after Ctrl-C", Term::is_cooked);
    term.keys("login\r");
    term.wait_cursor_after("Username : ");
    term.keys("erin\r");
    term.wait_password_prompt();
    term.keys(&format!("{PASSWORD}\rquit\r"));
    assert_eq!(term.exit_code(), 0, "{}", term.dump());
    let raw = String::from_utf8_lossy(&term.raw.lock().unwrap()).into_owned();
    assert!(!raw.contains("Hidden"), "password echoed: {raw:?}");
    assert!(!raw.contains("typo"), "cancelled password echoed: {raw:?}");
    let written = std::fs::read_to_string(&out).expect("client output");
    let _ = std::fs::remove_file(&out);
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines,
        [
            &format!("connected to 127.0.0.1 port {}", server.addr.port()),
            "Anda berhasil terdaftar",
            "Login sukses",
            "Sampai jumpa",
        ],
        "{written:?}"
    );
}

/// A throwaway self-signed certificate for localhost (rcgen), in its own
/// directory, removed when dropped.
struct DevCert {
    dir: std::path::PathBuf,
}

impl DevCert {
    fn new(tag: &str) -> DevCert {
        let dir =
            std::env::temp_dir().join(format!("chat-client-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
        DevCert { dir }
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").to_string_lossy().into_owned()
    }

    /// A server with both doors using this certificate.
    fn server(&self) -> Server {
        self.server_with(&[])
    }

    /// [`server`](Self::server) with more options.
    fn server_with(&self, extra: &[&str]) -> Server {
        let key = self.dir.join("key.pem").to_string_lossy().into_owned();
        let cert = self.cert();
        let mut args = vec!["--tls-port", "0", "--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// The client's arguments for the server's TLS door, trusting this
    /// certificate.
    fn client_args(&self, server: &Server) -> Vec<String> {
        let tls = server.tls_addr.expect("no TLS door");
        vec![
            "--host".into(),
            "localhost".into(),
            "--port".into(),
            tls.port().to_string(),
            "--tls".into(),
            "--ca".into(),
            self.cert(),
        ]
    }
}

impl Drop for DevCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SPEC 8.1: `chat-client --tls --ca FILE` from a pipe, chatting with a
/// user of the plain door; end of input still gets every reply.
#[test]
fn piped_client_over_tls_chats_with_a_plain_user() {
    let cert = DevCert::new("piped");
    let server = cert.server();
    let mut bob = server.login("bob");
    let mut alice = Piped::start_args(cert.client_args(&server));
    alice.expect(&format!(
        "connected to localhost port {}",
        server.tls_addr.unwrap().port()
    ));
    for line in ["regist", "alice", "rahasia", "login alice rahasia"] {
        alice.send(line);
    }
    alice.expect("Login sukses");
    bob.send("halo alice");
    alice.expect("[bob] halo alice");
    alice.send("send-to bob lewat tls");
    bob.expect("Pesan pribadi dari [alice] lewat tls");
    alice.send("list-user");
    let (status, rest, stderr) = alice.finish();
    assert!(status.success(), "{status:?}; stderr: {stderr}");
    assert_eq!(rest, ["list user : alice, bob."]);
    assert_eq!(stderr, "");
    bob.expect("Teman anda [alice] telah offline");
}

/// SPEC 8.1: a certificate the client cannot verify (not in the system's
/// roots, no --ca) is one line on stderr and a non-zero exit.
#[test]
fn tls_client_refuses_a_certificate_it_cannot_verify() {
    let cert = DevCert::new("refuse");
    let server = cert.server();
    let mut args = cert.client_args(&server);
    args.truncate(args.len() - 2);
    let stderr = one_line_failure(&args);
    assert!(
        stderr.contains("cannot verify the server's TLS certificate"),
        "{stderr:?}"
    );
}

/// Runs chat-client with `args` and nothing on stdin, expecting it to fail
/// before any chat: a non-zero exit, nothing on stdout, and one line on
/// stderr, which it returns.
fn one_line_failure(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chat-client");
    assert!(!out.status.success());
    assert_eq!(out.stdout, b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    stderr
}

/// A full server answers a TLS connection with its refusal alert, and the
/// client says what that means in one line, exiting non-zero.
#[test]
fn tls_client_says_when_the_server_refuses_it() {
    let cert = DevCert::new("full");
    let server = cert.server_with(&["--max-clients", "1"]);
    let _only = server.login("bob");
    let stderr = one_line_failure(&cert.client_args(&server));
    assert!(
        stderr.contains("the server refused the connection"),
        "{stderr:?}"
    );
}

/// The terminal client over TLS: the password dialogue stays hidden and the
/// session ends cleanly.
#[test]
fn terminal_over_tls_logs_in_and_quits() {
    const PASSWORD: &str = "Tls-Secret7";
    let cert = DevCert::new("term");
    let server = cert.server();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-client"));
    cmd.args(cert.client_args(&server));
    let mut term = Term::start_command(cmd);
    term.wait_cursor_after("[Anda] ");
    for dialog in ["regist", "login"] {
        term.keys(&format!("{dialog}\r"));
        term.wait_cursor_after("Username : ");
        term.keys("erin\r");
        term.wait_cursor_after("Password : ");
        term.keys(&format!("{PASSWORD}\r"));
        term.wait_cursor_after("[Anda] ");
    }
    term.wait_line("Login sukses");
    let mut bob = server.login("bob");
    bob.send("halo erin");
    term.wait_line("[bob] halo erin");
    term.keys("quit\r");
    assert_eq!(term.exit_code(), 0, "{}", term.dump());
    term.wait_line("Sampai jumpa");
    let raw = String::from_utf8_lossy(&term.raw.lock().unwrap()).into_owned();
    assert!(!raw.contains(PASSWORD), "password written to the terminal");
    assert!(term.is_cooked(), "terminal left in raw mode");
}
