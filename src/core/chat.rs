//! The chat state machine: who is registered, who is online, and what each line
//! makes the server say.
//!
//! [`Chat`] has no sockets, no clock and no threads, so every rule of SPEC
//! section 2 is tested in microseconds and the event loop holds no chat logic.
//! It is driven by events and answers through an [`Outbox`]: typed [`Event`]s
//! for connections (each door renders them its own way), connections to close,
//! and password jobs to start.
//!
//! # Call protocol
//!
//! The shell owns connection identity: it mints each [`ConnId`] (slab key plus
//! a generation) and never reuses one. Then, for every connection:
//!
//! 1. [`connect`](Chat::connect) once, when it is accepted.
//! 2. [`line`](Chat::line) (or [`too_long`](Chat::too_long)) for each complete
//!    line, in order, only while the previous call returned [`Flow::Ready`].
//!    [`Flow::Held`] means a password job (or a message's write) of this
//!    connection is in flight: feed nothing more (leave the bytes in the
//!    kernel) until [`auth_done`](Chat::auth_done) (or
//!    [`history_done`](Chat::history_done)) names the connection again.
//!    [`Flow::Closed`] means the core asked [`Outbox::close`]: feed nothing more.
//! 3. [`auth_done`](Chat::auth_done) for each finished job, whenever it
//!    finishes; it returns the connection that may be fed again, if any.
//!    The same for [`history_done`](Chat::history_done) and each finished
//!    [`HistoryJob::Store`] (a `send-to` to a user who is not online holds
//!    its sender until the message is on disk, SPEC section 9).
//! 4. [`set_clock`](Chat::set_clock) with the wall-clock time, before
//!    calls whose messages may be stored (once per loop turn is enough):
//!    the core reads no clock itself.
//! 5. [`tick`](Chat::tick) once [`next_deadline`](Chat::next_deadline) has
//!    passed (login timeouts).
//! 6. [`disconnect`](Chat::disconnect) exactly once, when the shell forgets the
//!    connection, whatever the reason: the peer closed, an error, an output
//!    overflow, or a close the core asked for (call it as soon as that request
//!    is seen, so the user goes offline at once). This is the only way a
//!    connection leaves the core, and the only place its user goes offline.
//!
//! The core never calls back into the shell except through the [`Outbox`]
//! passed to each call, and never blocks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

pub use super::auth::{AuthDone, AuthJob, AuthOutcome, Ticket};
pub use super::event::{Event, Prompt, Replayed, Users};
use super::history::{Broadcast, Message};
pub use super::history::{HistoryConfig, HistoryDone, HistoryJob, Loaded};
use super::inbox::Inboxes;
use super::limits::{
    AddressTable, AuthClaim, AuthOutcome as LimitOutcome, ConnClaim, LimitsConfig, Refused,
};
use crate::wire::framing::clean_line;
use crate::wire::protocol::{
    Command, Credentials, Reply, name_skeleton, valid_password, valid_username,
};

/// Names one connection for its whole life. The shell mints it: the slab key
/// under which it keeps the connection, plus a generation that makes a later
/// connection on the same key a different id, so the result of a password job
/// for a connection that has gone is never delivered to a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    key: u32,
    generation: u32,
}

impl ConnId {
    /// The id of the connection kept under slab `key`, `generation`-th of
    /// its key (or of the server: any number the shell never repeats for a
    /// key will do).
    pub fn new(key: usize, generation: u32) -> Self {
        Self {
            key: u32::try_from(key).unwrap_or(u32::MAX),
            generation,
        }
    }

    /// The shell's slab key.
    #[inline]
    pub fn key(self) -> usize {
        self.key as usize
    }
}

/// Failed logins one connection may make; the last one closes it.
pub const MAX_FAILED_LOGINS: u32 = 5;

/// Whether the shell may feed a connection its next line (see the call
/// protocol in the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Feed the next line.
    Ready,
    /// A password job is in flight: wait for [`Chat::auth_done`]; or a
    /// message's write is: wait for [`Chat::history_done`].
    Held,
    /// The core asked to close this connection: feed nothing more.
    Closed,
}

/// The reply for a refusal of the address table.
fn refusal_reply(refused: Refused) -> Reply {
    match refused {
        Refused::TooManyConns => Reply::TooManyConns,
        Refused::Throttled => Reply::Throttled,
        Refused::Busy => Reply::Busy,
    }
}

/// Where the core's decisions go. The shell implements it on its connections;
/// tests implement it with a recorder.
pub trait Outbox {
    /// Tell a connection something (it may be gone: then nothing happens).
    fn send(&mut self, to: ConnId, event: Event<'_>);
    /// Close a connection once what it was told is flushed. The shell answers
    /// with [`Chat::disconnect`].
    fn close(&mut self, conn: ConnId);
    /// Start slow work; its [`AuthDone`] comes back through [`Chat::auth_done`].
    fn submit(&mut self, job: AuthJob);

    /// Hand work to the history store; a [`HistoryJob::Store`] answers
    /// through [`Chat::history_done`]. The core asks only after
    /// [`Chat::enable_history`], so a shell without a history store (and
    /// an outbox of a test that never enables it) may leave this as is.
    fn store(&mut self, job: HistoryJob) {
        debug_assert!(false, "history job without a history store: {job:?}");
    }

    /// Tell every connection of `to` but `except` the same thing. The hot
    /// path of a chat server: an implementation renders the event once per
    /// dialect, and may gather broadcasts to the same audience into one copy
    /// per reader, as long as each connection still receives everything in
    /// the order the core said it (so it delivers what it gathered before
    /// anything else is said to anyone).
    fn broadcast(&mut self, to: Audience<'_>, except: ConnId, event: Event<'_>) {
        for &conn in to.conns {
            if conn != except {
                self.send(conn, event);
            }
        }
    }

    /// Delivers what [`broadcast`](Self::broadcast) gathered, now. A door
    /// that tells its connection something by its own means (IRC's
    /// replies to its own lines) calls it first, so that what others said
    /// earlier arrives earlier. Nothing to do for an outbox that does not
    /// gather.
    fn deliver_gathered(&mut self) {}
}

/// Who a broadcast goes to: every logged-in connection, and a version number
/// that changes whenever that set does, so an outbox can tell two broadcasts
/// to the same audience apart from two to different ones without comparing
/// the lists.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    pub conns: &'a [ConnId],
    pub version: u64,
}

/// Settings the core needs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// How long a connection may stay without logging in.
    pub login_timeout: Duration,
    /// At most this many hash jobs in flight; more get `BUSY`.
    pub max_pending_auth: usize,
    /// The per-address limits of SPEC section 7 (flood control is the
    /// shell's: it paces reading).
    pub limits: LimitsConfig,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            login_timeout: Duration::from_secs(120),
            max_pending_auth: 256,
            limits: LimitsConfig::default(),
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
    Login {
        username: String,
        known: bool,
    },
    Regist,
    /// A message for a user who is not online is being written.
    Store,
}

/// Per-connection state.
#[derive(Debug)]
struct Session {
    id: ConnId,
    /// Where it comes from, for the log.
    peer: SocketAddr,
    /// The logged-in name, if any.
    user: Option<Arc<str>>,
    dialogue: Option<Dialogue>,
    waiting: Option<Waiting>,
    /// The core asked to close it; it takes no more lines.
    closed: bool,
    /// Its place in the per-address count of open connections.
    claim: ConnClaim,
    failed_logins: u32,
    /// When this connection must have logged in by; `None` while logged in.
    login_deadline: Option<Instant>,
}

impl Session {
    fn flow(&self) -> Flow {
        if self.closed {
            Flow::Closed
        } else if self.waiting.is_some() {
            Flow::Held
        } else {
            Flow::Ready
        }
    }
}

/// The chat server's whole state, without I/O.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    /// Indexed by [`ConnId::key`]; `None` for free keys.
    sessions: Vec<Option<Session>>,
    /// Every name ever registered, and those being registered.
    accounts: HashMap<String, Account>,
    /// How many accounts (reservations included) share each look-alike
    /// skeleton ([`name_skeleton`]): a new name whose skeleton is taken gets
    /// `NAME_TAKEN`, so `aIice` cannot pass for `alice`. A count, not a set,
    /// because files written before this rule may hold look-alikes.
    skeletons: HashMap<String, u32>,
    /// Logged-in names, kept in byte order for `list-user`.
    online: BTreeMap<Arc<str>, ConnId>,
    /// The connections of `online`, unordered: what a broadcast walks, since
    /// walking a plain slice costs a fraction of walking the map.
    online_conns: Vec<ConnId>,
    /// Bumped on every change of `online_conns` (see [`Audience`]).
    online_version: u64,
    /// Login deadlines in the order they were set; the timeout is the same for
    /// all, so this is also deadline order. Stale entries are skipped.
    deadlines: VecDeque<(Instant, ConnId)>,
    pending_jobs: usize,
    /// Per-address counts (SPEC section 7).
    addresses: AddressTable,
    /// The per-address claim of each job in flight, by the connection that
    /// started it (one job per connection at a time). Kept apart from the
    /// session because a job outlives a connection that closes meanwhile,
    /// and its outcome still counts.
    job_claims: HashMap<ConnId, AuthClaim>,
    /// Messages that wait (SPEC section 9); `None` with `--history none`.
    inboxes: Option<Inboxes>,
    /// The wall-clock time the shell last gave, in seconds since the Unix
    /// epoch: when stored and replayed messages were sent.
    clock: i64,
}

impl Chat {
    /// A core with the accounts loaded from disk (name, PHC hash).
    pub fn new(config: ChatConfig, accounts: impl IntoIterator<Item = (String, String)>) -> Self {
        let accounts: HashMap<String, Account> = accounts
            .into_iter()
            .map(|(name, phc)| (name, Account::Stored(phc.into())))
            .collect();
        let mut skeletons = HashMap::new();
        for name in accounts.keys() {
            *skeletons.entry(name_skeleton(name)).or_insert(0) += 1;
        }
        let mut limits = config.limits.clone();
        limits.max_pending_auth = config.max_pending_auth;
        Self {
            addresses: AddressTable::new(&limits, Instant::now()),
            job_claims: HashMap::new(),
            config,
            sessions: Vec::new(),
            accounts,
            skeletons,
            online: BTreeMap::new(),
            online_conns: Vec::new(),
            online_version: 0,
            deadlines: VecDeque::new(),
            pending_jobs: 0,
            inboxes: None,
            clock: 0,
        }
    }

    /// Turns on SPEC section 9: a `send-to` to a registered user who is not
    /// online is stored (through [`Outbox::store`]) instead of refused, and
    /// each login gets what waited for it. `loaded` is what the store held
    /// at start.
    pub fn enable_history(&mut self, config: HistoryConfig, loaded: Loaded) {
        self.inboxes = Some(Inboxes::new(config, loaded));
    }

    /// The wall-clock time, in seconds since the Unix epoch (see the call
    /// protocol).
    pub fn set_clock(&mut self, unix_seconds: i64) {
        self.clock = unix_seconds;
    }

    /// Number of registered accounts (reservations excluded).
    pub fn account_count(&self) -> usize {
        self.accounts
            .values()
            .filter(|a| matches!(a, Account::Stored(_)))
            .count()
    }

    /// Keeps `name` and its look-alikes from being registered: the names a
    /// door answers as itself (the IRC door's `NickServ`), which a user
    /// must not be able to speak as. An account of that name already in the
    /// file still logs in.
    pub fn reserve_name(&mut self, name: &str) {
        *self.skeletons.entry(name_skeleton(name)).or_insert(0) += 1;
    }

    /// The name of the user online whose name is `name` but for ASCII
    /// letter case, if it is not online as given: IRC clients fold nicks
    /// (the IRC door advertises `CASEMAPPING=ascii`). Unambiguous, because
    /// two names that differ only in case cannot both be registered (the
    /// look-alike rule). A scan of who is online, only on a miss.
    pub fn online_name_ignoring_case(&self, name: &str) -> Option<&str> {
        if self.online.contains_key(name) {
            return None;
        }
        self.online
            .keys()
            .find(|online| online.eq_ignore_ascii_case(name))
            .map(|online| &**online)
    }

    /// Number of logged-in users.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// A connection was accepted. One over its address's limits is told
    /// `TOO_MANY_CONNS` and closed at once (through the outbox, so every
    /// door says it its own way); it is still disconnected as any other.
    pub fn connect(&mut self, id: ConnId, peer: SocketAddr, now: Instant, out: &mut impl Outbox) {
        let key = id.key();
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
        let deadline = now + self.config.login_timeout;
        let (claim, refused) = match self.addresses.connect(peer.ip(), now) {
            Ok(claim) => (claim, false),
            Err(_) => (ConnClaim::default(), true),
        };
        self.sessions[key] = Some(Session {
            id,
            peer,
            user: None,
            dialogue: None,
            waiting: None,
            closed: refused,
            claim,
            failed_logins: 0,
            login_deadline: Some(deadline),
        });
        if refused {
            info!("{peer}: refused, too many connections from this address");
            out.send(id, Event::Reply(Reply::TooManyConns));
            out.close(id);
        } else {
            self.deadlines.push_back((deadline, id));
        }
    }

    /// The shell has forgotten the connection (see the call protocol): its
    /// user, if any, goes offline and everyone else is told.
    pub fn disconnect(&mut self, id: ConnId, now: Instant, out: &mut impl Outbox) {
        let Some(slot) = self.sessions.get_mut(id.key()) else {
            return;
        };
        if slot.as_ref().is_none_or(|s| s.id != id) {
            debug_assert!(false, "disconnect of an unknown connection");
            return;
        }
        let Some(session) = slot.take() else {
            return;
        };
        self.addresses.disconnect(session.claim, now);
        if let Some(user) = session.user {
            self.go_offline(&user, out);
        }
        // Drop the tail of the table so `sessions` shrinks with the slab.
        while matches!(self.sessions.last(), Some(None)) {
            self.sessions.pop();
        }
    }

    /// A line that went over the length limit.
    pub fn too_long(&mut self, id: ConnId, out: &mut impl Outbox) -> Flow {
        match self.session(id) {
            Some(s) if s.flow() == Flow::Ready => {
                out.send(id, Event::Reply(Reply::TooLong));
                Flow::Ready
            }
            Some(s) => s.flow(),
            None => Flow::Closed,
        }
    }

    /// A complete line, terminator removed, as raw bytes from the socket.
    pub fn line(&mut self, id: ConnId, raw: &[u8], now: Instant, out: &mut impl Outbox) -> Flow {
        let Some(session) = self.session_mut(id) else {
            return Flow::Closed;
        };
        if session.flow() != Flow::Ready {
            debug_assert!(false, "line fed to a connection that is not ready");
            return session.flow();
        }
        let text = clean_line(raw);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Flow::Ready;
        }
        if let Some(dialogue) = session.dialogue.as_mut() {
            match dialogue.username.take() {
                None => {
                    dialogue.username = Some(trimmed.to_owned());
                    out.send(id, Event::Prompt(Prompt::Password));
                }
                Some(username) => {
                    let kind = dialogue.kind;
                    session.dialogue = None;
                    match kind {
                        DialogueKind::Login => self.login(id, &username, trimmed, now, out),
                        DialogueKind::Regist => self.regist(id, &username, trimmed, now, out),
                    }
                }
            }
        } else {
            self.command(id, Command::parse(trimmed), now, out);
        }
        self.flow(id)
    }

    /// Whether `id` may be fed its next line.
    pub fn flow(&self, id: ConnId) -> Flow {
        self.session(id).map_or(Flow::Closed, Session::flow)
    }

    /// Runs a command that a dialect other than the line protocol parsed
    /// (IRC's `PRIVMSG`, `NAMES`, SASL, ...), with the rules of a line:
    /// same call protocol, same replies, no prompt dialogue. Message text in
    /// `command` must already be cleaned ([`clean_line`]) and trimmed, as
    /// [`line`](Self::line) does for its own.
    pub fn run(
        &mut self,
        id: ConnId,
        command: Command<'_>,
        now: Instant,
        out: &mut impl Outbox,
    ) -> Flow {
        match self.session(id).map(Session::flow) {
            Some(Flow::Ready) => {}
            Some(flow) => {
                debug_assert!(false, "command run on a connection that is not ready");
                return flow;
            }
            None => return Flow::Closed,
        }
        self.command(id, command, now, out);
        self.flow(id)
    }

    /// The name `id` is logged in as, if any.
    pub fn user_of(&self, id: ConnId) -> Option<&str> {
        self.session(id).and_then(|s| s.user.as_deref())
    }

    /// Everyone online, in byte order (for a door that shows who is there
    /// without a `list-user` reply, such as IRC's `WHO`).
    pub fn users(&self) -> Users<'_> {
        Users(&self.online)
    }

    fn command(&mut self, id: ConnId, command: Command<'_>, now: Instant, out: &mut impl Outbox) {
        let login_timeout = self.config.login_timeout;
        let kind = match command {
            Command::Login(_) => DialogueKind::Login,
            _ => DialogueKind::Regist,
        };
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let logged_in = session.user.clone();
        match command {
            Command::Empty => {}
            Command::Help => out.send(id, Event::Help),
            Command::Quit => {
                out.send(id, Event::Reply(Reply::Bye));
                session.closed = true;
                out.close(id);
            }
            Command::Login(_) if logged_in.is_some() => {
                out.send(id, Event::Reply(Reply::AlreadySelf));
            }
            Command::Login(creds) | Command::Regist(creds) => match creds {
                Credentials::Ask => {
                    session.dialogue = Some(Dialogue {
                        kind,
                        username: None,
                    });
                    out.send(id, Event::Prompt(Prompt::Username));
                }
                Credentials::Malformed => out.send(id, Event::Reply(Reply::BadCommand)),
                Credentials::Given(user, pass) => match kind {
                    DialogueKind::Login => self.login(id, user, pass, now, out),
                    DialogueKind::Regist => self.regist(id, user, pass, now, out),
                },
            },
            _ if logged_in.is_none() => out.send(id, Event::Reply(Reply::LoginFirst)),
            // Logged in (the arm above took the rest): `Login`, `REGIST` and
            // the like are never relayed, lest a mistyped login broadcast a
            // password.
            Command::MistypedKeyword => out.send(id, Event::Reply(Reply::BadCommand)),
            Command::Logout => {
                session.user = None;
                let deadline = now + login_timeout;
                session.login_deadline = Some(deadline);
                let peer = session.peer;
                self.deadlines.push_back((deadline, id));
                out.send(id, Event::Reply(Reply::LogoutOk));
                if let Some(user) = logged_in {
                    info!("{peer}: {user} logged out");
                    self.go_offline(&user, out);
                }
            }
            Command::ListUser(true) => out.send(id, Event::Users(Users(&self.online))),
            Command::ListUser(false) => out.send(id, Event::Reply(Reply::BadListCommand)),
            Command::SendTo(None) => out.send(id, Event::Reply(Reply::BadCommand)),
            Command::SendTo(Some((target, text))) => match self.online.get(target) {
                Some(&to) => {
                    let from = logged_in.as_deref().unwrap_or_default();
                    out.send(to, Event::Private { from, text });
                }
                None => {
                    let from = logged_in.as_deref().unwrap_or_default();
                    self.send_to_offline(id, from, target, text, out);
                }
            },
            Command::Message(text) => {
                let from = logged_in.as_deref().unwrap_or_default();
                let to = Audience {
                    conns: &self.online_conns,
                    version: self.online_version,
                };
                out.broadcast(to, id, Event::Chat { from, text });
                if let Some(inboxes) = self.inboxes.as_mut().filter(|i| i.replaying()) {
                    let broadcast = Broadcast {
                        id: inboxes.next_id(),
                        at: self.clock,
                        from: from.to_owned(),
                        text: text.to_owned(),
                    };
                    inboxes.remember(broadcast.clone());
                    out.store(HistoryJob::Broadcast(broadcast));
                }
            }
        }
    }

    /// `send-to` named a user who is not online: stored for a registered
    /// user while the history is on (the sender is held until it is on
    /// disk), `NOT_ONLINE` otherwise.
    fn send_to_offline(
        &mut self,
        id: ConnId,
        from: &str,
        target: &str,
        text: &str,
        out: &mut impl Outbox,
    ) {
        let registered = matches!(self.accounts.get(target), Some(Account::Stored(_)));
        let Some(inboxes) = self.inboxes.as_mut().filter(|_| registered) else {
            out.send(id, Event::NotOnline(target));
            return;
        };
        if !inboxes.reserve(target, text.len()) {
            out.send(id, Event::InboxFull(target));
            return;
        }
        let message = Message {
            id: inboxes.next_id(),
            at: self.clock,
            to: target.to_owned(),
            from: from.to_owned(),
            text: text.to_owned(),
        };
        if let Some(session) = self.session_mut(id) {
            session.waiting = Some(Waiting::Store);
        }
        out.store(HistoryJob::Store {
            ticket: id,
            message,
        });
    }

    /// A message's write finished. The sender (if still there) is told
    /// `STORED` or `STORE_FAILED` and may be fed again; a stored message
    /// waits for its user, or goes to them at once if they logged in
    /// meanwhile. Returns the connection that may be fed lines again.
    pub fn history_done(&mut self, done: HistoryDone, out: &mut impl Outbox) -> Option<ConnId> {
        let id = done.ticket;
        let held = match self.session_mut(id) {
            Some(s) if matches!(s.waiting, Some(Waiting::Store)) => {
                s.waiting = None;
                true
            }
            _ => false,
        };
        let to = done.message.to.clone();
        if let Some(inboxes) = self.inboxes.as_mut() {
            inboxes.settle(done.message, done.stored);
        }
        if held {
            if done.stored {
                out.send(id, Event::Stored(&to));
            } else {
                out.send(id, Event::Reply(Reply::StoreFailed));
            }
        }
        if done.stored
            && let Some(&conn) = self.online.get(to.as_str())
        {
            self.deliver_stored(conn, &to, out);
        }
        (held && self.flow(id) == Flow::Ready).then_some(id)
    }

    /// Right after `LOGIN_OK`: the broadcasts to replay, then every stored
    /// message, before any live line can reach the connection.
    fn deliver_waiting(&mut self, id: ConnId, user: &str, out: &mut impl Outbox) {
        let Some(inboxes) = self.inboxes.as_ref() else {
            return;
        };
        for broadcast in inboxes.recent(self.clock) {
            out.send(
                id,
                Event::Replayed(Replayed {
                    from: &broadcast.from,
                    text: &broadcast.text,
                    at: broadcast.at,
                    now: self.clock,
                    private: false,
                }),
            );
        }
        self.deliver_stored(id, user, out);
    }

    /// Hands `user`'s stored messages to connection `id`, then tells the
    /// store they are delivered. In that order: a crash in between delivers
    /// them again, never loses them.
    fn deliver_stored(&mut self, id: ConnId, user: &str, out: &mut impl Outbox) {
        let Some(inboxes) = self.inboxes.as_mut() else {
            return;
        };
        let messages = inboxes.take(user);
        let Some(upto) = messages.iter().map(|m| m.id).max() else {
            return;
        };
        // Those past `--history-days` are dropped, and marked delivered too.
        let cutoff = inboxes.cutoff(self.clock);
        for message in messages.iter().filter(|m| m.at >= cutoff) {
            out.send(
                id,
                Event::Replayed(Replayed {
                    from: &message.from,
                    text: &message.text,
                    at: message.at,
                    now: self.clock,
                    private: true,
                }),
            );
        }
        out.store(HistoryJob::Delivered {
            to: user.to_owned(),
            upto,
        });
    }

    /// `login U P` (or its dialogue) from a connection that is not logged in.
    fn login(
        &mut self,
        id: ConnId,
        username: &str,
        password: &str,
        now: Instant,
        out: &mut impl Outbox,
    ) {
        if self.pending_jobs >= self.config.max_pending_auth {
            out.send(id, Event::Reply(Reply::Busy));
            return;
        }
        let Some(peer) = self.session(id).map(|s| s.peer) else {
            return;
        };
        // Before the name is looked up: THROTTLED reads and takes the same
        // for known and unknown names.
        let claim = match self.addresses.begin_login(peer.ip(), now) {
            Ok(claim) => claim,
            Err(refused) => {
                out.send(id, Event::Reply(refusal_reply(refused)));
                return;
            }
        };
        let phc = match self.accounts.get(username) {
            Some(Account::Stored(phc)) => Some(phc.clone()),
            _ => None,
        };
        let Some(session) = self.session_mut(id) else {
            return;
        };
        session.waiting = Some(Waiting::Login {
            username: username.to_owned(),
            known: phc.is_some(),
        });
        self.job_claims.insert(id, claim);
        self.pending_jobs += 1;
        out.submit(AuthJob::Verify {
            ticket: id,
            phc,
            password: password.to_owned(),
        });
    }

    /// `regist U P` (or its dialogue).
    fn regist(
        &mut self,
        id: ConnId,
        username: &str,
        password: &str,
        now: Instant,
        out: &mut impl Outbox,
    ) {
        let Some(peer) = self.session(id).map(|s| s.peer) else {
            return;
        };
        let reply = if !valid_username(username) {
            Reply::BadUsername
        } else if !valid_password(password) {
            Reply::BadPassword
        } else if self.skeletons.contains_key(&name_skeleton(username)) {
            // The same name, or one that looks like it.
            Reply::NameTaken
        } else if self.pending_jobs >= self.config.max_pending_auth {
            Reply::Busy
        } else {
            match self.addresses.begin_regist(peer.ip(), now) {
                Err(refused) => refusal_reply(refused),
                Ok(claim) => {
                    let Some(session) = self.session_mut(id) else {
                        return;
                    };
                    session.waiting = Some(Waiting::Regist);
                    self.accounts
                        .insert(username.to_owned(), Account::Reserving);
                    *self.skeletons.entry(name_skeleton(username)).or_insert(0) += 1;
                    self.job_claims.insert(id, claim);
                    self.pending_jobs += 1;
                    out.submit(AuthJob::Register {
                        ticket: id,
                        username: username.to_owned(),
                        password: password.to_owned(),
                    });
                    return;
                }
            }
        };
        out.send(id, Event::Reply(reply));
    }

    /// A hash job finished. Its connection may have gone meanwhile; a
    /// registration counts all the same, since it is on disk. Returns the
    /// connection that may be fed lines again, if any.
    pub fn auth_done(
        &mut self,
        done: AuthDone,
        now: Instant,
        out: &mut impl Outbox,
    ) -> Option<ConnId> {
        self.pending_jobs = self.pending_jobs.saturating_sub(1);
        let id = done.ticket;
        if let Some(claim) = self.job_claims.remove(&id) {
            let outcome = match &done.outcome {
                AuthOutcome::Registered { .. } => LimitOutcome::Succeeded,
                AuthOutcome::StorageFailed { .. } => LimitOutcome::Failed,
                // A right password counts as a success even for a name
                // that turns out to be online elsewhere; an unknown name is
                // a failure like a wrong password.
                AuthOutcome::Verified(matched) => {
                    if *matched {
                        LimitOutcome::Succeeded
                    } else {
                        LimitOutcome::Failed
                    }
                }
            };
            self.addresses.finish(claim, outcome, now);
        }
        let (waiting, peer) = match self.session_mut(id) {
            Some(s) => (s.waiting.take(), Some(s.peer)),
            None => (None, None),
        };
        let peer = peer.map_or_else(|| "(gone)".to_owned(), |p| p.to_string());
        match done.outcome {
            AuthOutcome::Registered { username, phc } => {
                info!("{peer}: registered {username}");
                self.accounts.insert(username, Account::Stored(phc));
                if waiting.is_some() {
                    out.send(id, Event::Reply(Reply::RegistOk));
                }
            }
            AuthOutcome::StorageFailed { username } => {
                if self.accounts.remove(&username).is_some() {
                    let skeleton = name_skeleton(&username);
                    if let Some(count) = self.skeletons.get_mut(&skeleton) {
                        *count -= 1;
                        if *count == 0 {
                            self.skeletons.remove(&skeleton);
                        }
                    }
                }
                if waiting.is_some() {
                    out.send(id, Event::Reply(Reply::StorageError));
                }
            }
            AuthOutcome::Verified(matched) => {
                let Some(Waiting::Login { username, known }) = waiting else {
                    return None;
                };
                if !(matched && known) {
                    self.login_failed(id, known.then_some(username.as_str()), out);
                } else if self.online.contains_key(username.as_str()) {
                    out.send(id, Event::Reply(Reply::AlreadyOther));
                } else if let Some(session) = self.session_mut(id) {
                    let name: Arc<str> = username.into();
                    session.user = Some(name.clone());
                    session.login_deadline = None;
                    info!("{peer}: {name} logged in");
                    self.online.insert(name.clone(), id);
                    self.online_conns.push(id);
                    self.online_version += 1;
                    let users = Users(&self.online);
                    out.send(id, Event::LoggedIn { user: &name, users });
                    self.deliver_waiting(id, &name, out);
                    let to = Audience {
                        conns: &self.online_conns,
                        version: self.online_version,
                    };
                    out.broadcast(to, id, Event::Online(&name));
                }
            }
        }
        (self.flow(id) == Flow::Ready).then_some(id)
    }

    /// A wrong password, or a name nobody has. `username` is `None` for the
    /// latter: it is not logged, because a name that matches no account is
    /// often a password typed at the wrong prompt.
    fn login_failed(&mut self, id: ConnId, username: Option<&str>, out: &mut impl Outbox) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        session.failed_logins += 1;
        let peer = session.peer;
        match username {
            Some(name) => info!("{peer}: failed login as {name}"),
            None => info!("{peer}: failed login for an unknown name"),
        }
        out.send(id, Event::Reply(Reply::LoginFail));
        if session.failed_logins >= MAX_FAILED_LOGINS {
            info!("{peer}: closed after {MAX_FAILED_LOGINS} failed logins");
            out.send(id, Event::Reply(Reply::TooManyFails));
            session.closed = true;
            out.close(id);
        }
    }

    /// The earliest moment [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(at, _)| at)
    }

    /// Time has passed: close connections whose login time ran out.
    pub fn tick(&mut self, now: Instant, out: &mut impl Outbox) {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(session) = self.session_mut(id)
                && session.user.is_none()
                && !session.closed
                && session.login_deadline == Some(at)
            {
                session.closed = true;
                out.send(id, Event::Reply(Reply::LoginTimeout));
                out.close(id);
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
        self.online_version += 1;
        let to = Audience {
            conns: &self.online_conns,
            version: self.online_version,
        };
        out.broadcast(to, gone, Event::Offline(user));
    }

    fn session(&self, id: ConnId) -> Option<&Session> {
        self.sessions
            .get(id.key())
            .and_then(Option::as_ref)
            .filter(|s| s.id == id)
    }

    fn session_mut(&mut self, id: ConnId) -> Option<&mut Session> {
        self.sessions
            .get_mut(id.key())
            .and_then(Option::as_mut)
            .filter(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::line;
    use crate::wire::protocol::Lang;
    use std::net::{Ipv4Addr, SocketAddr};

    /// Records what the core asks for, rendered by the line dialect; jobs
    /// are answered by the test.
    struct Recorder {
        lang: Lang,
        sent: Vec<(ConnId, String)>,
        /// Keys of the connections the core asked to close, in order.
        closed: Vec<usize>,
        /// Closed but not yet disconnected, as the shell would.
        to_disconnect: Vec<ConnId>,
        jobs: VecDeque<AuthJob>,
        history: VecDeque<HistoryJob>,
    }

    impl Recorder {
        fn new(lang: Lang) -> Self {
            Self {
                lang,
                sent: Vec::new(),
                closed: Vec::new(),
                to_disconnect: Vec::new(),
                jobs: VecDeque::new(),
                history: VecDeque::new(),
            }
        }
    }

    impl Outbox for Recorder {
        fn send(&mut self, to: ConnId, event: Event<'_>) {
            self.sent.push((to, line::to_string(self.lang, &event)));
        }
        fn close(&mut self, conn: ConnId) {
            self.closed.push(conn.key());
            self.to_disconnect.push(conn);
        }
        fn submit(&mut self, job: AuthJob) {
            self.jobs.push_back(job);
        }
        fn store(&mut self, job: HistoryJob) {
            self.history.push_back(job);
        }
    }

    /// A core plus a fake worker whose "hash" of `pw` is `hash:pw`, and the
    /// shell's part of the call protocol: ids minted per key, and
    /// `disconnect` after every close the core asks for.
    struct Harness {
        chat: Chat,
        out: Recorder,
        now: Instant,
        /// The generation of each key's current connection.
        generations: HashMap<usize, u32>,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(ChatConfig::default(), Lang::Id)
        }

        fn with(config: ChatConfig, lang: Lang) -> Self {
            Self {
                chat: Chat::new(config, [("client".to_owned(), "hash:123".to_owned())]),
                out: Recorder::new(lang),
                now: Instant::now(),
                generations: HashMap::new(),
            }
        }

        /// The id of the connection currently on `key`.
        fn id(&self, key: usize) -> ConnId {
            ConnId::new(key, self.generations.get(&key).copied().unwrap_or(0))
        }

        fn connect(&mut self, key: usize) {
            *self.generations.entry(key).or_insert(0) += 1;
            let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000 + key as u16));
            self.chat
                .connect(self.id(key), peer, self.now, &mut self.out);
            self.settle();
        }

        fn disconnect(&mut self, key: usize) {
            self.chat.disconnect(self.id(key), self.now, &mut self.out);
        }

        /// Does what the shell does after each call: forgets closed
        /// connections.
        fn settle(&mut self) {
            while let Some(id) = self.out.to_disconnect.pop() {
                self.chat.disconnect(id, self.now, &mut self.out);
            }
        }

        fn flow(&self, key: usize) -> Flow {
            self.chat.flow(self.id(key))
        }

        /// Sends a line and runs every job it started, like a fast worker.
        fn line(&mut self, key: usize, line: &str) {
            self.line_held(key, line);
            self.run_jobs();
        }

        /// Sends a line without running the jobs it starts.
        fn line_held(&mut self, key: usize, line: &str) {
            let id = self.id(key);
            let _ = self.chat.line(id, line.as_bytes(), self.now, &mut self.out);
            self.settle();
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
                let _ = self.chat.auth_done(done, self.now, &mut self.out);
                self.settle();
            }
        }

        /// Everything sent to `key` since the last call, concatenated.
        fn take(&mut self, key: usize) -> String {
            let mut text = String::new();
            self.out.sent.retain(|(to, bytes)| {
                if to.key() == key {
                    text.push_str(bytes);
                    false
                } else {
                    true
                }
            });
            text
        }

        fn login(&mut self, conn: usize, name: &str) {
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
    fn look_alike_names_are_taken_and_login_stays_exact() {
        let mut h = Harness::new();
        h.connect(0);
        h.line(0, "regist alice pw");
        for name in [
            "Alice", "ALICE", "aIice", "a1ice", "alIce", "CLIENT", "c1ient",
        ] {
            h.line(0, &format!("regist {name} pw"));
        }
        assert_eq!(
            h.take(0),
            format!(
                "Anda berhasil terdaftar\n{}",
                "Username telah dipakai\n".repeat(7)
            )
        );
        // Only the exact name logs in.
        h.line(0, "login Alice pw");
        h.line(0, "login alice pw");
        assert_eq!(
            h.take(0),
            "Username atau Password anda Salah\nLogin sukses\n"
        );
        // Names that merely share letters are still free.
        h.connect(1);
        h.line(1, "regist alicia pw");
        assert_eq!(h.take(1), "Anda berhasil terdaftar\n");
    }

    #[test]
    fn a_failed_registration_frees_its_look_alikes_too() {
        let mut h = Harness::new();
        h.connect(0);
        h.line_held(0, "regist Ghost pw");
        let Some(AuthJob::Register {
            ticket, username, ..
        }) = h.out.jobs.pop_front()
        else {
            panic!("expected a register job");
        };
        h.connect(1);
        h.line(1, "regist gh0st pw");
        assert_eq!(h.take(1), "Username telah dipakai\n");
        let _ = h.chat.auth_done(
            AuthDone {
                ticket,
                outcome: AuthOutcome::StorageFailed { username },
            },
            h.now,
            &mut h.out,
        );
        h.line(1, "regist gh0st pw");
        assert_eq!(h.take(1), "Anda berhasil terdaftar\n");
    }

    #[test]
    fn a_mistyped_login_is_never_chat() {
        let mut h = Harness::new();
        h.connect(0);
        h.line(0, "Login client 123");
        assert_eq!(h.take(0), "Anda harus login terlebih dahulu\n");
        h.login(1, "a");
        h.login(2, "b");
        h.line(1, "Login a secret");
        h.line(1, "REGIST x y");
        assert_eq!(h.take(1), "Perintah yang anda ketikkan salah\n".repeat(2));
        assert_eq!(h.take(2), "");
    }

    #[test]
    fn racing_registrations_of_one_name_give_one_success() {
        let mut h = Harness::new();
        h.connect(0);
        h.connect(1);
        h.line_held(0, "regist dup pw");
        h.line_held(1, "regist dup pw");
        assert_eq!(h.take(1), "Username telah dipakai\n");
        assert_eq!(h.flow(0), Flow::Held);
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
        let _ = h.chat.auth_done(
            AuthDone {
                ticket,
                outcome: AuthOutcome::StorageFailed { username },
            },
            h.now,
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
        h.disconnect(0);
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
        assert_eq!(h.flow(1), Flow::Closed);
        assert_eq!(
            h.take(2),
            "Teman anda [a] telah offline\nTeman anda [b] telah offline\n"
        );
        h.disconnect(2);
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
        let mut h = Harness::with(
            ChatConfig {
                max_pending_auth: 1,
                ..ChatConfig::default()
            },
            Lang::Id,
        );
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
        assert_eq!(h.flow(0), Flow::Held);
        // The connection goes before the worker finishes; a newcomer reuses its key.
        h.disconnect(0);
        h.connect(0);
        h.run_jobs();
        assert_eq!(h.take(0), "");
        h.line(0, "login keep pw");
        assert_eq!(h.take(0), "Login sukses\n");
    }

    #[test]
    fn login_timeout_closes_idle_connections_and_restarts_on_logout() {
        let mut h = Harness::with(
            ChatConfig {
                login_timeout: Duration::from_secs(120),
                ..ChatConfig::default()
            },
            Lang::Id,
        );
        let start = h.now;
        h.connect(0);
        h.login(1, "a");
        assert_eq!(
            h.chat.next_deadline(),
            Some(start + Duration::from_secs(120))
        );
        h.chat.tick(start + Duration::from_secs(119), &mut h.out);
        h.settle();
        assert!(h.out.closed.is_empty());
        h.now = start + Duration::from_secs(60);
        h.line(1, "logout");
        h.take(1);
        h.chat.tick(start + Duration::from_secs(120), &mut h.out);
        h.settle();
        assert_eq!(h.take(0), "Waktu login habis\n");
        assert_eq!(h.out.closed, vec![0]);
        // The logged-out connection has its own, later deadline.
        h.chat.tick(start + Duration::from_secs(179), &mut h.out);
        h.settle();
        assert_eq!(h.out.closed, vec![0]);
        h.chat.tick(start + Duration::from_secs(180), &mut h.out);
        h.settle();
        assert_eq!(h.take(1), "Waktu login habis\n");
        assert_eq!(h.out.closed, vec![0, 1]);
        assert_eq!(h.chat.next_deadline(), None);
    }

    #[test]
    fn english_replies() {
        let mut h = Harness::with(ChatConfig::default(), Lang::En);
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
        let id = h.id(0);
        assert_eq!(h.chat.too_long(id, &mut h.out), Flow::Ready);
        assert_eq!(h.take(0), "Pesan terlalu panjang (maksimal 4096 byte)\n");
    }

    /// A harness with the history on; the wall clock at 2026-11-30 15:04 UTC.
    fn with_history(replay: usize) -> Harness {
        let mut h = Harness::new();
        h.chat.enable_history(
            HistoryConfig {
                replay,
                ..HistoryConfig::default()
            },
            Loaded::default(),
        );
        h.chat.set_clock(1_796_051_045);
        h
    }

    impl Harness {
        /// Answers the queued store jobs (`stored` or failed); returns the
        /// other history jobs, in order, as (kind, user, id).
        fn run_history(&mut self, stored: bool) -> Vec<String> {
            let mut others = Vec::new();
            while let Some(job) = self.out.history.pop_front() {
                match job {
                    HistoryJob::Store { ticket, message } => {
                        let _ = self.chat.history_done(
                            HistoryDone {
                                ticket,
                                stored,
                                message,
                            },
                            &mut self.out,
                        );
                        self.settle();
                    }
                    HistoryJob::Delivered { to, upto } => others.push(format!("D {to} {upto}")),
                    HistoryJob::Broadcast(b) => others.push(format!("B {} {}", b.from, b.id)),
                }
            }
            others
        }
    }

    #[test]
    fn without_history_a_registered_offline_user_is_not_online() {
        let mut h = Harness::new();
        h.login(0, "a");
        h.line(0, "send-to client hi");
        assert_eq!(h.take(0), "User client tidak sedang online\n");
        assert!(h.out.history.is_empty());
    }

    #[test]
    fn a_message_for_an_offline_user_is_stored_then_delivered_at_login() {
        let mut h = with_history(0);
        h.login(0, "a");
        h.line_held(0, "send-to nobody hi");
        assert_eq!(h.take(0), "User nobody tidak sedang online\n");
        h.line_held(0, "send-to client hi  there");
        // Held until the store answers: nothing said, no line taken.
        assert_eq!(h.take(0), "");
        assert_eq!(h.flow(0), Flow::Held);
        assert_eq!(h.run_history(true), Vec::<String>::new());
        assert_eq!(h.take(0), "Pesan untuk client disimpan\n");
        assert_eq!(h.flow(0), Flow::Ready);
        h.line_held(0, "send-to client two");
        h.run_history(true);
        h.take(0);
        h.connect(1);
        h.line(1, "login client 123");
        let got = h.take(1);
        assert!(got.starts_with("Login sukses\n("), "{got}");
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 3, "{got}");
        assert!(
            lines[1].ends_with(") Pesan pribadi dari [a] hi  there"),
            "{got}"
        );
        assert!(lines[2].ends_with(") Pesan pribadi dari [a] two"), "{got}");
        assert_eq!(h.run_history(true), ["D client 2"]);
        // Delivered once.
        h.line(1, "logout");
        h.line(1, "login client 123");
        assert_eq!(h.take(1), "Logout sukses\nLogin sukses\n");
    }

    #[test]
    fn replayed_broadcasts_come_before_stored_messages() {
        let mut h = with_history(2);
        h.login(0, "a");
        for text in ["one", "two", "three"] {
            h.line(0, text);
        }
        h.line_held(0, "send-to client psst");
        assert_eq!(
            h.run_history(true),
            ["B a 1", "B a 2", "B a 3"],
            "broadcasts are kept, not acknowledged"
        );
        h.connect(1);
        h.line(1, "login client 123");
        let got = h.take(1);
        let tails: Vec<&str> = got
            .lines()
            .map(|l| l.split_once(") ").map_or(l, |(_, t)| t))
            .collect();
        assert_eq!(
            tails,
            [
                "Login sukses",
                "[a] two",
                "[a] three",
                "Pesan pribadi dari [a] psst"
            ]
        );
    }

    #[test]
    fn the_inbox_is_full_at_101_messages_and_a_failed_write_keeps_nothing() {
        let mut h = with_history(0);
        h.login(0, "a");
        for i in 0..100 {
            h.line_held(0, &format!("send-to client m{i}"));
            h.run_history(true);
        }
        assert_eq!(h.take(0), "Pesan untuk client disimpan\n".repeat(100));
        h.line_held(0, "send-to client one too many");
        assert_eq!(h.take(0), "Kotak pesan client penuh\n");
        assert!(h.out.history.is_empty());
        // A failed write is refused and kept nowhere.
        h.login(2, "b");
        h.line_held(2, "send-to a x");
        assert_eq!(h.take(2), "");
        h.line(0, "logout");
        h.take(0);
        h.take(2);
        h.line_held(2, "send-to a lost");
        h.run_history(false);
        assert_eq!(h.take(2), "Gagal menyimpan pesan, coba lagi nanti\n");
        h.line(0, "login a pw");
        assert_eq!(h.take(0), "Login sukses\n");
    }

    #[test]
    fn a_message_stored_while_its_user_logs_in_is_delivered_at_once() {
        let mut h = with_history(0);
        h.login(0, "a");
        h.line_held(0, "send-to client late");
        h.connect(1);
        h.line(1, "login client 123");
        assert_eq!(h.take(1), "Login sukses\n");
        assert_eq!(h.run_history(true), ["D client 1"]);
        assert_eq!(h.take(0), "Pesan untuk client disimpan\n");
        assert!(h.take(1).ends_with(") Pesan pribadi dari [a] late\n"));
    }

    #[test]
    fn a_sender_that_leaves_while_its_message_is_written_still_stores_it() {
        let mut h = with_history(0);
        h.login(0, "a");
        h.line_held(0, "send-to client kept");
        h.disconnect(0);
        h.connect(0);
        h.run_history(true);
        assert_eq!(h.take(0), "");
        h.connect(1);
        h.line(1, "login client 123");
        assert!(h.take(1).ends_with(") Pesan pribadi dari [a] kept\n"));
    }

    #[test]
    fn messages_past_history_days_are_not_delivered_but_marked() {
        let mut h = with_history(1);
        h.login(0, "a");
        h.line(0, "old news");
        h.line_held(0, "send-to client stale");
        h.run_history(true);
        h.chat.set_clock(1_796_051_045 + 31 * 86_400);
        h.connect(1);
        h.line(1, "login client 123");
        assert_eq!(h.take(1), "Login sukses\n");
        assert_eq!(h.run_history(true), ["D client 2"]);
    }
}
