//! `chat-client`: the seed's terminal client (SPEC section 6).
//!
//! Two threads, as in the seed's `select()` on the socket and stdin: a reader
//! thread copies what the server sends to the screen, the main thread reads what
//! the user types and sends it. On a terminal the main thread uses rustyline and
//! the reader hands its lines to rustyline's `ExternalPrinter`, which prints
//! them above the line being typed and redraws it. From a pipe there is no line
//! editor: lines go out as they come, what the server sends goes to stdout, and
//! the end of input half-closes the socket so the server's last replies still
//! arrive before the client exits.
//!
//! With `--tls` the same two threads share one rustls connection
//! ([`tls::TlsLink`]); everything above the bytes is unchanged.
//!
//! The pure parts ([`Incoming`], [`classify`], [`one_line_form`]) are unit
//! tested here; the threads, the terminal and the socket are tested by running
//! the real binaries (`client/tests/client.rs`).

use std::borrow::Cow;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Editor, ExternalPrinter, Helper};
use unicode_width::UnicodeWidthChar;

pub mod tls;

use chat::wire::framing::{clean_line, strip_line_end};
use chat::wire::protocol::{Command, Credentials, Lang, PROMPT_PASSWORD, PROMPT_USERNAME, Reply};

/// What the command line chose; `chat-client`'s `main` only parses arguments.
#[derive(Debug, Clone)]
pub struct Options {
    /// Server host name or address; the seed's `localhost`.
    pub host: String,
    /// Server port; the seed's 10000.
    pub port: u16,
    /// Language of the input prompt and of the replies the client makes itself.
    pub lang: Lang,
    /// Speak TLS (the server's TLS door, SPEC 8.1), verifying the server.
    pub tls: bool,
    /// Extra PEM certificates to trust besides the system's (with `tls`).
    pub ca: Option<PathBuf>,
}

/// The seed's input prompt, `[Anda] `, or `[You] ` in English.
pub fn user_prompt(lang: Lang) -> &'static str {
    match lang {
        Lang::Id => "[Anda] ",
        Lang::En => "[You] ",
    }
}

/// Which local dialogue a bare `login` / `regist` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialog {
    /// `login`: the answers become `login U P`.
    Login,
    /// `regist`: the answers become `regist U P`.
    Regist,
}

impl Dialog {
    /// The command word the one-line form starts with.
    fn word(self) -> &'static str {
        match self {
            Dialog::Login => "login",
            Dialog::Regist => "regist",
        }
    }
}

/// What the client does with one line the user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it as typed: the server decides what it means.
    Send,
    /// A bare `login` / `regist`: ask the username and password here first.
    Ask(Dialog),
    /// `quit`: send it, read nothing more, wait for the server to close.
    Quit,
}

/// Decides what a typed line is, reading it exactly as the server would
/// (cleaned, trimmed, first word), so the client intercepts a bare `login`
/// precisely when the server would have started its own dialogue.
pub fn classify(line: &[u8]) -> Action {
    match Command::parse(&clean_line(line)) {
        Command::Login(Credentials::Ask) => Action::Ask(Dialog::Login),
        Command::Regist(Credentials::Ask) => Action::Ask(Dialog::Regist),
        Command::Quit => Action::Quit,
        _ => Action::Send,
    }
}

/// Turns the two answers of a dialogue into the line to send, `login U P`.
///
/// The server reads each answer of its own dialogue as one whole trimmed line,
/// so `client a` is one (invalid) username there. In the one-line form that
/// would become three words and a different reply, so an answer that is empty
/// or holds whitespace is answered here with the reply the server's dialogue
/// gives it (`BAD_USERNAME` / `BAD_PASSWORD` for `regist`, `LOGIN_FAIL` for
/// `login`, since no such account can exist), and nothing is sent.
pub fn one_line_form(
    dialog: Dialog,
    username: &str,
    password: &str,
    lang: Lang,
) -> Result<String, &'static str> {
    fn one_word(s: &str) -> bool {
        !s.is_empty() && !s.contains(char::is_whitespace)
    }
    let (username, password) = (username.trim(), password.trim());
    let refusal = |for_regist: Reply| match dialog {
        Dialog::Regist => for_regist.text(lang),
        Dialog::Login => Reply::LoginFail.text(lang),
    };
    if !one_word(username) {
        return Err(refusal(Reply::BadUsername));
    }
    if !one_word(password) {
        return Err(refusal(Reply::BadPassword));
    }
    Ok(format!("{} {username} {password}", dialog.word()))
}

/// A piece of what the server sent, cleaned and ready to print.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A whole line, without its terminator.
    Line(String),
    /// A prompt of the server's own dialogue, which ends without a newline and
    /// must be shown before the answer is typed.
    Prompt(String),
}

/// The longest unfinished line kept while waiting for its `\n`; past this it is
/// printed as it is, so a server that never sends a newline cannot make the
/// client's memory grow without bound.
const MAX_PENDING: usize = 64 * 1024;

/// Splits the server's byte stream into printable pieces.
///
/// TCP may split a line over reads, and a cut may fall inside a UTF-8
/// character or a telnet command, so lines are cleaned only once whole.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Bytes after the last `\n` seen.
    pending: Vec<u8>,
}

impl Incoming {
    /// Takes one read's bytes and appends every piece they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(at) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = strip_line_end(&self.pending[start..=start + at]);
            out.push(Piece::Line(clean_line(line).into_owned()));
            start += at + 1;
        }
        self.pending.drain(..start);
        let rest = self.pending.as_slice();
        if rest == PROMPT_USERNAME.as_bytes() || rest == PROMPT_PASSWORD.as_bytes() {
            out.push(Piece::Prompt(clean_line(rest).into_owned()));
            self.pending.clear();
        } else if rest.len() > MAX_PENDING {
            out.push(Piece::Line(clean_line(rest).into_owned()));
            self.pending.clear();
        }
    }

    /// What is left when the server has closed: a last line without `\n`.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = clean_line(&self.pending).into_owned();
        self.pending.clear();
        Some(line)
    }
}

/// State the two threads share, so each can tell where the other is.
#[derive(Debug, Default)]
struct Shared {
    /// The server closed the connection (or it broke): the reader is done.
    closed: AtomicBool,
    /// The main thread reads no more input; the reader need not wake it.
    input_done: AtomicBool,
}

/// How the reader thread ended, for the last message and the exit code.
#[derive(Debug)]
enum Ending {
    /// The server closed the connection in order.
    Closed,
    /// Reading the socket failed (reset, ...).
    Lost(io::Error),
    /// Our own output went away (stdout closed): nothing can be shown anymore.
    OutputFailed(io::Error),
}

/// How the main thread's input loop ended.
#[derive(Debug)]
enum Stop {
    /// End of input (Ctrl-D, end of the pipe) or `quit`: half-close and wait
    /// for the server's last replies.
    Finished,
    /// The reader reported the connection closed while input was being read.
    ServerClosed,
}

/// Where the reader thread shows what the server sends.
enum Output {
    /// A terminal under rustyline: lines go above the line being typed, and
    /// `main` is the thread to interrupt out of `readline` when the server
    /// closes.
    Terminal {
        printer: Box<dyn ExternalPrinter + Send>,
        main: libc::pthread_t,
    },
    /// A pipe or file: plain text, one line at a time, prompts flushed as is.
    Plain(io::Stdout),
}

impl Output {
    /// Shows one piece of the server's output.
    fn show(&mut self, piece: Piece) -> io::Result<()> {
        match self {
            Output::Terminal { printer, .. } => {
                let mut text = match piece {
                    Piece::Line(text) | Piece::Prompt(text) => text,
                };
                // With a newline the message reads the same whether rustyline
                // is in raw mode (it adds none then) or not (it writes as is).
                text.push('\n');
                printer.print(text).map_err(io::Error::other)
            }
            Output::Plain(stdout) => {
                let mut out = stdout.lock();
                match piece {
                    Piece::Line(text) => writeln!(out, "{text}")?,
                    Piece::Prompt(text) => write!(out, "{text}")?,
                }
                out.flush()
            }
        }
    }

    /// Called once the connection is over, after everything was shown: makes
    /// sure the main thread, which may be blocked reading input, ends too.
    fn finish(&mut self, shared: &Shared, ending: &Ending) {
        match self {
            Output::Terminal { printer, main } => {
                // The printer's queue holds one message: this empty one is
                // accepted only once rustyline took the last real line, so
                // that line is on screen before readline is interrupted.
                let _ = printer.print(String::new());
                // rustyline turns SIGINT into `Interrupted`, the only way to
                // end a pending `readline` from another thread. Repeated, since
                // the main thread may be between two reads when one arrives.
                while !shared.input_done.load(Ordering::SeqCst) {
                    // SAFETY: `main` is the id of the main thread, which lives
                    // until the process exits; SIGINT has a handler installed
                    // (`install_sigint_handler`), so it only interrupts a call.
                    unsafe { libc::pthread_kill(*main, libc::SIGINT) };
                    thread::sleep(Duration::from_millis(50));
                }
            }
            Output::Plain(stdout) => {
                let _ = stdout.lock().flush();
                // From a pipe the main thread may be blocked on stdin, which
                // cannot be interrupted: the process ends here instead. Nothing
                // of the terminal is changed then but a password read's echo,
                // which `exit_now` restores.
                if !shared.input_done.load(Ordering::SeqCst) {
                    let interactive = io::stdin().is_terminal();
                    exit_now(report(ending, interactive, true));
                }
            }
        }
    }
}

/// The reader thread: copies the server's output until the connection ends.
fn read_server(
    mut socket: Box<dyn Read + Send>,
    mut output: Output,
    shared: Arc<Shared>,
) -> Ending {
    let mut incoming = Incoming::default();
    let mut buf = [0u8; 4096];
    let mut pieces = Vec::new();
    let ending = loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => break Ending::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Ending::Lost(e),
        };
        incoming.feed(&buf[..n], &mut pieces);
        if let Err(e) = pieces.drain(..).try_for_each(|p| output.show(p)) {
            break Ending::OutputFailed(e);
        }
    };
    if let Some(last) = incoming.finish() {
        let _ = output.show(Piece::Line(last));
    }
    shared.closed.store(true, Ordering::SeqCst);
    output.finish(&shared, &ending);
    ending
}

/// Prints the one-line account of how the connection ended and gives the exit
/// code. The server closing is reported only when someone is at a terminal and
/// did not ask for it (`unasked`); a broken connection is always reported.
fn report(ending: &Ending, interactive: bool, unasked: bool) -> u8 {
    match ending {
        Ending::Closed => {
            if interactive && unasked {
                eprintln!("connection closed by server");
            }
            0
        }
        Ending::Lost(e) => {
            eprintln!("connection lost: {e}");
            1
        }
        Ending::OutputFailed(e) => {
            eprintln!("cannot write output: {e}");
            1
        }
    }
}

/// The terminal settings in force before a password read in plain mode,
/// kept where any exit path can put them back: [`exit_now`] ends the process
/// without running the password reader's own restoring `Drop`.
static SAVED_TERMINAL: Mutex<Option<Termios>> = Mutex::new(None);

/// Set by the SIGINT handler, so Ctrl-C can end the wait for the server's last
/// replies.
static SIGINT_SEEN: AtomicBool = AtomicBool::new(false);

/// The SIGINT handler: only notes the signal. Its real work is to exist, so a
/// signal interrupts a blocking call instead of killing the process with the
/// terminal possibly left in raw mode.
extern "C" fn note_sigint(_: libc::c_int) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
}

/// Installs [`note_sigint`] for terminal mode. rustyline puts its own handler
/// in place during `readline` (the one that turns the reader thread's signal
/// into `Interrupted`) and this one back after.
fn install_sigint_handler() -> io::Result<()> {
    let handler: extern "C" fn(libc::c_int) = note_sigint;
    // SAFETY: a zeroed `sigaction` is a valid value; the handler only stores
    // to an atomic, which is async-signal-safe.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts back the terminal settings a password read changed, if any.
fn restore_terminal() {
    let saved = SAVED_TERMINAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(saved) = saved {
        let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, &saved);
    }
}

/// Ends the process from any thread, leaving the terminal as it was found.
fn exit_now(code: u8) -> ! {
    restore_terminal();
    let _ = io::stdout().lock().flush();
    std::process::exit(i32::from(code))
}

/// Stdin's echo turned off for one password read, from before its prompt is
/// shown: a user who types or pastes the password the moment the prompt
/// appears must not see it echoed in the moment before `rpassword` turns echo
/// off itself. The settings of before stay in [`SAVED_TERMINAL`] meanwhile,
/// so that the reader thread's [`exit_now`] (the server closed while the user
/// was typing) still gives the terminal back with echo on. `rpassword` puts
/// back what it found (echo off); dropping this puts back the settings of
/// before.
struct EchoOff;

impl EchoOff {
    /// Saves stdin's settings and turns echo off, at once: type-ahead stays
    /// in the input, to be read as the password.
    fn new() -> io::Result<Self> {
        let settings = tcgetattr(io::stdin()).map_err(io::Error::from)?;
        let mut quiet = settings.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        *SAVED_TERMINAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(settings);
        // Made before the change, so that a failed change is put back too.
        let guard = EchoOff;
        tcsetattr(io::stdin(), SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
        Ok(guard)
    }
}

/// Puts back the settings of before the password read.
impl Drop for EchoOff {
    /// Restores and clears [`SAVED_TERMINAL`].
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// SIGINT ignored for the time of one password read. `rpassword` turns the
/// signal keys off and answers Ctrl-C by raising SIGINT itself, before it puts
/// the terminal back; with the default action that would kill the client with
/// echo still off. Ignored, the raise is lost and the read returns
/// `Interrupted`, which cancels the dialogue. Dropping it puts back the action
/// that was there.
struct SigintIgnored(SigAction);

impl SigintIgnored {
    /// Sets SIGINT to ignored, remembering the action in force.
    fn new() -> io::Result<Self> {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: ignoring a signal installs no handler, so no code can run in
        // signal context.
        let old = unsafe { sigaction(Signal::SIGINT, &ignore) }.map_err(io::Error::from)?;
        Ok(SigintIgnored(old))
    }
}

/// Puts back the SIGINT action of before the password read.
impl Drop for SigintIgnored {
    /// Restores the saved action.
    fn drop(&mut self) {
        // SAFETY: the action being restored is the one that was installed
        // before, with the same handler and flags.
        let _ = unsafe { sigaction(Signal::SIGINT, &self.0) };
    }
}

/// The outcome of reading a password from the terminal in plain mode.
#[derive(Debug)]
enum Secret {
    /// The password, Enter pressed.
    Text(String),
    /// Ctrl-C: drop the dialogue, like a shell drops the line.
    Cancelled,
    /// Ctrl-D on an empty answer.
    EndOfInput,
}

/// Reads a password from the terminal in plain mode (stdin a terminal that
/// rustyline does not drive) with `rpassword`: echo and the signal keys off,
/// Backspace, Ctrl-U, Ctrl-C and Ctrl-D understood. The prompt and the newline
/// that Enter no longer echoes go to stderr, beside the other prompts of plain
/// mode. It reads `/dev/stdin`, the same terminal the rest of the input comes
/// from, rather than `rpassword`'s default `/dev/tty`.
fn read_password() -> io::Result<Secret> {
    let _sigint = SigintIgnored::new()?;
    let _echo_off = EchoOff::new()?;
    eprint!("{PROMPT_PASSWORD}");
    let config = rpassword::ConfigBuilder::new()
        .input_file_path("/dev/stdin")
        .output_writer(io::stderr())
        .build();
    match rpassword::read_password_with_config(config) {
        Ok(password) => Ok(Secret::Text(password)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Secret::Cancelled),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Secret::EndOfInput),
        Err(e) => Err(e),
    }
}

/// The sending side of the connection.
enum Link {
    /// The socket itself (the reader thread has a clone).
    Plain(TcpStream),
    /// TLS, shared with the reader thread.
    Tls(Arc<tls::TlsLink>),
}

impl Link {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Plain(socket) => socket.write_all(bytes),
            Link::Tls(link) => link.send(bytes),
        }
    }

    /// Half-closes after the last line (TLS says `close_notify` first).
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Link::Plain(socket) => socket.shutdown(Shutdown::Write),
            Link::Tls(link) => link.shutdown_write(),
        }
    }
}

/// The main thread's side of the connection: sends lines, answers locally.
struct Session {
    /// The sending side of the connection.
    link: Link,
    /// Language of the prompt and of local replies.
    lang: Lang,
    /// Shared with the reader thread.
    shared: Arc<Shared>,
}

impl Session {
    /// Sends one line; the newline is added here, in the same write.
    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        let mut wire = Vec::with_capacity(line.len() + 1);
        wire.extend_from_slice(line);
        wire.push(b'\n');
        self.link.send(&wire)
    }

    /// Sends the one-line form of a finished dialogue, or prints the local
    /// reply when the answers cannot make one.
    fn finish_dialog(&mut self, dialog: Dialog, user: &str, pass: &str) -> io::Result<()> {
        match one_line_form(dialog, user, pass, self.lang) {
            Ok(line) => self.send(line.as_bytes()),
            Err(reply) => {
                println!("{reply}");
                Ok(())
            }
        }
    }

    /// True once the reader thread has seen the connection end.
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

/// Connects, runs the session and returns the process's exit code.
pub fn run(opts: &Options) -> ExitCode {
    let socket = match TcpStream::connect((opts.host.as_str(), opts.port)) {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("cannot connect to {} port {}: {e}", opts.host, opts.port);
            return ExitCode::FAILURE;
        }
    };
    let (link, reader_socket) = match connect_link(socket, opts) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("cannot connect to {} port {}: {e}", opts.host, opts.port);
            return ExitCode::FAILURE;
        }
    };
    println!("connected to {} port {}", opts.host, opts.port);
    let shared = Arc::new(Shared::default());
    let mut session = Session {
        link,
        lang: opts.lang,
        shared: Arc::clone(&shared),
    };
    let interactive = io::stdin().is_terminal();
    let code = match terminal_editor() {
        Some((editor, printer)) => {
            let output = Output::Terminal {
                printer,
                // SAFETY: `pthread_self` has no preconditions.
                main: unsafe { libc::pthread_self() },
            };
            let reader = spawn_reader(reader_socket, output, &shared);
            let stop = run_terminal(editor, &mut session);
            finish(session, reader, stop, true)
        }
        None => {
            let reader = spawn_reader(reader_socket, Output::Plain(io::stdout()), &shared);
            let stop = run_plain(&mut session, interactive);
            finish(session, reader, stop, interactive)
        }
    };
    ExitCode::from(code)
}

/// The two sides of a connected socket: plain, or after a verified TLS
/// handshake.
fn connect_link(socket: TcpStream, opts: &Options) -> Result<(Link, Box<dyn Read + Send>), String> {
    if !opts.tls {
        let reader = socket.try_clone().map_err(|e| e.to_string())?;
        return Ok((Link::Plain(socket), Box::new(reader)));
    }
    let roots = tls::roots(opts.ca.as_deref())?;
    let link = tls::TlsLink::connect(socket, &opts.host, roots)?;
    let reader = link.reader().map_err(|e| e.to_string())?;
    Ok((Link::Tls(link), Box::new(reader)))
}

/// Starts the reader thread.
fn spawn_reader(
    socket: Box<dyn Read + Send>,
    output: Output,
    shared: &Arc<Shared>,
) -> JoinHandle<Ending> {
    let shared = Arc::clone(shared);
    thread::spawn(move || read_server(socket, output, shared))
}

/// The rustyline helper, there only to hide the password: while `masking`,
/// the line is drawn as blanks of the same width, so the password never
/// reaches the screen while rustyline still edits it and keeps printing
/// incoming lines above it. Completion, hints and validation stay rustyline's
/// defaults (none).
#[derive(Debug, Default)]
struct Masking {
    /// True only during the `Password : ` prompt.
    masking: bool,
}

/// The line editor of terminal mode.
type LineEditor = Editor<Masking, FileHistory>;

/// The masking itself; the other highlighter hooks keep their defaults.
impl Highlighter for Masking {
    /// Blanks instead of the password, as wide as what was typed, because
    /// rustyline places the cursor by the width of the real text.
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.masking {
            return Cow::Borrowed(line);
        }
        let width: usize = line.chars().map(|c| c.width().unwrap_or(0)).sum();
        Cow::Owned(" ".repeat(width))
    }

    /// True whenever masking, so no keystroke takes rustyline's shortcut of
    /// echoing the typed character directly.
    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        self.masking && kind != CmdKind::MoveCursor
    }
}

/// No completion: `Helper` requires the trait, its defaults complete nothing.
impl Completer for Masking {
    type Candidate = String;
}

/// No hints: required by `Helper`, defaults show none.
impl Hinter for Masking {
    type Hint = String;
}

/// No validation: required by `Helper`, defaults accept every line.
impl Validator for Masking {}

/// Lets the editor take [`Masking`] as its helper.
impl Helper for Masking {}

/// A line editor and its printer when stdin and stdout are a terminal that
/// rustyline can drive, with the SIGINT handler the shutdown relies on;
/// `None` means plain line-by-line mode.
fn terminal_editor() -> Option<(LineEditor, Box<dyn ExternalPrinter + Send>)> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return None;
    }
    // History is added by hand so that dialogue answers never enter it.
    let config = Config::builder().auto_add_history(false).build();
    let mut editor = LineEditor::with_config(config).ok()?;
    editor.set_helper(Some(Masking::default()));
    // Fails on a terminal rustyline does not support (TERM=dumb, ...).
    let printer = editor.create_external_printer().ok()?;
    install_sigint_handler().ok()?;
    Some((editor, Box::new(printer)))
}

/// Reads the password at `Password : ` with the line drawn as blanks.
fn read_masked(editor: &mut LineEditor) -> rustyline::Result<String> {
    let set = |editor: &mut LineEditor, on: bool| {
        if let Some(helper) = editor.helper_mut() {
            helper.masking = on;
        }
    };
    set(editor, true);
    let password = editor.readline(PROMPT_PASSWORD);
    set(editor, false);
    password
}

/// The terminal input loop: rustyline with history; a bare `login` / `regist`
/// asks here, the password masked.
fn run_terminal(mut editor: LineEditor, session: &mut Session) -> Stop {
    let prompt = user_prompt(session.lang);
    let stop = loop {
        if session.closed() {
            break Stop::ServerClosed;
        }
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(e) => match interrupted(e, session) {
                Some(stop) => break stop,
                None => continue,
            },
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
        }
        let sent = match classify(line.as_bytes()) {
            Action::Send => session.send(line.as_bytes()),
            Action::Quit => {
                let _ = session.send(line.as_bytes());
                break Stop::Finished;
            }
            Action::Ask(dialog) => {
                let answers = editor
                    .readline(PROMPT_USERNAME)
                    .and_then(|user| Ok((user, read_masked(&mut editor)?)));
                match answers {
                    Ok((user, pass)) => session.finish_dialog(dialog, &user, &pass),
                    Err(e) => match interrupted(e, session) {
                        Some(stop) => break stop,
                        None => continue,
                    },
                }
            }
        };
        if sent.is_err() {
            // The reader thread sees the same broken connection and reports it.
            break Stop::ServerClosed;
        }
    };
    // Dropping the editor drops the printer's queue: a message still queued
    // for a `readline` that will not come is then written directly, instead of
    // blocking the reader thread forever.
    drop(editor);
    stop
}

/// Maps a `readline` error: `None` to go on reading (Ctrl-C cancels the line,
/// like a shell), or why the input loop stops.
fn interrupted(error: ReadlineError, session: &Session) -> Option<Stop> {
    match error {
        // rustyline has already moved past the cancelled line, which stays
        // visible above the next prompt.
        ReadlineError::Interrupted => session.closed().then_some(Stop::ServerClosed),
        ReadlineError::Eof => Some(Stop::Finished),
        e => {
            eprintln!("cannot read input: {e}");
            Some(Stop::Finished)
        }
    }
}

/// Plain mode: lines from stdin as they are, no escape codes. With a bare
/// `login` the next two input lines are the username and the password. When
/// stdin is a terminal after all (stdout redirected, unsupported terminal),
/// the dialogue prompts go to stderr and the password is read without echo.
fn run_plain(session: &mut Session, interactive: bool) -> Stop {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    loop {
        let Some(line) = next_line(&mut input) else {
            return Stop::Finished;
        };
        let sent = match classify(&line) {
            Action::Send => session.send(&line),
            Action::Quit => {
                let _ = session.send(&line);
                return Stop::Finished;
            }
            Action::Ask(dialog) => {
                if interactive {
                    eprint!("{PROMPT_USERNAME}");
                }
                let Some(user) = next_line(&mut input) else {
                    return Stop::Finished;
                };
                let pass = if interactive {
                    match read_password() {
                        Ok(Secret::Text(pass)) => pass.into_bytes(),
                        Ok(Secret::Cancelled) => continue,
                        Ok(Secret::EndOfInput) => return Stop::Finished,
                        Err(e) => {
                            eprintln!("cannot read the password: {e}");
                            return Stop::Finished;
                        }
                    }
                } else {
                    match next_line(&mut input) {
                        Some(pass) => pass,
                        None => return Stop::Finished,
                    }
                };
                let user = String::from_utf8_lossy(&user);
                let pass = String::from_utf8_lossy(&pass);
                session.finish_dialog(dialog, &user, &pass)
            }
        };
        if sent.is_err() {
            return Stop::ServerClosed;
        }
    }
}

/// The next input line without its `\n` (and `\r`), as raw bytes so that what
/// is typed is sent unchanged; `None` at the end of input or on a read error.
fn next_line(input: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match input.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let kept = strip_line_end(&line).len();
            line.truncate(kept);
            Some(line)
        }
    }
}

/// The end of a session: half-close after the user's last line so the server
/// answers everything and closes, wait for the reader to print it all, report.
fn finish(session: Session, reader: JoinHandle<Ending>, stop: Stop, interactive: bool) -> u8 {
    let unasked = matches!(stop, Stop::ServerClosed);
    // Before the half-close: the server may answer and close at once, and the
    // reader must then know that this close was asked for.
    session.shared.input_done.store(true, Ordering::SeqCst);
    if !unasked {
        let _ = session.link.shutdown_write();
    }
    SIGINT_SEEN.store(false, Ordering::SeqCst);
    loop {
        if reader.is_finished() {
            break;
        }
        // Ctrl-C while waiting on a server that does not close: leave. The
        // terminal is not in raw mode here, so there is nothing to restore.
        if SIGINT_SEEN.swap(false, Ordering::SeqCst) && !session.closed() {
            restore_terminal();
            eprintln!();
            return 130;
        }
        thread::sleep(Duration::from_millis(20));
    }
    match reader.join() {
        Ok(ending) => report(&ending, interactive, unasked),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunks: &[&[u8]]) -> Vec<Piece> {
        let mut incoming = Incoming::default();
        let mut out = Vec::new();
        for chunk in chunks {
            incoming.feed(chunk, &mut out);
        }
        out
    }

    fn line(s: &str) -> Piece {
        Piece::Line(s.to_string())
    }

    #[test]
    fn lines_split_and_joined_across_reads() {
        assert_eq!(
            pieces(&[b"one\ntw", b"o\r\nthr", b"ee\n"]),
            vec![line("one"), line("two"), line("three")]
        );
        assert_eq!(pieces(&[b"\n"]), vec![line("")]);
    }

    #[test]
    fn prompts_come_out_without_a_newline() {
        assert_eq!(
            pieces(&[b"Username", b" : "]),
            vec![Piece::Prompt("Username : ".into())]
        );
        assert_eq!(
            pieces(&[b"x\nPassword : "]),
            vec![line("x"), Piece::Prompt("Password : ".into())]
        );
        // Something that merely starts like a prompt waits for its newline.
        assert_eq!(pieces(&[b"Username : a"]), vec![]);
    }

    #[test]
    fn received_text_is_cleaned_even_when_split() {
        // ESC, BEL and a telnet command are dropped; a UTF-8 character cut in
        // two by the reads survives.
        let euro = "€".as_bytes();
        let got = pieces(&[
            b"\x1b[2Jhi\x07 ",
            &euro[..1],
            &euro[1..],
            b" \xff\xfb\x01ok\n",
        ]);
        assert_eq!(got, vec![line("[2Jhi € ok")]);
    }

    #[test]
    fn an_endless_line_is_printed_in_parts() {
        let mut incoming = Incoming::default();
        let mut out = Vec::new();
        incoming.feed(&vec![b'a'; MAX_PENDING + 1], &mut out);
        assert_eq!(out.len(), 1);
        incoming.feed(b"tail", &mut out);
        assert_eq!(incoming.finish(), Some("tail".into()));
        assert_eq!(incoming.finish(), None);
    }

    #[test]
    fn only_a_bare_login_or_regist_is_asked_locally() {
        assert_eq!(classify(b"login"), Action::Ask(Dialog::Login));
        assert_eq!(classify(b"  regist \t"), Action::Ask(Dialog::Regist));
        assert_eq!(classify(b"login a b"), Action::Send);
        assert_eq!(classify(b"login a"), Action::Send);
        assert_eq!(classify(b"LOGIN"), Action::Send);
        assert_eq!(classify(b"quit"), Action::Quit);
        assert_eq!(classify(b" quit "), Action::Quit);
        assert_eq!(classify(b"quit now"), Action::Quit);
        assert_eq!(classify(b"halo semua"), Action::Send);
        assert_eq!(classify(b""), Action::Send);
    }

    #[test]
    fn answers_become_the_one_line_form() {
        assert_eq!(
            one_line_form(Dialog::Regist, " client_a ", "123", Lang::Id),
            Ok("regist client_a 123".into())
        );
        assert_eq!(
            one_line_form(Dialog::Login, "a", "p@ss", Lang::En),
            Ok("login a p@ss".into())
        );
    }

    #[test]
    fn answers_that_are_not_one_word_get_the_servers_reply_locally() {
        let id = Lang::Id;
        assert_eq!(
            one_line_form(Dialog::Regist, "client a", "123", id),
            Err(Reply::BadUsername.text(id))
        );
        assert_eq!(
            one_line_form(Dialog::Regist, "a", "", id),
            Err(Reply::BadPassword.text(id))
        );
        assert_eq!(
            one_line_form(Dialog::Regist, "a", "1 2", Lang::En),
            Err(Reply::BadPassword.text(Lang::En))
        );
        assert_eq!(
            one_line_form(Dialog::Login, "", "x", id),
            Err(Reply::LoginFail.text(id))
        );
        assert_eq!(
            one_line_form(Dialog::Login, "a", "x y", id),
            Err(Reply::LoginFail.text(id))
        );
    }

    #[test]
    fn prompt_follows_the_language() {
        assert_eq!(user_prompt(Lang::Id), "[Anda] ");
        assert_eq!(user_prompt(Lang::En), "[You] ");
    }

    #[test]
    fn input_lines_lose_only_their_terminator() {
        let mut input: &[u8] = b"a b\r\n\nlast";
        assert_eq!(next_line(&mut input), Some(b"a b".to_vec()));
        assert_eq!(next_line(&mut input), Some(b"".to_vec()));
        assert_eq!(next_line(&mut input), Some(b"last".to_vec()));
        assert_eq!(next_line(&mut input), None);
    }
}
