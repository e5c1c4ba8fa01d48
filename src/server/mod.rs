//! The mio event loop: the thin shell around [`Chat`].
//!
//! Like the seed's `select()` loop, one thread and one [`Poll`] hold the
//! listener and every client socket, and clients live in a [`Slab`]. The loop
//! turns readiness into calls on the core (following the call protocol in
//! [`crate::core::chat`]) and the core's events
//! ([`crate::core::event::Event`]) into bytes: each connection's dialect
//! renders them ([`crate::wire::dialect`]) and its transport encodes them
//! ([`crate::transport`]) into its own output buffer
//! ([`crate::transport::output`]). A broadcast to a thousand readers is
//! rendered once and costs one `write` per reader, not per message.
//!
//! Replies and private lines are written at the end of the turn that made
//! them. Broadcasts to more than `FANOUT_WHOLE_ROUND` readers are written
//! a slice per turn (`FANOUT_SLICE`, about 50 µs of writes), with a
//! zero-timeout poll between slices, so a private line waits behind one
//! slice of a broadcast, not behind all of it (the flood scenario of
//! `chat-bench`). A sender whose line was a
//! broadcast is not read again until every reader queued up to it has been
//! written ([`Phase::Broadcasting`]): broadcasts cannot outrun the writing,
//! whatever rate a sender keeps up, and a reader gets many lines per `write`.
//!
//! mio is edge-triggered: every readable socket is read until `WouldBlock`
//! (in 4096-byte chunks, at most [`READ_BUDGET`] per turn), except while the
//! core holds the connection (its last line waits on a password hash): then
//! the bytes stay in the kernel, and reading resumes when the hash is done.
//! WRITABLE interest is registered only while output is pending.
//!
//! Doors (SPEC section 8): the plain listener always, the TLS listener when
//! `--tls-cert`/`--tls-key` are given, the IRC listener with `--irc-port`,
//! and the browser's web listener with `--web-port`. All sit in the one
//! [`Poll`] and feed the one [`Chat`]; a door only decides a new
//! connection's [`Transport`] and [`Dialect`], so every limit holds for all
//! alike. A TLS or browser connection enters the core when it is accepted,
//! like any other (so `--max-clients` and the login timeout count it), and is
//! closed if its handshake (or request head) has not finished within
//! [`HANDSHAKE_TIMEOUT`].

pub mod connection;
mod outbox;
mod sockets;

use self::outbox::{Batch, FANOUT_SLICE, FANOUT_WHOLE_ROUND, Io, Queues, queue, shed};
pub use self::sockets::raise_fd_limit;
use self::sockets::{
    listen, open_reserve, out_of_descriptors, refuse, release_free_memory, reregister,
    set_keepalive,
};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use self::connection::{Connection, Phase};
use crate::core::chat::{Chat, ChatConfig, ConnId, Flow, HistoryConfig};
use crate::store::accounts::{AccountFile, AuthWorker, HashParams};
use crate::store::history::{Commit, HistoryFile, HistoryPlace, HistoryWriter, unix_now};
use crate::transport::Transport;
use crate::transport::tls::{self, HANDSHAKE_TIMEOUT, TlsTransport};
use crate::transport::web::{Site, WebTransport};
use crate::wire::dialect::{Dialect, Fed, Input};
use crate::wire::framing::READ_CHUNK;
use crate::wire::irc::Keepalive;
use crate::wire::protocol::Lang;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const TLS_LISTENER: Token = Token(usize::MAX - 4);
const IRC_LISTENER: Token = Token(usize::MAX - 5);
const WEB_LISTENER: Token = Token(usize::MAX - 6);

/// A reader this far behind is disconnected (SPEC section 5).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How long a connection the server closed may take to read its last replies.
const LINGER: Duration = Duration::from_secs(2);

/// How long to wait before accepting again after accept errors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Bytes read from one connection per poll turn. Output is written at the end
/// of a turn, so a sender that keeps its socket full must yield, or its
/// broadcasts would pile up in every reader's buffer before any is written
/// (and other connections would wait).
pub const READ_BUDGET: usize = 16 * READ_CHUNK;

/// TLS handshake steps taken per poll turn at most (see `read`).
const HANDSHAKES_PER_TURN: usize = 16;

/// How long shutdown may spend flushing output.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// After this many bytes of buffers were freed, the next sweep asks the
/// allocator to hand free memory back to the OS.
const TRIM_AFTER: usize = 4 * 1024 * 1024;

/// Listen backlog: room for bursts of connections (mio's own is smaller).
const BACKLOG: libc::c_int = 4096;

/// How often output buffers of connections that received nothing since the
/// last sweep are released.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// TCP keepalive: probe a silent peer after this long, then every
/// [`KEEPALIVE_INTERVAL`], and give up after [`KEEPALIVE_PROBES`] missed
/// answers. A peer that vanished (power, network) is found in about two
/// minutes, and its name is free again (SPEC section 5).
const KEEPALIVE_IDLE: libc::c_int = 60;
const KEEPALIVE_INTERVAL: libc::c_int = 10;
const KEEPALIVE_PROBES: libc::c_int = 6;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// `None` keeps accounts in memory only.
    pub accounts: Option<PathBuf>,
    pub max_clients: usize,
    /// All output buffers together stay under this many bytes; past it, the
    /// reader furthest behind is disconnected first.
    pub max_output: usize,
    pub lang: Lang,
    pub chat: ChatConfig,
    pub hash_params: HashParams,
    pub auth_threads: usize,
    /// Messages that wait (SPEC section 9).
    pub history: HistorySettings,
    /// The TLS door, when its flags are given.
    pub tls: Option<TlsDoorConfig>,
    /// The IRC door (SPEC 8.3), when `--irc-port` is given.
    pub irc: Option<IrcDoorConfig>,
    /// The browser door, when `--web-port` is given.
    pub web: Option<WebDoorConfig>,
}

/// Where the browser door listens and whom it lets in (SPEC section 8.2).
#[derive(Debug, Clone)]
pub struct WebDoorConfig {
    pub addr: SocketAddr,
    /// Origins besides the page's own that may open the WebSocket
    /// (`--web-origin`), whole `scheme://host[:port]` strings.
    pub origins: Vec<String>,
}

/// The browser door while it is open.
struct WebDoor {
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The page and the origin rules, shared by every browser connection.
    site: Arc<Site>,
}

/// `--history`, `--replay`, `--history-days` (SPEC section 9).
#[derive(Debug, Clone)]
pub struct HistorySettings {
    pub place: HistoryPlace,
    /// Broadcasts replayed after each login.
    pub replay: usize,
    /// Records older than this many days are dropped (at least 1).
    pub days: u32,
    /// Group commit, or (to measure it) one fsync per message.
    pub commit: Commit,
}

impl Default for HistorySettings {
    /// Off: a server built without these flags behaves as before section 9.
    fn default() -> Self {
        Self {
            place: HistoryPlace::Off,
            replay: 0,
            days: 30,
            commit: Commit::Group,
        }
    }
}

/// Where the TLS door listens and what it presents (SPEC section 8.1).
#[derive(Debug, Clone)]
pub struct TlsDoorConfig {
    pub addr: SocketAddr,
    /// PEM certificate chain, re-read on SIGHUP.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1), re-read on SIGHUP.
    pub key: PathBuf,
}

/// Where the IRC door listens, and how it keeps silent clients in check.
#[derive(Debug, Clone)]
pub struct IrcDoorConfig {
    pub addr: SocketAddr,
    /// A client silent this long is sent `PING`; one silent for as long
    /// again is dropped. Checked at every sweep of idle connections (5 s).
    pub ping: Duration,
}

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Plain,
    Tls,
    Irc,
    Web,
}

/// The TLS door while it is open.
struct TlsDoor {
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// Given to each new connection; replaced by a SIGHUP reload. Open
    /// connections keep the one they started with.
    config: Arc<rustls::ServerConfig>,
    files: TlsDoorConfig,
}

/// The running server.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The TLS door, if its flags were given.
    tls: Option<TlsDoor>,
    /// TLS connections whose handshake must be over by the given moment, in
    /// order (the timeout is the same for all).
    handshakes: VecDeque<(Instant, ConnId)>,
    /// The IRC door's listener and address, with `--irc-port`.
    irc_listener: Option<TcpListener>,
    irc_addr: Option<SocketAddr>,
    /// The browser door, if `--web-port` was given.
    web: Option<WebDoor>,
    signals: Signals,
    chat: Chat,
    io: Io,
    config: ServerConfig,
    /// Connections the server closed, with the moment they are dropped at the
    /// latest, in order.
    lingering: VecDeque<(Instant, ConnId)>,
    /// TLS handshake reads done this turn (see [`HANDSHAKES_PER_TURN`]).
    handshakes_this_turn: usize,
    /// Connections over their flood allowance, by when they may go on.
    paused: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Connections in [`Phase::Broadcasting`], oldest first, each with the
    /// count of `fanout` pushes its broadcast reached (`u64::MAX` until its
    /// batch is delivered): resumed once that many have been taken off.
    broadcasting: VecDeque<(ConnId, u64)>,
    /// The round of readers being written is larger than
    /// [`FANOUT_WHOLE_ROUND`]: it is written a slice per turn.
    slicing: bool,
    /// Generation of the next connection: with the slab key, its [`ConnId`].
    next_generation: u32,
    /// Set while accepting is paused after accept errors.
    accept_paused_until: Option<Instant>,
    /// Connections are being refused for `--max-clients`: logged once.
    refusing: bool,
    /// When idle connections' output buffers are next released.
    next_sweep: Instant,
    /// Bytes of buffers freed since memory was last handed back to the OS.
    freed_since_trim: usize,
    /// Accepting ran out of descriptors and has not succeeded since: the
    /// warning is logged once per episode, not once per connection.
    out_of_descriptors: bool,
    /// A descriptor held in reserve: when none is left, it is closed to
    /// accept one waiting connection, tell it `SERVER_FULL` and close it, so
    /// that clients are answered instead of waiting in the backlog.
    reserve_fd: Option<File>,
}

impl Server {
    /// Loads the accounts, binds the listener and starts the auth workers.
    pub fn bind(config: ServerConfig) -> Result<Self, String> {
        // First, so that a signal during start-up (loading the accounts,
        // taking the lock) waits for the loop instead of killing
        // the process with a non-zero status.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| format!("cannot catch signals: {e}"))?;
        let (store, accounts) = match &config.accounts {
            Some(path) => {
                let (file, accounts) = AccountFile::open(path).map_err(|e| e.to_string())?;
                info!("accounts: {} ({} accounts)", path.display(), accounts.len());
                (Some(file), accounts)
            }
            None => {
                info!("accounts: in memory only (--accounts :memory:)");
                (None, Vec::new())
            }
        };
        let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| format!("cannot create waker: {e}"))?,
        );
        let wake = Arc::new(move || {
            if let Err(e) = waker.wake() {
                error!("cannot wake the event loop: {e}");
            }
        });
        let settings = &config.history;
        let (history_file, loaded) = match &settings.place {
            HistoryPlace::Off => {
                info!("history: off (--history none)");
                (None, None)
            }
            HistoryPlace::Memory => {
                info!("history: in memory only (--history :memory:)");
                (None, Some(Default::default()))
            }
            HistoryPlace::File(path) => {
                let (file, loaded) =
                    HistoryFile::open(path, settings.replay, settings.days, unix_now())
                        .map_err(|e| e.to_string())?;
                (Some(file), Some(loaded))
            }
        };
        let history = match &loaded {
            Some(_) => Some(HistoryWriter::spawn(
                history_file,
                settings.commit,
                wake.clone(),
            )?),
            None => None,
        };
        let worker = AuthWorker::spawn(config.auth_threads, store, config.hash_params, wake)?;
        let (listener, local_addr) = listen(&poll, config.addr, LISTENER)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let tls = match &config.tls {
            Some(files) => {
                let tls_config = tls::load_config(&files.cert, &files.key)
                    .map_err(|e| format!("TLS door: {e}"))?;
                let (listener, local_addr) = listen(&poll, files.addr, TLS_LISTENER)
                    .map_err(|e| format!("TLS door: cannot listen on {}: {e}", files.addr))?;
                Some(TlsDoor {
                    listener: Some(listener),
                    local_addr,
                    config: tls_config,
                    files: files.clone(),
                })
            }
            None => None,
        };
        let (irc_listener, irc_addr) = match &config.irc {
            Some(door) => {
                let (listener, addr) = listen(&poll, door.addr, IRC_LISTENER)
                    .map_err(|e| format!("IRC door: cannot listen on {}: {e}", door.addr))?;
                (Some(listener), Some(addr))
            }
            None => (None, None),
        };
        let web = match &config.web {
            Some(door) => {
                let (listener, local_addr) =
                    listen(&poll, door.addr, WEB_LISTENER).map_err(|e| {
                        format!("web door (--web-port): cannot listen on {}: {e}", door.addr)
                    })?;
                Some(WebDoor {
                    listener: Some(listener),
                    local_addr,
                    // With a certificate, the page and its WebSocket are
                    // served over TLS only: HTTPS and WSS (SPEC 8.2).
                    site: Arc::new(Site::new(config.lang, tls.is_some(), &door.origins)),
                })
            }
            None => None,
        };
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        let mut chat = Chat::new(config.chat.clone(), accounts);
        // Whether or not the IRC door is open now: accounts outlive a
        // restart with it.
        for name in crate::wire::irc::SERVICE_NAMES {
            chat.reserve_name(name);
        }
        if let Some(loaded) = loaded {
            chat.enable_history(
                HistoryConfig {
                    replay: config.history.replay,
                    days: config.history.days,
                    ..HistoryConfig::default()
                },
                loaded,
            );
        }
        Ok(Self {
            poll,
            listener: Some(listener),
            local_addr,
            tls,
            handshakes: VecDeque::new(),
            irc_listener,
            irc_addr,
            web,
            signals,
            chat,
            io: Io {
                conns: Slab::new(),
                queues: Queues {
                    max_total_output: config.max_output,
                    ..Queues::default()
                },
                lang: config.lang,
                close_requests: Vec::new(),
                worker,
                history,
                history_failed: Vec::new(),
                rendered: Vec::new(),
                open_by_kind: [0; Dialect::KINDS],
                batch: Batch::default(),
                broadcasts: 0,
            },
            config,
            lingering: VecDeque::new(),
            paused: BinaryHeap::new(),
            broadcasting: VecDeque::new(),
            slicing: false,
            handshakes_this_turn: 0,
            next_generation: 0,
            accept_paused_until: None,
            out_of_descriptors: false,
            refusing: false,
            next_sweep: Instant::now() + SWEEP_EVERY,
            freed_since_trim: 0,
            reserve_fd: open_reserve(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS door's address, when it is open.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|door| door.local_addr)
    }

    /// The IRC door's address, when it is open.
    pub fn irc_addr(&self) -> Option<SocketAddr> {
        self.irc_addr
    }

    /// The browser door's address, when it is open.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().map(|door| door.local_addr)
    }

    /// Runs until SIGINT or SIGTERM, then flushes for a bounded moment.
    pub fn run(mut self) -> Result<(), String> {
        info!(
            "listening on {} (max {} clients, language {:?})",
            self.local_addr, self.config.max_clients, self.config.lang
        );
        // After the plain door's line, which scripts take as "ready".
        if let Some(addr) = self.tls_addr() {
            info!("TLS listening on {addr}");
        }
        if let Some(addr) = self.irc_addr {
            info!("IRC listening on {addr}");
        }
        if let Some(addr) = self.web_addr() {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            info!("web listening on {addr} ({scheme})");
        }
        let mut events = Events::with_capacity(1024);
        loop {
            self.handshakes_this_turn = 0;
            let timeout = if self.io.queues.unread.is_empty()
                && self.io.queues.fanout.is_empty()
                && self.broadcasting.is_empty()
            {
                self.next_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll failed: {e}"));
            }
            let now = Instant::now();
            self.chat.set_clock(unix_now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(Door::Plain, now),
                    TLS_LISTENER => self.accept(Door::Tls, now),
                    IRC_LISTENER => self.accept(Door::Irc, now),
                    WEB_LISTENER => self.accept(Door::Web, now),
                    WAKER => self.finish_auth(now),
                    SIGNALS => {
                        if self.on_signals() {
                            self.shutdown(&mut events);
                            return Ok(());
                        }
                    }
                    Token(key) => {
                        if event.is_writable() {
                            self.flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, now);
                        }
                    }
                }
            }
            self.read_unread(now);
            self.resume_broadcasters(now);
            if !self.io.history_failed.is_empty() {
                self.finish_auth(now);
            }
            self.on_timers(now);
            self.end_turn();
        }
    }

    /// Handles pending signals; true when the server must stop.
    fn on_signals(&mut self) -> bool {
        let mut stop = false;
        for signal in self.signals.pending() {
            match signal {
                SIGHUP => self.reload(),
                _ => {
                    info!("signal {signal} received, shutting down");
                    stop = true;
                }
            }
        }
        stop
    }

    /// SIGHUP: re-reads the TLS certificate and key. New connections get the
    /// new pair, open ones keep theirs; a pair that does not load leaves the
    /// old one in service.
    fn reload(&mut self) {
        let Some(door) = &mut self.tls else {
            info!("SIGHUP received: nothing to reload (no TLS door), carrying on");
            return;
        };
        match tls::load_config(&door.files.cert, &door.files.key) {
            Ok(config) => {
                door.config = config;
                info!(
                    "SIGHUP received: TLS certificate {} and key {} reloaded",
                    door.files.cert.display(),
                    door.files.key.display()
                );
            }
            Err(e) => error!("SIGHUP received: TLS reload failed, keeping the old pair: {e}"),
        }
    }

    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        [
            self.chat.next_deadline(),
            self.lingering.front().map(|&(at, _)| at),
            self.handshakes.front().map(|&(at, _)| at),
            self.paused.peek().map(|&Reverse((at, _))| at),
            self.accept_paused_until,
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    /// How a door refuses a connection: the browser door inside TLS, like
    /// the TLS door, has no handshake to say it in.
    fn refusal_door(&self, door: Door) -> Door {
        if door == Door::Web && self.tls.is_some() {
            Door::Tls
        } else {
            door
        }
    }

    /// The listener of a door, while it is open.
    fn listener(&self, door: Door) -> Option<&TcpListener> {
        match door {
            Door::Plain => self.listener.as_ref(),
            Door::Tls => self.tls.as_ref().and_then(|d| d.listener.as_ref()),
            Door::Irc => self.irc_listener.as_ref(),
            Door::Web => self.web.as_ref().and_then(|d| d.listener.as_ref()),
        }
    }

    /// Accepts from a door until its backlog is empty.
    fn accept(&mut self, door: Door, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        // Errors that are about one connection (ECONNABORTED, ...) are
        // skipped; this many in a row means something else is wrong, and
        // retrying at once would spin.
        let mut errors_in_a_row = 0;
        loop {
            let Some(listener) = self.listener(door) else {
                return;
            };
            let (socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The backlog is empty.
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    if !self.refuse_with_reserve(door, &e) {
                        self.accept_paused_until = Some(now + ACCEPT_RETRY);
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    errors_in_a_row += 1;
                    if errors_in_a_row < 64 {
                        debug!("accept failed: {e}");
                        continue;
                    }
                    warn!("accept keeps failing: {e}; pausing accepts for a moment");
                    self.accept_paused_until = Some(now + ACCEPT_RETRY);
                    return;
                }
            };
            errors_in_a_row = 0;
            if self.out_of_descriptors {
                self.out_of_descriptors = false;
                info!("descriptors available again ({} open)", self.io.conns.len());
            }
            if self.io.conns.len() >= self.config.max_clients {
                // Once per episode at warn, then quietly: a flood of refused
                // connections must not flood the log too.
                if self.refusing {
                    debug!("{peer}: refused, server full");
                } else {
                    self.refusing = true;
                    warn!(
                        "{peer}: refused, server full ({} connections, --max-clients)",
                        self.io.conns.len()
                    );
                }
                refuse(socket, self.refusal_door(door), self.config.lang);
                continue;
            }
            self.refusing = false;
            let transport = match door {
                Door::Plain | Door::Irc => Transport::Plain,
                Door::Tls => {
                    let Some(config) = self.tls.as_ref().map(|d| Arc::clone(&d.config)) else {
                        return;
                    };
                    match TlsTransport::new(config) {
                        Ok(tls) => Transport::Tls(Box::new(tls)),
                        Err(e) => {
                            warn!("{peer}: cannot start TLS: {e}");
                            continue;
                        }
                    }
                }
                Door::Web => {
                    let Some(site) = self.web.as_ref().map(|d| Arc::clone(&d.site)) else {
                        return;
                    };
                    let tls = match self.tls.as_ref().map(|d| Arc::clone(&d.config)) {
                        None => None,
                        Some(config) => match TlsTransport::new(config) {
                            Ok(tls) => Some(tls),
                            Err(e) => {
                                warn!("{peer}: cannot start TLS: {e}");
                                continue;
                            }
                        },
                    };
                    Transport::Web(Box::new(WebTransport::new(site, tls)))
                }
            };
            // A browser's WebSocket speaks the line protocol: the same chat
            // as nc users.
            let dialect = match door {
                Door::Irc => Dialect::irc(now),
                Door::Plain | Door::Tls | Door::Web => Dialect::Line,
            };
            self.open(socket, peer, transport, dialect, now);
        }
    }

    /// Out of descriptors: uses the reserve descriptor to accept one waiting
    /// connection and tell it `SERVER_FULL`. Returns false when that is not
    /// possible (no reserve, or the system itself is out), so the caller
    /// pauses accepting instead of spinning.
    fn refuse_with_reserve(&mut self, door: Door, error: &io::Error) -> bool {
        if !self.out_of_descriptors {
            self.out_of_descriptors = true;
            warn!(
                "cannot accept: {error}; answering new connections SERVER_FULL until descriptors free up ({} open)",
                self.io.conns.len()
            );
        }
        let Some(reserve) = self.reserve_fd.take() else {
            return false;
        };
        drop(reserve);
        let accepted = self.listener(door).map(|l| l.accept());
        let answered = matches!(accepted, Some(Ok(_)));
        self.reserve_fd = match accepted {
            Some(Ok((socket, peer))) => {
                debug!("{peer}: refused, out of descriptors");
                refuse(socket, self.refusal_door(door), self.config.lang);
                open_reserve()
            }
            _ => open_reserve(),
        };
        // Without a reserve, the next round could not answer anyone.
        self.reserve_fd.is_some() && answered
    }

    /// Takes a new connection into the loop and the core.
    fn open(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        dialect: Dialect,
        now: Instant,
    ) {
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        if let Err(e) = set_keepalive(socket.as_raw_fd()) {
            debug!("{peer}: cannot set TCP keepalive: {e}");
        }
        let entry = self.io.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            warn!("{peer}: cannot register: {e}");
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnId::new(key, self.next_generation);
        if transport.is_handshaking() {
            self.handshakes.push_back((now + HANDSHAKE_TIMEOUT, id));
        }
        self.io.open_by_kind[dialect.kind()] += 1;
        let bucket = self.config.chat.limits.bucket(now);
        entry.insert(Connection::new(
            id, socket, peer, transport, dialect, bucket,
        ));
        debug!("{peer}: connected as conn {key}");
        self.chat.connect(id, peer, now, &mut self.io);
        self.settle();
    }

    /// Reads a connection until the socket would block or its budget is
    /// spent, feeding whole lines to the core while it takes them.
    fn read(&mut self, key: usize, now: Instant) {
        let mut budget = READ_BUDGET;
        loop {
            self.feed(key, now);
            let Some(conn) = self.io.conns.get_mut(key) else {
                return;
            };
            match conn.phase {
                Phase::Doomed | Phase::Held | Phase::Paused | Phase::Broadcasting => return,
                Phase::Closing => {
                    self.discard_input(key);
                    return;
                }
                Phase::Open => {}
            }
            // A TLS handshake costs a few hundred microseconds of CPU: a burst
            // of a thousand in one turn would hold chat up for a quarter of a
            // second, so past a few per turn they wait for the next turn
            // (which comes at once: the poll does not sleep while reads wait).
            let handshake = conn.transport.is_handshaking();
            if budget == 0 || (handshake && self.handshakes_this_turn >= HANDSHAKES_PER_TURN) {
                if !conn.queued_read {
                    conn.queued_read = true;
                    self.io.queues.unread.push(key);
                }
                return;
            }
            if handshake {
                self.handshakes_this_turn += 1;
            }
            if conn.peer_eof {
                // Everything the peer sent has been answered.
                debug!("{}: closed by peer", conn.peer);
                self.begin_close(key);
                return;
            }
            let before = conn.pending();
            let result = conn
                .transport
                .read(&mut conn.socket, &mut conn.lines, &mut conn.out);
            if conn.pending() != before {
                // The transport answered by itself (a TLS handshake, an HTTP
                // answer, a pong): that output counts and is flushed like any
                // other.
                self.io.queues.total_output = self.io.queues.total_output - before + conn.pending();
                self.io.queues.flush_this_turn(key, conn);
            }
            match result {
                Ok(0) => conn.peer_eof = true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if !conn.lines.telnet_replies().is_empty() {
                        // Telnet shows nothing more until its options are
                        // answered, and sends no newline after them (SPEC 1).
                        let replies = conn.lines.telnet_replies().to_vec();
                        conn.lines.clear_telnet_replies();
                        queue(key, conn, &replies, &mut self.io.queues);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    // The transport's last word is queued (a failed TLS
                    // handshake's alert, an HTTP answer, a close frame): send
                    // it, then close this connection only.
                    match conn.transport {
                        Transport::Tls(_) => debug!("{}: TLS failed: {e}", conn.peer),
                        _ => debug!("{}: {e}", conn.peer),
                    }
                    self.begin_close(key);
                    return;
                }
                Err(e) => {
                    debug!("{}: read failed: {e}", conn.peer);
                    self.drop_conn(key);
                    return;
                }
            }
        }
    }

    /// Reads again the connections that used up their budget last turn. Their
    /// sockets may still hold data, and edge-triggered readiness will not say
    /// so again.
    fn read_unread(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.io.queues.unread) {
            if let Some(conn) = self.io.conns.get_mut(key)
                && conn.queued_read
            {
                conn.queued_read = false;
                self.read(key, now);
            }
        }
    }

    /// Reads and feeds again the senders whose broadcasts every reader has
    /// now been written.
    fn resume_broadcasters(&mut self, now: Instant) {
        while let Some(&(id, mark)) = self.broadcasting.front() {
            if mark > self.io.queues.fanout_popped {
                break;
            }
            self.broadcasting.pop_front();
            self.resume(id, Phase::Broadcasting, now);
        }
    }

    /// Reads and feeds again a connection that waited in `phase`, if it is
    /// still open and still waiting (it may have been closed meanwhile, its
    /// slot even taken by a newer connection).
    fn resume(&mut self, id: ConnId, phase: Phase, now: Instant) {
        if let Some(conn) = self.io.conns.get_mut(id.key())
            && conn.id == id
            && conn.phase == phase
        {
            conn.phase = Phase::Open;
            self.read(id.key(), now);
        }
    }

    /// Hands buffered lines to the connection's dialect, and so to the core,
    /// until the core must wait or none are left.
    fn feed(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        let id = conn.id;
        let at_eof = conn.peer_eof;
        // The buffer and dialect leave the connection while the core runs,
        // because the core writes into the connections. A stand-in of the
        // same kind stays, so a batch delivered meanwhile reaches this
        // connection in its own dialect.
        let mut lines = std::mem::take(&mut conn.lines);
        let stand_in = conn.dialect.stand_in(now);
        let mut dialect = std::mem::replace(&mut conn.dialect, stand_in);
        let mut bucket = conn.bucket;
        let input = Input {
            lines: &mut lines,
            at_eof,
            bucket: &mut bucket,
            lang: self.io.lang,
        };
        let broadcasts_before = self.io.broadcasts;
        let fed = dialect.feed(id, input, &mut self.chat, now, &mut self.io);
        if let Some(conn) = self.io.conns.get_mut(key) {
            conn.lines = lines;
            conn.dialect = dialect;
            conn.bucket = bucket;
            // What the dialect said to this connection while it was out.
            let said = conn.dialect.take_output();
            if !said.is_empty() && conn.phase != Phase::Doomed {
                queue(key, conn, &said, &mut self.io.queues);
            }
            conn.dialect.restore_output(said);
            if self.io.queues.total_output > self.io.queues.max_total_output {
                shed(&mut self.io.conns, &mut self.io.queues);
            }
            let Some(conn) = self.io.conns.get_mut(key) else {
                self.settle();
                return;
            };
            if conn.phase == Phase::Open {
                match fed {
                    Fed::Flow(Flow::Held) => conn.phase = Phase::Held,
                    Fed::Paused(until) => {
                        conn.phase = Phase::Paused;
                        self.paused.push(Reverse((until, id)));
                    }
                    Fed::Flow(_) if self.io.broadcasts != broadcasts_before => {
                        conn.phase = Phase::Broadcasting;
                        self.broadcasting.push_back((id, u64::MAX));
                    }
                    Fed::Flow(_) => {}
                }
            }
        }
        self.settle();
    }

    /// Answers the core's close requests: each connection leaves the core at
    /// once (its user goes offline now, not when the socket is finally
    /// dropped) and is flushed and closed.
    fn settle(&mut self) {
        while let Some(id) = self.io.close_requests.pop() {
            if self.io.conns.get(id.key()).is_some_and(|c| c.id == id) {
                self.begin_close(id.key());
            }
        }
    }

    /// The server closes a connection: the core forgets it, its output is
    /// flushed (bounded by [`LINGER`]), then it is shut down.
    fn begin_close(&mut self, key: usize) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Closing => return,
            // Doomed: it is dropped at the end of the turn anyway.
            Phase::Doomed => return,
            Phase::Open | Phase::Held | Phase::Paused | Phase::Broadcasting => {}
        }
        conn.phase = Phase::Closing;
        conn.in_core = false;
        let id = conn.id;
        // What it was still to be told goes out before the goodbye of its
        // transport.
        self.io.deliver_batch();
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        let before = conn.pending();
        conn.transport.start_close(&mut conn.out);
        self.io.queues.total_output = self.io.queues.total_output - before + conn.pending();
        self.io.queues.flush_this_turn(key, conn);
        let now = Instant::now();
        self.lingering.push_back((now + LINGER, id));
        self.chat.disconnect(id, now, &mut self.io);
    }

    /// Reads and throws away what a closing connection still sends, so that
    /// closing it does not reset the connection before it read our last lines.
    fn discard_input(&mut self, key: usize) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match io::Read::read(&mut conn.socket, &mut chunk) {
                Ok(0) => {
                    conn.peer_eof = true;
                    if conn.out.pending() == 0 {
                        self.drop_conn(key);
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.drop_conn(key);
                    return;
                }
            }
        }
    }

    /// Writes pending output; toggles WRITABLE interest when the buffer turns
    /// empty or non-empty.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        conn.queued_flush = false;
        if conn.phase == Phase::Doomed {
            return;
        }
        let written = if matches!(conn.transport, Transport::Plain) {
            // The hot path: what is written is what is no longer pending.
            let written = conn.out.write_to(&mut conn.socket);
            if let Ok(n) = written {
                self.io.queues.total_output -= n;
            }
            written
        } else {
            let before = conn.pending();
            let written = conn.transport.write(&mut conn.socket, &mut conn.out);
            // Sealing can grow what is pending (record headers and tags), so
            // account by the difference, not by the bytes written.
            self.io.queues.total_output = self.io.queues.total_output - before + conn.pending();
            written
        };
        if let Err(e) = written {
            debug!("{}: write failed: {e}", conn.peer);
            self.drop_conn(key);
            return;
        }
        if conn.out.pending() > 0 {
            if !conn.writable_interest {
                conn.writable_interest = true;
                reregister(self.poll.registry(), conn, key);
            }
            return;
        }
        if conn.writable_interest {
            conn.writable_interest = false;
            reregister(self.poll.registry(), conn, key);
        }
        if conn.phase == Phase::Closing {
            if conn.peer_eof {
                self.drop_conn(key);
            } else {
                // Half-close, then wait (bounded) for the peer to finish.
                let _ = conn.socket.shutdown(Shutdown::Write);
                self.discard_input(key);
            }
        }
    }

    /// Removes a connection for good. If the core still knows it, its user
    /// goes offline now.
    fn drop_conn(&mut self, key: usize) {
        let Some(conn) = self.io.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Doomed {
            self.io.queues.total_output -= conn.pending();
        }
        // Nothing the core says from now on reaches it.
        conn.phase = Phase::Doomed;
        if conn.in_core {
            conn.in_core = false;
            let id = conn.id;
            self.chat.disconnect(id, Instant::now(), &mut self.io);
        }
        let mut conn = self.io.conns.remove(key);
        self.io.open_by_kind[conn.dialect.kind()] -= 1;
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            debug!("{}: deregister failed: {e}", conn.peer);
        }
        debug!("{}: connection closed", conn.peer);
        self.freed_since_trim += conn.out.capacity();
        if self.accept_paused_until.is_some() {
            // A descriptor is free again.
            self.accept_paused_until = Some(Instant::now());
        }
    }

    /// Delivers finished hash and history jobs and resumes the connections
    /// they held up.
    fn finish_auth(&mut self, now: Instant) {
        loop {
            let resumed = if let Some(done) = self.io.worker.try_result() {
                self.chat.auth_done(done, now, &mut self.io)
            } else if let Some(done) = self
                .io
                .history
                .as_ref()
                .and_then(|h| h.try_result())
                .or_else(|| self.io.history_failed.pop())
            {
                self.chat.history_done(done, &mut self.io)
            } else {
                return;
            };
            self.settle();
            if let Some(id) = resumed {
                self.resume(id, Phase::Held, now);
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        self.chat.tick(now, &mut self.io);
        self.settle();
        while let Some(&(at, id)) = self.handshakes.front() {
            if at > now {
                break;
            }
            self.handshakes.pop_front();
            if let Some(conn) = self.io.conns.get(id.key())
                && conn.id == id
                && conn.transport.is_handshaking()
                && !matches!(conn.phase, Phase::Closing | Phase::Doomed)
            {
                let what = match conn.transport {
                    Transport::Web(_) => "HTTP request head",
                    _ => "TLS handshake",
                };
                debug!(
                    "{}: {what} not finished within {HANDSHAKE_TIMEOUT:?}, closing",
                    conn.peer
                );
                self.drop_conn(id.key());
            }
        }
        while let Some(&Reverse((at, id))) = self.paused.peek() {
            if at > now {
                break;
            }
            self.paused.pop();
            self.resume(id, Phase::Paused, now);
        }
        while let Some(&(at, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if self.io.conns.get(id.key()).is_some_and(|c| c.id == id) {
                self.drop_conn(id.key());
            }
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SWEEP_EVERY;
            let ping = self.config.irc.as_ref().map(|door| door.ping);
            let mut silent = Vec::new();
            for (key, conn) in self.io.conns.iter_mut() {
                self.freed_since_trim +=
                    conn.out.sweep() + conn.lines.sweep() + conn.transport.sweep();
                if let Some(every) = ping
                    && matches!(
                        conn.phase,
                        Phase::Open | Phase::Held | Phase::Paused | Phase::Broadcasting
                    )
                {
                    match conn.dialect.keepalive(now, every) {
                        Keepalive::Quiet => {}
                        Keepalive::Ping(bytes) => queue(key, conn, bytes, &mut self.io.queues),
                        Keepalive::Drop(bytes) => {
                            queue(key, conn, bytes, &mut self.io.queues);
                            silent.push(key);
                        }
                    }
                }
            }
            for key in silent {
                if let Some(conn) = self.io.conns.get(key) {
                    info!("{}: no answer to PING, closing", conn.peer);
                }
                self.begin_close(key);
            }
            if self.freed_since_trim >= TRIM_AFTER {
                self.freed_since_trim = 0;
                release_free_memory();
            }
        }
        if self.accept_paused_until.is_some_and(|at| at <= now) {
            self.accept_paused_until = None;
            self.accept(Door::Plain, now);
            self.accept(Door::Tls, now);
            self.accept(Door::Irc, now);
            self.accept(Door::Web, now);
        }
    }

    /// Writes the turn's output: the replies and private lines first (small,
    /// and someone is waiting for each), then the turn's broadcasts to one
    /// slice of their readers ([`FANOUT_SLICE`]); the rest of
    /// them are written over the next turns, between which the loop reads
    /// and answers again.
    fn end_turn(&mut self) {
        self.write_flush_list();
        self.flush_this_turn();
        // The turn's broadcasts are delivered: their senders wait for the
        // readers queued so far.
        let pushed = self.io.queues.fanout_pushed;
        for (_, mark) in self.broadcasting.iter_mut().rev() {
            if *mark != u64::MAX {
                break;
            }
            *mark = pushed;
        }
        // A round to a few readers is written whole: slicing it would cost
        // more polls than a private line could gain. A larger round is
        // sliced to its end.
        if self.io.queues.fanout.len() > FANOUT_WHOLE_ROUND {
            self.slicing = true;
        }
        self.flush_fanout(if self.slicing {
            FANOUT_SLICE
        } else {
            Duration::MAX
        });
        if self.io.queues.fanout.is_empty() {
            self.slicing = false;
        }
        // Writing can drop a reader, and its going offline is news to others.
        self.flush_this_turn();
    }

    /// Delivers the gathered broadcasts, drops the doomed and writes every
    /// connection on this turn's flush list.
    fn flush_this_turn(&mut self) {
        self.io.deliver_batch();
        // Dropping a connection can queue OFFLINE notices that overflow
        // another, so loop until both lists are empty.
        while !self.io.queues.doomed.is_empty() || !self.io.queues.flush.is_empty() {
            while let Some(key) = self.io.queues.doomed.pop() {
                if self
                    .io
                    .conns
                    .get(key)
                    .is_some_and(|c| c.phase == Phase::Doomed)
                {
                    self.drop_conn(key);
                }
            }
            self.io.deliver_batch();
            self.write_flush_list();
        }
    }

    /// Writes every connection on this turn's flush list.
    fn write_flush_list(&mut self) {
        let flush = std::mem::take(&mut self.io.queues.flush);
        for &key in &flush {
            self.flush(key);
        }
        // Keep the list's allocation for the next turn.
        if self.io.queues.flush.is_empty() {
            self.io.queues.flush = flush;
            self.io.queues.flush.clear();
        }
    }

    /// Writes the readers waiting for broadcasts, oldest first, for about
    /// `budget` (the clock is read every few writes). One that was written
    /// meanwhile (a reply to it carried its broadcasts along) costs nothing
    /// here.
    fn flush_fanout(&mut self, budget: Duration) {
        let started = Instant::now();
        let mut written: u32 = 0;
        loop {
            if written % 8 == 7 && started.elapsed() >= budget {
                break;
            }
            let Some(key) = self.io.queues.fanout.pop_front() else {
                break;
            };
            self.io.queues.fanout_popped += 1;
            let Some(conn) = self.io.conns.get_mut(key) else {
                continue;
            };
            if !conn.queued_fanout {
                continue;
            }
            conn.queued_fanout = false;
            if conn.pending() > 0 {
                self.flush(key);
                written += 1;
            }
        }
    }

    /// Stops accepting and flushes what it can within [`SHUTDOWN_FLUSH`].
    fn shutdown(&mut self, events: &mut Events) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut listener) = self.irc_listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut listener) = self.tls.as_mut().and_then(|d| d.listener.take()) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut listener) = self.web.as_mut().and_then(|d| d.listener.take()) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // TLS connections say goodbye with close_notify, browsers with a
        // WebSocket close frame (so a page can say so at once), after what
        // they were still to be told.
        self.io.deliver_batch();
        for (key, conn) in self.io.conns.iter_mut() {
            if matches!(conn.transport, Transport::Tls(_) | Transport::Web(_))
                && conn.phase != Phase::Doomed
            {
                let before = conn.pending();
                conn.transport.start_close(&mut conn.out);
                self.io.queues.total_output = self.io.queues.total_output - before + conn.pending();
                self.io.queues.flush_this_turn(key, conn);
            }
        }
        self.flush_this_turn();
        self.flush_fanout(Duration::MAX);
        self.flush_this_turn();
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            let pending = self.io.conns.iter().any(|(_, c)| c.pending() > 0);
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            if self.poll.poll(events, Some(deadline - now)).is_err() {
                break;
            }
            let writable: Vec<usize> = events
                .iter()
                .filter(|e| e.is_writable())
                .map(|e| e.token().0)
                .collect();
            for key in writable {
                self.flush(key);
            }
        }
        if let Some(history) = self.io.history.take() {
            history.finish();
        }
        info!("stopped");
    }
}
