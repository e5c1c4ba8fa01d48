//! The mio event loop: the thin shell around [`Chat`].
//!
//! Like the seed's `select()` loop, one thread and one [`Poll`] hold the
//! listener and every client socket, and clients live in a [`Slab`]. Readiness
//! becomes events for the core; what the core sends is appended to each
//! connection's output buffer and written once per poll turn, so a broadcast to
//! a thousand readers costs one `write` per reader per turn, not per message.
//!
//! mio is edge-triggered: every readable socket is read until `WouldBlock`
//! (in 4096-byte chunks), except while its previous line waits on a password
//! hash: then the bytes stay in the kernel, and reading resumes when the hash is
//! done. WRITABLE interest is registered only while output is pending.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::core::auth::AuthJob;
use crate::core::chat::{Chat, ChatConfig, ConnId, Outbox};
use crate::store::accounts::{AccountFile, AuthWorker, HashParams};
use crate::wire::framing::{Frame, LineBuffer, READ_CHUNK};
use crate::wire::protocol::Reply;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// A reader this far behind is disconnected (SPEC section 5).
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How long a connection the server closed may take to read its last replies.
const LINGER: Duration = Duration::from_secs(2);

/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Bytes read from one connection per poll turn. Output is written at the end
/// of a turn, so a sender that keeps its socket full must yield, or its
/// broadcasts would pile up in every reader's buffer before any is written
/// (and other connections would wait).
const READ_BUDGET: usize = 16 * READ_CHUNK;

/// How long shutdown may spend flushing output.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// After this many bytes of buffers were freed, the next sweep asks the
/// allocator to hand free memory back to the OS.
const TRIM_AFTER: usize = 4 * 1024 * 1024;

/// Listen backlog: room for bursts of connections (mio's own is smaller).
const BACKLOG: libc::c_int = 4096;

/// How often output buffers of connections that received nothing since the
/// last sweep are released. A busy connection keeps its buffer (regrowing it
/// every turn would cost a realloc and page faults per turn); an idle one
/// goes back to holding no buffer at all.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// `None` keeps accounts in memory only.
    pub accounts: Option<PathBuf>,
    pub max_clients: usize,
    pub chat: ChatConfig,
    pub hash_params: HashParams,
    pub auth_threads: usize,
}

/// One client connection as the shell sees it.
struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    /// Distinguishes this connection from a later one on the same slab key.
    serial: u64,
    lines: LineBuffer,
    out: Vec<u8>,
    /// Bytes of `out` before this offset are already written.
    out_start: usize,
    /// Already on the list of connections to flush this turn.
    dirty: bool,
    writable_interest: bool,
    /// The peer has closed its sending side.
    peer_eof: bool,
    /// The server decided to close: no more lines are taken; output is flushed,
    /// then the write side shut down.
    closing: bool,
    /// Output overflowed: to be dropped at the end of the turn.
    doomed: bool,
    /// Used up its read budget with input left: on the list to read again.
    unread: bool,
    /// Received output since the last idle sweep.
    out_used: bool,
}

impl Connection {
    fn pending_output(&self) -> usize {
        self.out.len() - self.out_start
    }
}

/// The part of the server the core writes into: connections, the flush list
/// and the auth worker. Split from [`Server`] so the core can borrow it while
/// the server holds the core.
struct Io {
    conns: Slab<Connection>,
    /// Connections with output to flush at the end of this turn.
    dirty: Vec<ConnId>,
    /// Connections whose output overflowed, to drop at the end of this turn.
    doomed: Vec<ConnId>,
    /// Connections that used up their read budget with input left: the next
    /// poll does not wait, and they are read again.
    unread: Vec<ConnId>,
    /// Connections the core closed, with the moment they are dropped at the
    /// latest, in order.
    lingering: VecDeque<(Instant, ConnId, u64)>,
    worker: AuthWorker,
}

impl Outbox for Io {
    #[inline]
    fn send(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.doomed {
            return;
        }
        if conn.pending_output() + bytes.len() > MAX_OUTPUT {
            // Only a reader that cannot take what is already pending is
            // behind; one that reads has had no chance yet this turn. A write
            // error shows again, and is handled, when the turn flushes.
            let _ = write_pending(conn);
            if conn.pending_output() + bytes.len() > MAX_OUTPUT {
                warn!(
                    "{}: more than {MAX_OUTPUT} bytes of output pending, disconnecting a reader that stopped reading",
                    conn.peer
                );
                conn.doomed = true;
                self.doomed.push(id);
                return;
            }
        }
        conn.out.extend_from_slice(bytes);
        conn.out_used = true;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    fn close(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !conn.closing {
            conn.closing = true;
            self.lingering
                .push_back((Instant::now() + LINGER, id, conn.serial));
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    fn submit(&mut self, job: AuthJob) {
        self.worker.submit(job);
    }

    fn broadcast(&mut self, to: &[ConnId], except: ConnId, bytes: &[u8]) {
        // The same loop as the default, but with `send` inlined into it.
        for &id in to {
            if id != except {
                self.send(id, bytes);
            }
        }
    }
}

/// The running server.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    chat: Chat,
    io: Io,
    config: ServerConfig,
    next_serial: u64,
    /// Set while accepting is paused for lack of file descriptors.
    accept_paused_until: Option<Instant>,
    /// Connections are being refused for `--max-clients`: logged once.
    refusing: bool,
    /// When idle connections' output buffers are next released.
    next_sweep: Instant,
    /// Bytes of buffers freed since memory was last handed back to the OS.
    freed_since_trim: usize,
    /// Accepting failed for lack of descriptors and has not succeeded since:
    /// the warning is logged once per episode, not once per retry.
    out_of_descriptors: bool,
    scratch: Box<[u8; READ_CHUNK]>,
}

impl Server {
    /// Loads the accounts, binds the listener and starts the auth workers.
    pub fn bind(config: ServerConfig) -> Result<Self, String> {
        // First, so that a signal during start-up (loading the accounts,
        // hashing the dummy password) waits for the loop instead of killing
        // the process with a non-zero status.
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot catch signals: {e}"))?;
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
        let worker = AuthWorker::spawn(config.auth_threads, store, config.hash_params, wake)?;
        let mut listener = TcpListener::bind(config.addr)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        // Listening again on a listening socket only updates its backlog.
        // SAFETY: listen(2) on a descriptor we own; no memory is involved.
        if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
            warn!(
                "cannot raise the listen backlog: {}",
                io::Error::last_os_error()
            );
        }
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("cannot register the listener: {e}"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        Ok(Self {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            chat: Chat::new(config.chat.clone(), accounts),
            io: Io {
                conns: Slab::new(),
                dirty: Vec::new(),
                doomed: Vec::new(),
                unread: Vec::new(),
                lingering: VecDeque::new(),
                worker,
            },
            config,
            next_serial: 0,
            accept_paused_until: None,
            out_of_descriptors: false,
            refusing: false,
            next_sweep: Instant::now() + SWEEP_EVERY,
            freed_since_trim: 0,
            scratch: Box::new([0; READ_CHUNK]),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until SIGINT or SIGTERM, then flushes for a bounded moment.
    pub fn run(mut self) -> Result<(), String> {
        info!(
            "listening on {} (max {} clients, language {:?})",
            self.local_addr, self.config.max_clients, self.config.chat.lang
        );
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.io.unread.is_empty() {
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
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.finish_auth(now),
                    SIGNALS => {
                        if self.signals.pending().next().is_some() {
                            info!("signal received, shutting down");
                            self.shutdown(&mut events);
                            return Ok(());
                        }
                    }
                    Token(id) => {
                        if event.is_writable() {
                            self.flush(id);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(id, now);
                        }
                    }
                }
            }
            self.read_unread(now);
            self.on_timers(now);
            self.end_turn();
        }
    }

    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        [
            self.chat.next_deadline(),
            self.io.lingering.front().map(|&(at, _, _)| at),
            self.accept_paused_until,
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    /// Accepts until the backlog is empty.
    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let Some(listener) = &self.listener else {
            return;
        };
        // Errors that are about one connection (ECONNABORTED, ...) are
        // skipped; this many in a row means something else is wrong, and
        // retrying at once would spin.
        let mut errors_in_a_row = 0;
        loop {
            let (mut socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The backlog is empty: whatever ran short is back.
                    if self.out_of_descriptors {
                        self.out_of_descriptors = false;
                        info!("accepting again ({} open)", self.io.conns.len());
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    // The connection stays in the backlog; accepting again
                    // right away would spin, so wait a moment or until one of
                    // ours closes.
                    if !self.out_of_descriptors {
                        self.out_of_descriptors = true;
                        warn!(
                            "cannot accept: {e}; pausing accepts until descriptors free up ({} open)",
                            self.io.conns.len()
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_RETRY);
                    return;
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
                let _ = socket.write(Reply::ServerFull.line(self.config.chat.lang).as_bytes());
                let _ = socket.shutdown(Shutdown::Write);
                continue;
            }
            self.refusing = false;
            if let Err(e) = socket.set_nodelay(true) {
                debug!("{peer}: cannot set TCP_NODELAY: {e}");
            }
            let entry = self.io.conns.vacant_entry();
            let id = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut socket, Token(id), Interest::READABLE)
            {
                warn!("{peer}: cannot register: {e}");
                continue;
            }
            self.next_serial += 1;
            entry.insert(Connection {
                socket,
                peer,
                serial: self.next_serial,
                lines: LineBuffer::new(),
                out: Vec::new(),
                out_start: 0,
                dirty: false,
                writable_interest: false,
                peer_eof: false,
                closing: false,
                doomed: false,
                unread: false,
                out_used: false,
            });
            self.chat.connect(id, now);
            debug!("{peer}: connected as conn {id}");
        }
    }

    /// Reads a connection until the socket would block, feeding whole lines
    /// to the core while it is ready for them.
    fn read(&mut self, id: ConnId, now: Instant) {
        let mut budget = READ_BUDGET;
        loop {
            self.feed_lines(id, now);
            let Some(conn) = self.io.conns.get_mut(id) else {
                return;
            };
            if conn.doomed {
                return;
            }
            if conn.closing {
                self.discard_input(id);
                return;
            }
            if !self.chat.ready(id) {
                // A hash is pending; `finish_auth` resumes us.
                return;
            }
            if budget == 0 {
                if !conn.unread {
                    conn.unread = true;
                    self.io.unread.push(id);
                }
                return;
            }
            if conn.peer_eof {
                // Everything the peer sent has been answered.
                debug!("{}: closed by peer", conn.peer);
                self.chat.disconnect(id, &mut self.io);
                self.io.close(id);
                return;
            }
            match conn.socket.read(&mut self.scratch[..]) {
                Ok(0) => conn.peer_eof = true,
                Ok(n) => {
                    conn.lines.extend(&self.scratch[..n]);
                    budget = budget.saturating_sub(n);
                    if !conn.lines.telnet_replies().is_empty() {
                        // Telnet shows nothing more until its options are
                        // answered, and sends no newline after them (SPEC 1).
                        let replies = conn.lines.telnet_replies().to_vec();
                        conn.lines.clear_telnet_replies();
                        self.io.send(id, &replies);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{}: read failed: {e}", conn.peer);
                    self.drop_conn(id);
                    return;
                }
            }
        }
    }

    /// Reads again the connections that used up their budget last turn. Their
    /// sockets may still hold data, and edge-triggered readiness will not say
    /// so again.
    fn read_unread(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.io.unread) {
            if let Some(conn) = self.io.conns.get_mut(id)
                && conn.unread
            {
                conn.unread = false;
                self.read(id, now);
            }
        }
    }

    /// Hands buffered lines to the core until it must wait or none are left.
    fn feed_lines(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.io.conns.get_mut(id) else {
            return;
        };
        let peer_eof = conn.peer_eof;
        // The buffer leaves the connection while the core runs, because the
        // core writes into the connections.
        let mut lines = std::mem::take(&mut conn.lines);
        while self.chat.ready(id) {
            let frame = match lines.next_frame() {
                Some(frame) => frame,
                None if peer_eof => match lines.take_unterminated() {
                    Some(frame) => frame,
                    None => break,
                },
                None => break,
            };
            match frame {
                Frame::Line(line) => self.chat.line(id, line, now, &mut self.io),
                Frame::TooLong => self.chat.too_long(id, &mut self.io),
            }
        }
        if let Some(conn) = self.io.conns.get_mut(id) {
            conn.lines = lines;
        }
    }

    /// Reads and throws away what a closing connection still sends, so that
    /// closing it does not reset the connection before it read our last lines.
    fn discard_input(&mut self, id: ConnId) {
        let Some(conn) = self.io.conns.get_mut(id) else {
            return;
        };
        loop {
            match conn.socket.read(&mut self.scratch[..]) {
                Ok(0) => {
                    conn.peer_eof = true;
                    if conn.pending_output() == 0 {
                        self.drop_conn(id);
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
    }

    /// Writes pending output; toggles WRITABLE interest when the buffer turns
    /// empty or non-empty.
    fn flush(&mut self, id: ConnId) {
        let Some(conn) = self.io.conns.get_mut(id) else {
            return;
        };
        conn.dirty = false;
        if let Err(e) = write_pending(conn) {
            debug!("{}: write failed: {e}", conn.peer);
            self.drop_conn(id);
            return;
        }
        if conn.pending_output() > 0 {
            if !conn.writable_interest {
                conn.writable_interest = true;
                reregister(self.poll.registry(), conn, id);
            }
            return;
        }
        conn.out.clear();
        conn.out_start = 0;
        if conn.writable_interest {
            conn.writable_interest = false;
            reregister(self.poll.registry(), conn, id);
        }
        if conn.closing {
            if conn.peer_eof {
                self.drop_conn(id);
            } else {
                // Half-close, then wait (bounded) for the peer to finish.
                let _ = conn.socket.shutdown(Shutdown::Write);
                self.discard_input(id);
            }
        }
    }

    /// Removes a connection for good; its user, if any, goes offline.
    fn drop_conn(&mut self, id: ConnId) {
        if !self.io.conns.contains(id) {
            return;
        }
        self.chat.disconnect(id, &mut self.io);
        let mut conn = self.io.conns.remove(id);
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

    /// Delivers finished hash jobs and resumes the connections they held up.
    fn finish_auth(&mut self, now: Instant) {
        while let Some(done) = self.io.worker.try_result() {
            let id = done.ticket.conn;
            self.chat.auth_done(done, &mut self.io);
            if self.chat.ready(id) {
                self.read(id, now);
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        self.chat.tick(now, &mut self.io);
        while let Some(&(at, id, serial)) = self.io.lingering.front() {
            if at > now {
                break;
            }
            self.io.lingering.pop_front();
            if self.io.conns.get(id).is_some_and(|c| c.serial == serial) {
                self.drop_conn(id);
            }
        }
        if self.next_sweep <= now {
            self.next_sweep = now + SWEEP_EVERY;
            for (_, conn) in self.io.conns.iter_mut() {
                if !conn.out_used && conn.pending_output() == 0 && conn.out.capacity() > 0 {
                    self.freed_since_trim += conn.out.capacity();
                    conn.out = Vec::new();
                    conn.out_start = 0;
                }
                conn.out_used = false;
            }
            if self.freed_since_trim >= TRIM_AFTER {
                self.freed_since_trim = 0;
                release_free_memory();
            }
        }
        if self.accept_paused_until.is_some_and(|at| at <= now) {
            self.accept_paused_until = None;
            self.accept(now);
        }
    }

    /// Drops overflowed connections and writes out this turn's output.
    fn end_turn(&mut self) {
        // Dropping a connection can queue OFFLINE notices that overflow
        // another, so loop until both lists are empty.
        while !self.io.doomed.is_empty() || !self.io.dirty.is_empty() {
            while let Some(id) = self.io.doomed.pop() {
                if self.io.conns.get(id).is_some_and(|c| c.doomed) {
                    self.drop_conn(id);
                }
            }
            let dirty = std::mem::take(&mut self.io.dirty);
            for &id in &dirty {
                if self.io.conns.get(id).is_some_and(|c| !c.doomed) {
                    self.flush(id);
                }
            }
            // Keep the list's allocation for the next turn.
            if self.io.dirty.is_empty() {
                self.io.dirty = dirty;
                self.io.dirty.clear();
            }
        }
    }

    /// Stops accepting and flushes what it can within [`SHUTDOWN_FLUSH`].
    fn shutdown(&mut self, events: &mut Events) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.end_turn();
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            let pending = self.io.conns.iter().any(|(_, c)| c.pending_output() > 0);
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            if self.poll.poll(events, Some(deadline - now)).is_err() {
                break;
            }
            let writable: Vec<ConnId> = events
                .iter()
                .filter(|e| e.is_writable())
                .map(|e| e.token().0)
                .collect();
            for id in writable {
                self.flush(id);
            }
        }
        info!("stopped");
    }
}

/// Writes as much pending output as the socket takes now. `Ok` when the
/// socket would block or everything is written.
fn write_pending(conn: &mut Connection) -> io::Result<()> {
    while conn.out_start < conn.out.len() {
        match conn.socket.write(&conn.out[conn.out_start..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => conn.out_start += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Hands the allocator's free memory back to the OS. After a burst (many
/// readers far behind, up to 1 MiB each) glibc keeps the freed heap, and the
/// process would stay at its peak size long after the burst is over.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn reregister(registry: &Registry, conn: &mut Connection, id: ConnId) {
    let interest = if conn.writable_interest {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if let Err(e) = registry.reregister(&mut conn.socket, Token(id), interest) {
        debug!("{}: reregister failed: {e}", conn.peer);
    }
}

/// Errors that mean the process or system ran out of descriptors or memory.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Raises the soft descriptor limit so `max_clients` connections fit, as far
/// as the hard limit allows. Returns the limit now in force.
pub fn raise_fd_limit(max_clients: usize) -> u64 {
    // Room for the listener, the poll, the accounts file, logs and threads.
    let wanted = max_clients as u64 + 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("cannot read the file descriptor limit");
        return 0;
    }
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let target = wanted.min(limit.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if target > limit.rlim_cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit.rlim_cur = target;
    }
    if limit.rlim_cur < wanted {
        warn!(
            "file descriptor limit is {} (hard limit {}): fewer than --max-clients {} connections fit",
            limit.rlim_cur, limit.rlim_max, max_clients
        );
    }
    limit.rlim_cur
}
