//! The chat state machine: who is registered, who is online, and what each line
//! makes the server say.
//!
//! [`Chat`] has no sockets, no clock and no threads. The shell feeds it events
//! (a connection opened, a line arrived, a password hash finished, time passed,
//! a connection closed) and it answers through an [`Outbox`]: bytes for a
//! connection, a connection to close, a hashing job to start. That keeps every
//! rule of SPEC section 2 testable in microseconds, and keeps the event loop
//! free of chat logic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

pub use super::auth::{AuthDone, AuthJob, AuthOutcome, Ticket};

use crate::wire::framing::clean_line;
use crate::wire::protocol::{
    self, Command, Credentials, Lang, PROMPT_PASSWORD, PROMPT_USERNAME, Reply, valid_password,
    valid_username,
};

/// Identifies a connection; the shell uses its slab key. A key may be reused
/// after [`Chat::disconnect`], so anything that outlives a connection also
/// carries its [`Ticket`].
pub type ConnId = usize;

/// Failed logins one connection may make; the last one closes it.
pub const MAX_FAILED_LOGINS: u32 = 5;

/// Where the core's decisions go. The shell implements it on its connections;
/// tests implement it with a recorder.
pub trait Outbox {
    /// Queue bytes for a connection (it may be gone: then nothing happens).
    fn send(&mut self, conn: ConnId, bytes: &[u8]);
    /// Close a connection once what was sent to it is flushed. The core has
    /// already forgotten it.
    fn close(&mut self, conn: ConnId);
    /// Start slow work; its [`AuthDone`] comes back through [`Chat::auth_done`].
    fn submit(&mut self, job: AuthJob);

    /// Queue the same bytes for every connection in `to` but `except`. The
    /// hot path of a chat server: an implementation may do it in one tight
    /// loop rather than one call per reader.
    fn broadcast(&mut self, to: &[ConnId], except: ConnId, bytes: &[u8]) {
        for &conn in to {
            if conn != except {
                self.send(conn, bytes);
            }
        }
    }
}

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub lang: Lang,
    /// How long a connection may stay without logging in.
    pub login_timeout: Duration,
    /// At most this many hash jobs in flight; more get `BUSY`.
    pub max_pending_auth: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            lang: Lang::Id,
            login_timeout: Duration::from_secs(120),
            max_pending_auth: 256,
        }
    }
}

/// An account as the core knows it.
#[derive(Debug)]
enum Account {
    /// A `regist` for this name is being hashed and written: the name is taken
    /// but nobody can log in with it yet.
    Reserving,
    /// Durably stored.
    Stored(Arc<str>),
}

/// Which dialogue a bare `login` / `regist` started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialogueKind {
    Login,
    Regist,
}

/// The prompt dialogue: waiting for the username, then for the password.
#[derive(Debug)]
struct Dialogue {
    kind: DialogueKind,
    username: Option<String>,
}

/// A job in flight for this connection; its lines wait until it is done.
#[derive(Debug)]
enum Waiting {
    Login { username: String, known: bool },
    Regist,
}

/// Per-connection state.
#[derive(Debug)]
struct Session {
    serial: u64,
    /// The logged-in name, if any.
    user: Option<Arc<str>>,
    dialogue: Option<Dialogue>,
    waiting: Option<Waiting>,
    failed_logins: u32,
    /// When this connection must have logged in by; `None` while logged in.
    login_deadline: Option<Instant>,
}

/// The chat server's whole state, without I/O.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    /// Indexed by [`ConnId`]; `None` for free keys.
    sessions: Vec<Option<Session>>,
    /// Every name ever registered, and those being registered.
    accounts: HashMap<String, Account>,
    /// Logged-in names, kept in byte order for `list-user`.
    online: BTreeMap<Arc<str>, ConnId>,
    /// The connections of `online`, unordered: what a broadcast walks, since
    /// walking a plain slice costs a fraction of walking the map.
    online_conns: Vec<ConnId>,
    /// Login deadlines in the order they were set; the timeout is the same for
    /// all, so this is also deadline order. Stale entries are skipped.
    deadlines: VecDeque<(Instant, Ticket)>,
    pending_jobs: usize,
    next_serial: u64,
    /// Reused for formatting broadcasts, so a message costs no allocation.
    scratch: String,
}

impl Chat {
    /// A core with the accounts loaded from disk (name, PHC hash).
    pub fn new(config: ChatConfig, accounts: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            config,
            sessions: Vec::new(),
            accounts: accounts
                .into_iter()
                .map(|(name, phc)| (name, Account::Stored(phc.into())))
                .collect(),
            online: BTreeMap::new(),
            online_conns: Vec::new(),
            deadlines: VecDeque::new(),
            pending_jobs: 0,
            next_serial: 0,
            scratch: String::new(),
        }
    }

    /// Number of registered accounts (reservations excluded).
    pub fn account_count(&self) -> usize {
        self.accounts
            .values()
            .filter(|a| matches!(a, Account::Stored(_)))
            .count()
    }

    /// Number of logged-in users.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// A connection was accepted.
    pub fn connect(&mut self, conn: ConnId, now: Instant) {
        if self.sessions.len() <= conn {
            self.sessions.resize_with(conn + 1, || None);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let deadline = now + self.config.login_timeout;
        self.sessions[conn] = Some(Session {
            serial,
            user: None,
            dialogue: None,
            waiting: None,
            failed_logins: 0,
            login_deadline: Some(deadline),
        });
        self.deadlines
            .push_back((deadline, Ticket { conn, serial }));
    }

    /// Whether the connection can take its next line now. It cannot while a
    /// hash job of its own is in flight (its replies must keep line order), nor
    /// once the core has closed it.
    pub fn ready(&self, conn: ConnId) -> bool {
        matches!(self.session(conn), Some(s) if s.waiting.is_none())
    }

    /// The connection has gone (or is being closed by the shell): log its user
    /// out and tell the others. Safe to call for a connection already closed.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut impl Outbox) {
        if let Some(session) = self.sessions.get_mut(conn).and_then(Option::take) {
            if let Some(user) = session.user {
                self.go_offline(&user, out);
            }
            // Drop the tail of the table so `sessions` shrinks with the slab.
            while matches!(self.sessions.last(), Some(None)) {
                self.sessions.pop();
            }
        }
    }

    /// A line that went over the length limit.
    pub fn too_long(&mut self, conn: ConnId, out: &mut impl Outbox) {
        if self.session(conn).is_some() {
            out.send(conn, Reply::TooLong.line(self.config.lang).as_bytes());
        }
    }

    /// A complete line, terminator removed, as raw bytes from the socket.
    pub fn line(&mut self, conn: ConnId, raw: &[u8], now: Instant, out: &mut impl Outbox) {
        if !self.ready(conn) {
            debug_assert!(false, "line fed to a connection that is not ready");
            return;
        }
        let text = clean_line(raw);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return;
        }
        if let Some(dialogue) = self.session_mut(conn).and_then(|s| s.dialogue.as_mut()) {
            match dialogue.username.take() {
                None => {
                    dialogue.username = Some(trimmed.to_owned());
                    out.send(conn, PROMPT_PASSWORD.as_bytes());
                }
                Some(username) => {
                    let kind = dialogue.kind;
                    if let Some(s) = self.session_mut(conn) {
                        s.dialogue = None;
                    }
                    match kind {
                        DialogueKind::Login => self.login(conn, &username, trimmed, out),
                        DialogueKind::Regist => self.regist(conn, &username, trimmed, out),
                    }
                }
            }
            return;
        }
        self.command(conn, Command::parse(trimmed), now, out);
    }

    fn command(&mut self, conn: ConnId, command: Command<'_>, now: Instant, out: &mut impl Outbox) {
        let lang = self.config.lang;
        let login_timeout = self.config.login_timeout;
        let kind = match command {
            Command::Login(_) => DialogueKind::Login,
            _ => DialogueKind::Regist,
        };
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let logged_in = session.user.clone();
        match command {
            Command::Empty => {}
            Command::Help => out.send(conn, protocol::help(lang).as_bytes()),
            Command::Quit => {
                out.send(conn, Reply::Bye.line(lang).as_bytes());
                self.disconnect(conn, out);
                out.close(conn);
            }
            Command::Login(_) if logged_in.is_some() => {
                out.send(conn, Reply::AlreadySelf.line(lang).as_bytes());
            }
            Command::Login(creds) | Command::Regist(creds) => match creds {
                Credentials::Ask => {
                    session.dialogue = Some(Dialogue {
                        kind,
                        username: None,
                    });
                    out.send(conn, PROMPT_USERNAME.as_bytes());
                }
                Credentials::Malformed => {
                    out.send(conn, Reply::BadCommand.line(lang).as_bytes());
                }
                Credentials::Given(user, pass) => match kind {
                    DialogueKind::Login => self.login(conn, user, pass, out),
                    DialogueKind::Regist => self.regist(conn, user, pass, out),
                },
            },
            _ if logged_in.is_none() => {
                out.send(conn, Reply::LoginFirst.line(lang).as_bytes());
            }
            // Logged in (the arm above took the rest): never relayed.
            Command::MistypedKeyword => {
                out.send(conn, Reply::BadCommand.line(lang).as_bytes());
            }
            Command::Logout => {
                session.user = None;
                let deadline = now + login_timeout;
                session.login_deadline = Some(deadline);
                let ticket = Ticket {
                    conn,
                    serial: session.serial,
                };
                self.deadlines.push_back((deadline, ticket));
                out.send(conn, Reply::LogoutOk.line(lang).as_bytes());
                if let Some(user) = logged_in {
                    info!("conn {conn}: {user} logged out");
                    self.go_offline(&user, out);
                }
            }
            Command::ListUser(true) => {
                let list = protocol::user_list(lang, self.online.keys().map(|n| &**n));
                out.send(conn, list.as_bytes());
            }
            Command::ListUser(false) => {
                out.send(conn, Reply::BadListCommand.line(lang).as_bytes());
            }
            Command::SendTo(None) => out.send(conn, Reply::BadCommand.line(lang).as_bytes()),
            Command::SendTo(Some((target, text))) => match self.online.get(target) {
                Some(&to) => {
                    let sender = logged_in.as_deref().unwrap_or_default();
                    let line = protocol::private_message(lang, sender, text);
                    out.send(to, line.as_bytes());
                }
                None => out.send(conn, protocol::not_online(lang, target).as_bytes()),
            },
            Command::Message(text) => {
                let sender = logged_in.as_deref().unwrap_or_default();
                protocol::broadcast_into(&mut self.scratch, sender, text);
                out.broadcast(&self.online_conns, conn, self.scratch.as_bytes());
            }
        }
    }

    /// `login U P` (or its dialogue) from a connection that is not logged in.
    fn login(&mut self, conn: ConnId, username: &str, password: &str, out: &mut impl Outbox) {
        let lang = self.config.lang;
        if self.session(conn).is_some_and(|s| s.user.is_some()) {
            out.send(conn, Reply::AlreadySelf.line(lang).as_bytes());
            return;
        }
        if self.pending_jobs >= self.config.max_pending_auth {
            out.send(conn, Reply::Busy.line(lang).as_bytes());
            return;
        }
        let phc = match self.accounts.get(username) {
            Some(Account::Stored(phc)) => Some(phc.clone()),
            _ => None,
        };
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let ticket = Ticket {
            conn,
            serial: session.serial,
        };
        session.waiting = Some(Waiting::Login {
            username: username.to_owned(),
            known: phc.is_some(),
        });
        self.pending_jobs += 1;
        out.submit(AuthJob::Verify {
            ticket,
            phc,
            password: password.to_owned(),
        });
    }

    /// `regist U P` (or its dialogue).
    fn regist(&mut self, conn: ConnId, username: &str, password: &str, out: &mut impl Outbox) {
        let lang = self.config.lang;
        let reply = if !valid_username(username) {
            Reply::BadUsername
        } else if !valid_password(password) {
            Reply::BadPassword
        } else if self.accounts.contains_key(username) {
            Reply::NameTaken
        } else if self.pending_jobs >= self.config.max_pending_auth {
            Reply::Busy
        } else {
            let Some(session) = self.session_mut(conn) else {
                return;
            };
            let ticket = Ticket {
                conn,
                serial: session.serial,
            };
            session.waiting = Some(Waiting::Regist);
            self.accounts
                .insert(username.to_owned(), Account::Reserving);
            self.pending_jobs += 1;
            out.submit(AuthJob::Register {
                ticket,
                username: username.to_owned(),
                password: password.to_owned(),
            });
            return;
        };
        out.send(conn, reply.line(lang).as_bytes());
    }

    /// A hash job finished. Its connection may have gone meanwhile; a
    /// registration counts all the same, since it is on disk.
    pub fn auth_done(&mut self, done: AuthDone, out: &mut impl Outbox) {
        let lang = self.config.lang;
        self.pending_jobs = self.pending_jobs.saturating_sub(1);
        let conn = done.ticket.conn;
        let waiting = match self.sessions.get_mut(conn).and_then(Option::as_mut) {
            Some(s) if s.serial == done.ticket.serial => s.waiting.take(),
            _ => None,
        };
        match done.outcome {
            AuthOutcome::Registered { username, phc } => {
                info!("conn {conn}: registered {username}");
                self.accounts.insert(username, Account::Stored(phc));
                if waiting.is_some() {
                    out.send(conn, Reply::RegistOk.line(lang).as_bytes());
                }
            }
            AuthOutcome::StorageFailed { username } => {
                self.accounts.remove(&username);
                if waiting.is_some() {
                    out.send(conn, Reply::StorageError.line(lang).as_bytes());
                }
            }
            AuthOutcome::Verified(matched) => {
                let Some(Waiting::Login { username, known }) = waiting else {
                    return;
                };
                if !(matched && known) {
                    self.login_failed(conn, known.then_some(username.as_str()), out);
                } else if self.online.contains_key(username.as_str()) {
                    out.send(conn, Reply::AlreadyOther.line(lang).as_bytes());
                } else if let Some(session) = self.session_mut(conn) {
                    let name: Arc<str> = username.into();
                    session.user = Some(name.clone());
                    session.login_deadline = None;
                    info!("conn {conn}: {name} logged in");
                    self.online.insert(name, conn);
                    self.online_conns.push(conn);
                    out.send(conn, Reply::LoginOk.line(lang).as_bytes());
                }
            }
        }
    }

    /// A wrong password, or a name nobody has. `username` is `None` for the
    /// latter: it is not logged, because a name that matches no account is
    /// often a password typed at the wrong prompt.
    fn login_failed(&mut self, conn: ConnId, username: Option<&str>, out: &mut impl Outbox) {
        let lang = self.config.lang;
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        session.failed_logins += 1;
        match username {
            Some(name) => info!("conn {conn}: failed login as {name}"),
            None => info!("conn {conn}: failed login for an unknown name"),
        }
        out.send(conn, Reply::LoginFail.line(lang).as_bytes());
        if session.failed_logins >= MAX_FAILED_LOGINS {
            out.send(conn, Reply::TooManyFails.line(lang).as_bytes());
            self.disconnect(conn, out);
            out.close(conn);
        }
    }

    /// The earliest moment [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(at, _)| at)
    }

    /// Time has passed: close connections whose login time ran out.
    pub fn tick(&mut self, now: Instant, out: &mut impl Outbox) {
        while let Some(&(at, ticket)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let expired = self.session(ticket.conn).is_some_and(|s| {
                s.serial == ticket.serial && s.user.is_none() && s.login_deadline == Some(at)
            });
            if expired {
                out.send(
                    ticket.conn,
                    Reply::LoginTimeout.line(self.config.lang).as_bytes(),
                );
                self.disconnect(ticket.conn, out);
                out.close(ticket.conn);
            }
        }
    }

    /// Takes `user` off the online list and tells everyone still there.
    fn go_offline(&mut self, user: &str, out: &mut impl Outbox) {
        let Some(gone) = self.online.remove(user) else {
            return;
        };
        if let Some(at) = self.online_conns.iter().position(|&c| c == gone) {
            self.online_conns.swap_remove(at);
        }
        let notice = protocol::offline(self.config.lang, user);
        out.broadcast(&self.online_conns, gone, notice.as_bytes());
    }

    fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(conn).and_then(Option::as_ref)
    }

    fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(conn).and_then(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the core asks for; jobs are answered by the test.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<(ConnId, String)>,
        closed: Vec<ConnId>,
        jobs: VecDeque<AuthJob>,
    }

    impl Outbox for Recorder {
        fn send(&mut self, conn: ConnId, bytes: &[u8]) {
            self.sent
                .push((conn, String::from_utf8_lossy(bytes).into_owned()));
        }
        fn close(&mut self, conn: ConnId) {
            self.closed.push(conn);
        }
        fn submit(&mut self, job: AuthJob) {
            self.jobs.push_back(job);
        }
    }

    /// A core plus a fake worker whose "hash" of `pw` is `hash:pw`.
    struct Harness {
        chat: Chat,
        out: Recorder,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(ChatConfig::default())
        }

        fn with(config: ChatConfig) -> Self {
            Self {
                chat: Chat::new(config, [("client".to_owned(), "hash:123".to_owned())]),
                out: Recorder::default(),
                now: Instant::now(),
            }
        }

        fn connect(&mut self, conn: ConnId) {
            self.chat.connect(conn, self.now);
        }

        /// Sends a line and runs every job it started, like a fast worker.
        fn line(&mut self, conn: ConnId, line: &str) {
            self.line_held(conn, line);
            self.run_jobs();
        }

        /// Sends a line without running the jobs it starts.
        fn line_held(&mut self, conn: ConnId, line: &str) {
            self.chat
                .line(conn, line.as_bytes(), self.now, &mut self.out);
        }

        fn run_jobs(&mut self) {
            while let Some(job) = self.out.jobs.pop_front() {
                let done = match job {
                    AuthJob::Register {
                        ticket,
                        username,
                        password,
                    } => AuthDone {
                        ticket,
                        outcome: AuthOutcome::Registered {
                            username,
                            phc: format!("hash:{password}").into(),
                        },
                    },
                    AuthJob::Verify {
                        ticket,
                        phc,
                        password,
                    } => AuthDone {
                        ticket,
                        outcome: AuthOutcome::Verified(
                            phc.as_deref() == Some(format!("hash:{password}").as_str()),
                        ),
                    },
                };
                self.chat.auth_done(done, &mut self.out);
            }
        }

        /// Everything sent to `conn` since the last call, concatenated.
        fn take(&mut self, conn: ConnId) -> String {
            let mut text = String::new();
            self.out.sent.retain(|(to, bytes)| {
                if *to == conn {
                    text.push_str(bytes);
                    false
                } else {
                    true
                }
            });
            text
        }

        fn login(&mut self, conn: ConnId, name: &str) {
            self.connect(conn);
            self.line(conn, &format!("regist {name} pw"));
            self.line(conn, &format!("login {name} pw"));
            assert_eq!(self.take(conn), "Anda berhasil terdaftar\nLogin sukses\n");
        }
    }

    #[test]
    fn seed_figures_2_to_6_register_login_and_errors() {
        let mut h = Harness::new();
        h.connect(0);
        h.line(0, "");
        h.line(0, "   ");
        assert_eq!(h.take(0), "");
        h.line(0, "halo");
        assert_eq!(h.take(0), "Anda harus login terlebih dahulu\n");
        h.line(0, "login");
        h.line(0, "andre");
        h.line(0, "123");
        assert_eq!(
            h.take(0),
            "Username : Password : Username atau Password anda Salah\n"
        );
        h.line(0, "regist");
        h.line(0, "client a");
        h.line(0, "123");
        assert_eq!(
            h.take(0),
            "Username : Password : Username tidak valid: gunakan 1-32 huruf, angka, _ atau -\n"
        );
        h.line(0, "regist");
        h.line(0, " client_a ");
        h.line(0, "123");
        assert_eq!(h.take(0), "Username : Password : Anda berhasil terdaftar\n");
        h.line(0, "login client_a 234");
        h.line(0, "client_a");
        h.line(0, "login client_a 123");
        h.line(0, "login client_a 123");
        h.line(0, "login");
        assert_eq!(
            h.take(0),
            "Username atau Password anda Salah\nAnda harus login terlebih dahulu\nLogin sukses\n\
             Anda telah melakukan login sebelumnya.\nAnda telah melakukan login sebelumnya.\n"
        );
    }

    #[test]
    fn regist_validates_and_rejects_taken_names() {
        let mut h = Harness::new();
        h.connect(0);
        h.line(0, "regist client 123");
        h.line(0, "regist x");
        h.line(0, "regist x y z");
        h.line(0, &format!("regist {} pw", "n".repeat(33)));
        h.line(0, &format!("regist ok {}", "p".repeat(129)));
        h.line(0, "regist");
        h.line(0, "ok");
        h.line(0, "two words");
        assert_eq!(
            h.take(0),
            "Username telah dipakai\nPerintah yang anda ketikkan salah\nPerintah yang anda ketikkan salah\n\
             Username tidak valid: gunakan 1-32 huruf, angka, _ atau -\n\
             Password tidak valid: gunakan 1-128 karakter tanpa spasi\n\
             Username : Password : Password tidak valid: gunakan 1-128 karakter tanpa spasi\n"
        );
        // Login's malformed forms.
        h.line(0, "login x");
        h.line(0, "login x y z");
        assert_eq!(
            h.take(0),
            "Perintah yang anda ketikkan salah\nPerintah yang anda ketikkan salah\n"
        );
    }

    #[test]
    fn racing_registrations_of_one_name_give_one_success() {
        let mut h = Harness::new();
        h.connect(0);
        h.connect(1);
        h.line_held(0, "regist dup pw");
        h.line_held(1, "regist dup pw");
        assert_eq!(h.take(1), "Username telah dipakai\n");
        assert!(!h.chat.ready(0));
        // The name is reserved, but nobody can log in with it yet.
        h.line_held(1, "login dup pw");
        h.run_jobs();
        assert_eq!(h.take(0), "Anda berhasil terdaftar\n");
        assert_eq!(h.take(1), "Username atau Password anda Salah\n");
        assert_eq!(h.chat.account_count(), 2);
    }

    #[test]
    fn storage_failure_frees_the_name() {
        let mut h = Harness::new();
        h.connect(0);
        h.line_held(0, "regist ghost pw");
        let Some(AuthJob::Register {
            ticket, username, ..
        }) = h.out.jobs.pop_front()
        else {
            panic!("expected a register job");
        };
        h.chat.auth_done(
            AuthDone {
                ticket,
                outcome: AuthOutcome::StorageFailed { username },
            },
            &mut h.out,
        );
        assert_eq!(h.take(0), "Gagal menyimpan akun, coba lagi nanti\n");
        h.line(0, "regist ghost pw");
        assert_eq!(h.take(0), "Anda berhasil terdaftar\n");
    }

    #[test]
    fn login_elsewhere_wrong_password_first_and_free_again_after_close() {
        let mut h = Harness::new();
        h.login(0, "client_a");
        h.connect(1);
        h.line(1, "login client_a wrong");
        h.line(1, "login client_a pw");
        assert_eq!(
            h.take(1),
            "Username atau Password anda Salah\nUsername tersebut telah melakukan login sebelumnya.\n"
        );
        h.chat.disconnect(0, &mut h.out);
        h.line(1, "login client_a pw");
        assert_eq!(h.take(1), "Login sukses\n");
    }

    #[test]
    fn broadcast_private_message_and_list() {
        let mut h = Harness::new();
        h.login(0, "client_a");
        h.login(1, "client_b");
        h.login(2, "client_c");
        h.connect(3); // not logged in: receives no chat
        h.line(2, "  halo  ");
        assert_eq!(h.take(0), "[client_c] halo\n");
        assert_eq!(h.take(1), "[client_c] halo\n");
        assert_eq!(h.take(2), "");
        assert_eq!(h.take(3), "");
        h.line(2, "send-to client_a");
        assert_eq!(h.take(2), "Perintah yang anda ketikkan salah\n");
        h.line(2, "send-to client_a apa  kabar juga");
        assert_eq!(h.take(0), "Pesan pribadi dari [client_c] apa  kabar juga\n");
        assert_eq!(h.take(1), "");
        h.line(2, "send-to client_c me");
        assert_eq!(h.take(2), "Pesan pribadi dari [client_c] me\n");
        h.line(2, "send-to nobody hi");
        assert_eq!(h.take(2), "User nobody tidak sedang online\n");
        h.line(2, "list-user hal");
        h.line(2, "list-user");
        assert_eq!(
            h.take(2),
            "Perintah yang anda masukkan salah\nlist user : client_a, client_b, client_c.\n"
        );
        h.line(3, "list-user");
        h.line(3, "send-to client_a x");
        h.line(3, "logout");
        assert_eq!(h.take(3), "Anda harus login terlebih dahulu\n".repeat(3));
    }

    #[test]
    fn relayed_text_is_cleaned_of_controls() {
        let mut h = Harness::new();
        h.login(0, "a");
        h.login(1, "b");
        h.line(0, "hi\x1b[2J\x07 there\u{9b}");
        assert_eq!(h.take(1), "[a] hi[2J there\n");
        h.line(0, "\x1b\x07");
        assert_eq!(h.take(1), "");
    }

    #[test]
    fn logout_quit_and_disconnect_tell_the_others() {
        let mut h = Harness::new();
        h.login(0, "a");
        h.login(1, "b");
        h.login(2, "c");
        h.line(0, "logout");
        assert_eq!(h.take(0), "Logout sukses\n");
        assert_eq!(h.take(1), "Teman anda [a] telah offline\n");
        h.line(0, "halo");
        assert_eq!(h.take(0), "Anda harus login terlebih dahulu\n");
        h.line(1, "quit");
        assert_eq!(h.take(1), "Sampai jumpa\n");
        assert_eq!(h.out.closed, vec![1]);
        assert!(!h.chat.ready(1));
        assert_eq!(
            h.take(2),
            "Teman anda [a] telah offline\nTeman anda [b] telah offline\n"
        );
        h.chat.disconnect(2, &mut h.out);
        h.chat.disconnect(2, &mut h.out); // twice is harmless
        assert_eq!(h.chat.online_count(), 0);
        // `a` logged out, so it is not told.
        assert_eq!(h.take(0), "");
        h.line(0, "login c pw");
        assert_eq!(h.take(0), "Login sukses\n");
    }

    #[test]
    fn quit_before_login_and_help_in_any_state() {
        let mut h = Harness::new();
        h.connect(0);
        h.line(0, "help");
        assert!(h.take(0).contains("send-to"));
        h.line(0, "quit");
        assert_eq!(h.take(0), "Sampai jumpa\n");
        assert_eq!(h.out.closed, vec![0]);
    }

    #[test]
    fn fifth_failed_login_closes() {
        let mut h = Harness::new();
        h.connect(0);
        for _ in 0..4 {
            h.line(0, "login client nope");
        }
        assert_eq!(h.take(0), "Username atau Password anda Salah\n".repeat(4));
        assert!(h.out.closed.is_empty());
        h.line(0, "login");
        h.line(0, "client");
        h.line(0, "nope");
        assert_eq!(
            h.take(0),
            "Username : Password : Username atau Password anda Salah\n\
             Terlalu banyak percobaan login yang gagal\n"
        );
        assert_eq!(h.out.closed, vec![0]);
    }

    #[test]
    fn busy_when_the_job_queue_is_full_reserves_nothing() {
        let mut h = Harness::with(ChatConfig {
            max_pending_auth: 1,
            ..ChatConfig::default()
        });
        h.connect(0);
        h.connect(1);
        h.line_held(0, "login client 123");
        h.line_held(1, "regist fresh pw");
        h.line_held(1, "login client 123");
        assert_eq!(
            h.take(1),
            "Server sibuk, coba lagi nanti\nServer sibuk, coba lagi nanti\n"
        );
        h.run_jobs();
        assert_eq!(h.take(0), "Login sukses\n");
        h.line(1, "regist fresh pw");
        assert_eq!(h.take(1), "Anda berhasil terdaftar\n");
    }

    #[test]
    fn lines_wait_while_a_hash_is_pending_and_results_for_gone_connections_are_kept() {
        let mut h = Harness::new();
        h.connect(0);
        h.line_held(0, "regist keep pw");
        assert!(!h.chat.ready(0));
        // The connection goes before the worker finishes; a newcomer reuses its key.
        h.chat.disconnect(0, &mut h.out);
        h.connect(0);
        h.run_jobs();
        assert_eq!(h.take(0), "");
        h.line(0, "login keep pw");
        assert_eq!(h.take(0), "Login sukses\n");
    }

    #[test]
    fn login_timeout_closes_idle_connections_and_restarts_on_logout() {
        let mut h = Harness::with(ChatConfig {
            login_timeout: Duration::from_secs(120),
            ..ChatConfig::default()
        });
        let start = h.now;
        h.connect(0);
        h.login(1, "a");
        assert_eq!(
            h.chat.next_deadline(),
            Some(start + Duration::from_secs(120))
        );
        h.chat.tick(start + Duration::from_secs(119), &mut h.out);
        assert!(h.out.closed.is_empty());
        h.now = start + Duration::from_secs(60);
        h.line(1, "logout");
        h.take(1);
        h.chat.tick(start + Duration::from_secs(120), &mut h.out);
        assert_eq!(h.take(0), "Waktu login habis\n");
        assert_eq!(h.out.closed, vec![0]);
        // The logged-out connection has its own, later deadline.
        h.chat.tick(start + Duration::from_secs(179), &mut h.out);
        assert_eq!(h.out.closed, vec![0]);
        h.chat.tick(start + Duration::from_secs(180), &mut h.out);
        assert_eq!(h.take(1), "Waktu login habis\n");
        assert_eq!(h.out.closed, vec![0, 1]);
        assert_eq!(h.chat.next_deadline(), None);
    }

    #[test]
    fn english_replies() {
        let mut h = Harness::with(ChatConfig {
            lang: Lang::En,
            ..ChatConfig::default()
        });
        h.connect(0);
        h.line(0, "x");
        h.line(0, "regist a pw");
        h.line(0, "login a pw");
        h.line(0, "list-user");
        h.line(0, "send-to a hi");
        assert_eq!(
            h.take(0),
            "You must log in first\nRegistration successful\nLogin successful\n\
             online users : a.\nPrivate message from [a] hi\n"
        );
    }

    #[test]
    fn too_long_is_reported_before_login_too() {
        let mut h = Harness::new();
        h.connect(0);
        h.chat.too_long(0, &mut h.out);
        assert_eq!(h.take(0), "Pesan terlalu panjang (maksimal 4096 byte)\n");
    }
}
