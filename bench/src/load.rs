//! The load generator: one thread, one mio `Poll`, many client sockets with
//! `TCP_NODELAY`, speaking our protocol, the floor's (raw lines) or IRC, or
//! our protocol inside a WebSocket (the browser door).
//!
//! Every benchmark message carries its send time on one monotonic clock (ns
//! since the generator started), the sender, a sequence number and a phase:
//! `^K<ts>^<seq>^<from>^<phase>^<pad>`, where K is `T` (fan-out, or an
//! honest user's private line in the flood scenario), `S` (a barrier or a
//! timed broadcast), `P` (ping), `Q` (pong) or `F` (a flooder's line, only
//! counted). Receivers find the
//! payload at the first `^`, whatever the server put in front of it
//! (`[u3] `, `:u3!~u3@127.0.0.1 PRIVMSG #bench :`, nothing).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The IRC channel every fan-out client joins.
pub const CHANNEL: &str = "#bench";
/// The server-mask target that reaches every user of the ngircd server.
pub const SERVER_MASK: &str = "$bench.irc";
const PASSWORD: &str = "benchpw1";
/// Padding so a message is about 64 bytes on the wire.
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxx";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Our protocol: regist, login, a plain line is a broadcast.
    Chat,
    /// The floor: no login, every line goes to every other connection.
    Floor,
    /// IRC: NICK/USER, JOIN one channel, PRIVMSG.
    Irc,
    /// Our IRC door: NICK/USER, then NickServ REGISTER and IDENTIFY (a
    /// login joins `#chat`, the one channel), PRIVMSG.
    IrcDoor,
    /// Our protocol through the browser door: an HTTP upgrade, then each
    /// line one WebSocket text message (masked, as a browser sends them).
    Ws,
}

/// The upgrade request a browser would send (RFC 6455's sample key).
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Appends each `\n`-terminated line of `bytes` as one masked text frame
/// without its `\n`. The mask is fixed: the server unmasks any.
fn push_ws_frames(out: &mut Vec<u8>, bytes: &[u8]) {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x09];
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        out.push(0x81);
        match line.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n.min(65535) as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(line.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    }
}

/// Splits the start of `buf` into the next server frame: (opcode, payload
/// range, bytes used), or `None` until the whole frame is there.
fn next_ws_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let (len, at) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    (buf.len() >= at + len).then_some((b0 & 0x0f, at..at + len, at + len))
}

/// Our IRC door's one channel: everyone logged in.
pub const DOOR_CHANNEL: &str = "#chat";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Regist,
    Login,
    Waiting,
    Ready,
    Failed,
}

struct Client {
    sock: TcpStream,
    name: String,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    connected: bool,
    join: bool,
    state: State,
    /// IRC: what to send once the server has said welcome (001): InspIRCd
    /// refuses everything but registration before it.
    after_welcome: Vec<u8>,
    /// The client side of TLS when the generator speaks through the TLS door.
    tls: Option<Box<rustls::ClientConnection>>,
    /// Ws: the server's `101` head has been read.
    upgraded: bool,
}

/// Where a message goes.
#[derive(Clone, Copy, Debug)]
pub enum Dest {
    /// Everyone else: a chat line, a floor line, a PRIVMSG to the channel.
    All,
    /// Every user of the server (IRC: the server mask, as an operator).
    Everyone,
    /// One client, privately (`send-to`, PRIVMSG nick).
    To(usize),
}

/// Clients being opened and logged in, a window at a time.
pub struct Opener {
    prefix: String,
    total: usize,
    opened: usize,
    first: usize,
    opers: usize,
    join: bool,
    pub window: usize,
    ready_at_start: usize,
    pub started: Instant,
}

/// How far [`Gen::open_bounded`] got.
#[derive(Debug)]
pub struct Opened {
    /// Clients of this batch that are in.
    pub ready: usize,
    pub started: Instant,
    pub elapsed: Duration,
    /// Why it stopped before all were in.
    pub stopped: Option<Stop>,
}

#[derive(Debug)]
pub enum Stop {
    TimeLimit,
    /// A client was refused or closed, or a socket call failed.
    Error(String),
}

/// Per-phase delivery bookkeeping.
#[derive(Default)]
struct Track {
    phase: u32,
    /// seq -> deliveries still expected.
    inflight: HashMap<u64, u32>,
    /// Per sender (client index < senders): messages not yet fully delivered.
    outstanding: Vec<u32>,
    lat_ns: Vec<u64>,
    received: u64,
    stray: u64,
    last_recv: Option<Instant>,
    sync_count: usize,
    sync_last: Option<Instant>,
    rtt_ns: Vec<u64>,
    ping_waiting: Option<Instant>,
    ping_timeouts: u64,
    /// Flooder's lines (`F`) received by anyone in this phase.
    flood_received: u64,
    /// Bytes of the last fan-out line delivered, its newline included: the
    /// size of a delivery as the server wrote it.
    line_bytes: usize,
}

/// What one fan-out phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub server_cpu_ns: u64,
    pub server_ticks_ns: u64,
    pub gen_cpu_ns: u64,
    pub wall_ns: u64,
    /// Bytes of one delivered line, its newline included.
    pub line_bytes: usize,
}

/// What a fixed fan-out workload (`Gen::fanout_count`) delivered.
#[derive(Debug, Clone)]
pub struct CountResult {
    pub sent: u64,
    /// Copies the clients received: the deliveries.
    pub received: u64,
    pub expected: u64,
    /// Copies still missing when the time limit passed.
    pub lost: u64,
    /// Lines of an earlier phase.
    pub stray: u64,
    pub wall: Duration,
}

/// What one flood phase measured (`Gen::flood`).
#[derive(Debug, Clone)]
pub struct FloodResult {
    /// Private lines the honest users sent, and how many arrived.
    pub sent: u64,
    pub received: u64,
    /// Honest lines still missing after the drain.
    pub lost: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Honest users the server closed during the phase and the drain.
    pub disconnected: usize,
    /// Lines the flooder handed to its socket.
    pub flood_sent: u64,
    /// The flooder's lines that reached honest users, all together.
    pub flood_received: u64,
    /// Whether the server closed the flooder.
    pub flooder_closed: bool,
    pub server_cpu_ns: u64,
    pub wall_ns: u64,
}

/// How a fan-out phase offers load.
#[derive(Clone, Copy, Debug)]
pub enum Offer {
    /// Deliveries per second, spread over the senders in turn.
    Rate(f64),
    /// Each sender keeps this many messages not yet fully delivered.
    Closed(u32),
}

pub struct Gen {
    proto: Proto,
    addr: SocketAddr,
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    scratch: Vec<u8>,
    line: Vec<u8>,
    t0: Instant,
    retries: Vec<(Instant, usize)>,
    ready: usize,
    failed: usize,
    /// IRC `JOIN` lines the clients have read, all together: the
    /// connections scenario's check that a server announced every join to
    /// everyone already in the channel.
    joins_seen: u64,
    next_seq: u64,
    track: Track,
    /// Logins in progress at once, if not the protocol's usual window.
    open_window: Option<usize>,
    /// Set by `crate::tls::use_tls`: every client opened after it speaks TLS.
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Parses the leading decimal digits of `s`; returns the number and the rest.
fn num(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..end] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((v, &s[end..]))
}

/// A parsed payload: kind, ts, seq, from, phase.
fn parse_payload(line: &[u8]) -> Option<(u8, u64, u64, usize, u32)> {
    let at = line.iter().position(|&b| b == b'^')?;
    let rest = line.get(at + 1..)?;
    let kind = *rest.first()?;
    let (ts, rest) = num(rest.get(1..)?)?;
    let (seq, rest) = num(rest.strip_prefix(b"^")?)?;
    let (from, rest) = num(rest.strip_prefix(b"^")?)?;
    let (phase, _) = num(rest.strip_prefix(b"^")?)?;
    Some((kind, ts, seq, from as usize, phase as u32))
}

impl Gen {
    pub fn new(proto: Proto, addr: SocketAddr) -> Result<Self, String> {
        Ok(Self {
            proto,
            addr,
            poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            scratch: vec![0; 256 * 1024],
            line: Vec::with_capacity(256),
            t0: Instant::now(),
            retries: Vec::new(),
            ready: 0,
            failed: 0,
            joins_seen: 0,
            next_seq: 0,
            track: Track::default(),
            open_window: None,
            tls: None,
        })
    }

    /// The TLS version and cipher suite the first client negotiated, for the
    /// record (ours picks AES-128-GCM; ngircd's GnuTLS may pick otherwise).
    pub fn tls_suite(&self) -> Option<String> {
        let conn = self.clients.first()?.tls.as_ref()?;
        Some(format!(
            "{:?} {:?}",
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite()
        ))
    }

    /// Clients with output the generator has not handed to the kernel yet
    /// (queued lines, or TLS records rustls still holds), and those bytes:
    /// tells a stalled phase's generator side from its server side.
    pub fn unsent(&self) -> (usize, usize) {
        let mut out = (0, 0);
        for c in &self.clients {
            let tls_waiting = c.tls.as_ref().is_some_and(|t| t.wants_write());
            if !c.wbuf.is_empty() || tls_waiting {
                out.0 += 1;
                out.1 += c.wbuf.len();
            }
        }
        out
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Clients logged in (IRC: in the channel) and not closed since.
    pub fn ready_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.state == State::Ready)
            .count()
    }

    /// Clients the server closed (before or after they were in).
    pub fn closed_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.state == State::Failed)
            .count()
    }

    /// IRC `JOIN` lines read so far, by all clients together.
    pub fn joins_seen(&self) -> u64 {
        self.joins_seen
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Sets how many logins may be in progress at once from now on.
    pub fn set_open_window(&mut self, window: usize) {
        self.open_window = Some(window.max(1));
    }

    /// Starts opening `total` clients named `prefix0..`; the first `opers`
    /// of them become IRC operators with relaxed flood protection; IRC
    /// clients join the channel when `join`.
    pub fn opener(&self, prefix: &str, total: usize, opers: usize, join: bool) -> Opener {
        Opener {
            prefix: prefix.to_string(),
            total,
            opened: 0,
            first: self.clients.len(),
            opers,
            join,
            // ngircd listens with a backlog of 10: more connections at once
            // overflow it and wait for SYN retransmits (1 s, 3 s, ...).
            window: self
                .open_window
                .unwrap_or(if self.proto == Proto::Irc { 8 } else { 200 }),
            ready_at_start: self.ready,
            started: Instant::now(),
        }
    }

    /// Opens more clients while fewer than the window are still logging in.
    /// Returns true when all are ready.
    pub fn open_step(&mut self, op: &mut Opener) -> Result<bool, String> {
        let done = self.ready - op.ready_at_start;
        while op.opened < op.total && op.opened - done < op.window {
            let i = op.opened;
            let sock = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
            let name = format!("{}{}", op.prefix, i);
            let mut wbuf = Vec::new();
            let mut after_welcome = Vec::new();
            let state = match self.proto {
                Proto::Chat => {
                    wbuf.extend_from_slice(format!("regist {name} {PASSWORD}\n").as_bytes());
                    State::Regist
                }
                Proto::Ws => {
                    wbuf.extend_from_slice(WS_UPGRADE);
                    push_ws_frames(&mut wbuf, format!("regist {name} {PASSWORD}\n").as_bytes());
                    State::Regist
                }
                // The floor greets each connection it accepts.
                Proto::Floor => State::Waiting,
                Proto::IrcDoor => {
                    wbuf.extend_from_slice(
                        format!("NICK {name}\r\nUSER {name} 0 * :bench\r\n").as_bytes(),
                    );
                    State::Waiting
                }
                Proto::Irc => {
                    wbuf.extend_from_slice(
                        format!("NICK {name}\r\nUSER {name} 0 * :bench\r\n").as_bytes(),
                    );
                    if i < op.opers {
                        after_welcome.extend_from_slice(
                            format!("OPER bench bench\r\nMODE {name} +F\r\n").as_bytes(),
                        );
                    }
                    if op.join {
                        after_welcome.extend_from_slice(format!("JOIN {CHANNEL}\r\n").as_bytes());
                    }
                    State::Waiting
                }
            };
            let tls = match &self.tls {
                Some(config) => Some(crate::tls::connection(config)?),
                None => None,
            };
            let idx = self.clients.len();
            let mut client = Client {
                sock,
                name,
                rbuf: Vec::new(),
                wbuf,
                connected: false,
                join: op.join,
                state,
                after_welcome,
                tls,
                upgraded: false,
            };
            self.poll
                .registry()
                .register(
                    &mut client.sock,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("register: {e}"))?;
            self.clients.push(client);
            op.opened += 1;
        }
        if self.failed > 0 {
            return Err(format!("{} clients failed to log in", self.failed));
        }
        Ok(self.ready - op.ready_at_start >= op.total)
    }

    /// Opens and logs in `total` clients, within `limit`.
    pub fn open_all(
        &mut self,
        prefix: &str,
        total: usize,
        opers: usize,
        join: bool,
        limit: Duration,
    ) -> Result<Duration, String> {
        let o = self.open_bounded(prefix, total, opers, join, limit);
        match o.stopped {
            None => Ok(o.elapsed),
            Some(Stop::TimeLimit) => Err(format!(
                "only {} of {total} clients logged in within {limit:?}",
                o.ready
            )),
            Some(Stop::Error(e)) => Err(e),
        }
    }

    /// Opens and logs in `total` clients until all are in, `limit` has
    /// passed, or the server refused or closed one: never fails, says how
    /// far it got (the connections scenario reports a server that could not
    /// finish as what it reached).
    pub fn open_bounded(
        &mut self,
        prefix: &str,
        total: usize,
        opers: usize,
        join: bool,
        limit: Duration,
    ) -> Opened {
        let mut op = self.opener(prefix, total, opers, join);
        let first = op.first;
        let stopped = loop {
            match self.open_step(&mut op) {
                Ok(true) => break None,
                Ok(false) => {}
                Err(e) => break Some(Stop::Error(e)),
            }
            if op.started.elapsed() > limit {
                break Some(Stop::TimeLimit);
            }
            if let Err(e) = self.pump(Some(Duration::from_millis(5))) {
                break Some(Stop::Error(e));
            }
        };
        Opened {
            ready: self.clients[first..]
                .iter()
                .filter(|c| c.state == State::Ready)
                .count(),
            started: op.started,
            elapsed: op.started.elapsed(),
            stopped,
        }
    }

    /// One poll turn: connects, reads, answers, retries.
    pub fn pump(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout)
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(format!("poll: {e}"));
        }
        let tokens: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_writable(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                )
            })
            .collect();
        for (idx, writable, readable) in tokens {
            if writable {
                self.on_writable(idx)?;
            }
            if readable {
                self.on_readable(idx)?;
            }
        }
        if !self.retries.is_empty() {
            let now = Instant::now();
            let due: Vec<usize> = self
                .retries
                .iter()
                .filter(|(at, _)| *at <= now)
                .map(|&(_, i)| i)
                .collect();
            self.retries.retain(|(at, _)| *at > now);
            for i in due {
                self.auth_command(i);
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, idx: usize) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(idx) else {
            return Ok(());
        };
        if !c.connected {
            match c.sock.peer_addr() {
                Ok(_) => c.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
                Err(e) => {
                    return Err(format!(
                        "client {} cannot connect to {}: {e}",
                        c.name, self.addr
                    ));
                }
            }
        }
        self.flush(idx);
        Ok(())
    }

    fn flush(&mut self, idx: usize) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if !c.connected {
            return;
        }
        if let Some(tls) = c.tls.as_mut() {
            crate::tls::flush(tls, &mut c.sock, &mut c.wbuf);
            return;
        }
        while !c.wbuf.is_empty() {
            match c.sock.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Queues bytes for a client and writes what the socket takes now.
    fn send_raw(&mut self, idx: usize, bytes: &[u8]) {
        if let Some(c) = self.clients.get_mut(idx) {
            if self.proto == Proto::Ws {
                push_ws_frames(&mut c.wbuf, bytes);
            } else {
                c.wbuf.extend_from_slice(bytes);
            }
            self.flush(idx);
        }
    }

    fn on_readable(&mut self, idx: usize) -> Result<(), String> {
        let Some(c) = self.clients.get_mut(idx) else {
            return Ok(());
        };
        let mut closed = false;
        if let Some(tls) = c.tls.as_mut() {
            closed = crate::tls::read(tls, &mut c.sock, &mut self.scratch, &mut c.rbuf, &c.name);
            // Handshake replies and plaintext held back until it finished.
            crate::tls::flush(tls, &mut c.sock, &mut c.wbuf);
        }
        while c.tls.is_none() {
            match c.sock.read(&mut self.scratch) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => c.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut rbuf = std::mem::take(&mut c.rbuf);
        let mut start = 0;
        let now = Instant::now();
        if self.proto == Proto::Ws {
            if !c.upgraded {
                match rbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) if rbuf.starts_with(b"HTTP/1.1 101") => {
                        c.upgraded = true;
                        start = end + 4;
                    }
                    Some(_) => {
                        eprintln!(
                            "chat-bench: {}: upgrade refused: {}",
                            c.name,
                            String::from_utf8_lossy(&rbuf[..rbuf.len().min(80)])
                        );
                        closed = true;
                        start = rbuf.len();
                    }
                    None => {}
                }
            }
            // Each text message is one line.
            while let Some((opcode, payload, used)) = next_ws_frame(&rbuf[start..]) {
                let at = start;
                start += used;
                match opcode {
                    1 => self.on_line(idx, &rbuf[at + payload.start..at + payload.end], now),
                    8 => closed = true,
                    _ => {}
                }
            }
        }
        while self.proto != Proto::Ws
            && let Some(nl) = rbuf[start..].iter().position(|&b| b == b'\n')
        {
            let end = start + nl;
            let line = &rbuf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.on_line(idx, line, now);
            start = end + 1;
        }
        rbuf.drain(..start);
        if rbuf.capacity() > 64 * 1024 {
            rbuf.shrink_to(4096);
        }
        if let Some(c) = self.clients.get_mut(idx) {
            c.rbuf = rbuf;
            if closed && c.state != State::Failed {
                if c.state != State::Ready {
                    self.failed += 1;
                }
                c.state = State::Failed;
                eprintln!("chat-bench: client {} closed by the server", c.name);
            }
        }
        Ok(())
    }

    fn on_line(&mut self, idx: usize, line: &[u8], now: Instant) {
        if let Some((kind, ts, seq, from, phase)) = parse_payload(line) {
            if kind == b'T' {
                self.track.line_bytes = line.len() + 1;
            }
            let lat = (now.duration_since(self.t0).as_nanos() as u64).saturating_sub(ts);
            self.on_payload(idx, kind, lat, ts, seq, from, phase, now);
            return;
        }
        if matches!(self.proto, Proto::Irc | Proto::IrcDoor) {
            // `:nick!user@host JOIN #channel`: counted, and of no other
            // use to the generator (10 000 joins to one channel are 50
            // million of them).
            let mut words = line.splitn(3, |&b| b == b' ');
            if words.nth(1) == Some(b"JOIN") {
                self.joins_seen += 1;
                return;
            }
        }
        match self.proto {
            Proto::Chat | Proto::Ws => self.on_chat_line(idx, line),
            Proto::Irc => self.on_irc_line(idx, line),
            Proto::IrcDoor => self.on_door_line(idx, line),
            Proto::Floor => {
                if let Some(c) = self.clients.get_mut(idx)
                    && c.state != State::Ready
                {
                    c.state = State::Ready;
                    self.ready += 1;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_payload(
        &mut self,
        idx: usize,
        kind: u8,
        lat: u64,
        ts: u64,
        seq: u64,
        from: usize,
        phase: u32,
        now: Instant,
    ) {
        if from == idx && kind != b'Q' {
            // IRC's server mask reaches the sender too.
            return;
        }
        let t = &mut self.track;
        match kind {
            b'T' => {
                if phase != t.phase {
                    t.stray += 1;
                    return;
                }
                t.received += 1;
                t.lat_ns.push(lat);
                t.last_recv = Some(now);
                if let Some(left) = t.inflight.get_mut(&seq) {
                    *left -= 1;
                    if *left == 0 {
                        t.inflight.remove(&seq);
                        if let Some(o) = t.outstanding.get_mut(from) {
                            *o = o.saturating_sub(1);
                        }
                    }
                }
            }
            b'S' if phase == t.phase => {
                t.sync_count += 1;
                t.sync_last = Some(now);
            }
            b'P' => {
                // Answer a ping privately with the same timestamp.
                self.send_msg(idx, Dest::To(from), b'Q', ts, seq, phase);
            }
            b'F' => t.flood_received += 1,
            b'Q' if phase == t.phase && t.ping_waiting.is_some() => {
                t.rtt_ns.push(lat);
                t.ping_waiting = None;
            }
            _ => {}
        }
    }

    fn on_chat_line(&mut self, idx: usize, line: &[u8]) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        match (c.state, line) {
            (State::Regist, b"Anda berhasil terdaftar" | b"Username telah dipakai") => {
                c.state = State::Login;
                self.auth_command(idx);
            }
            (State::Login, b"Login sukses") => {
                c.state = State::Ready;
                self.ready += 1;
            }
            (State::Regist | State::Login, b"Server sibuk, coba lagi nanti") => {
                self.retries
                    .push((Instant::now() + Duration::from_millis(20), idx));
            }
            (
                State::Regist | State::Login,
                b"Username atau Password anda Salah" | b"Server penuh, coba lagi nanti",
            ) => {
                eprintln!("chat-bench: {}: {}", c.name, String::from_utf8_lossy(line));
                c.state = State::Failed;
                self.failed += 1;
            }
            _ => {}
        }
    }

    /// Sends (again) the command of a client's login step.
    fn auth_command(&mut self, idx: usize) {
        let Some(c) = self.clients.get(idx) else {
            return;
        };
        let cmd = match c.state {
            State::Regist => format!("regist {} {PASSWORD}\n", c.name),
            State::Login => format!("login {} {PASSWORD}\n", c.name),
            _ => return,
        };
        let cmd = if self.proto == Proto::IrcDoor {
            match c.state {
                State::Regist => format!("PRIVMSG NickServ :REGISTER {PASSWORD}\r\n"),
                _ => format!("PRIVMSG NickServ :IDENTIFY {PASSWORD}\r\n"),
            }
        } else {
            cmd
        };
        self.send_raw(idx, cmd.as_bytes());
    }

    /// A line from our IRC door while logging in: the welcome (422) starts
    /// the registration with NickServ, its answer the login, and the names
    /// of `#chat` (366) end it.
    fn on_door_line(&mut self, idx: usize, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"PING") {
            let mut pong = b"PONG".to_vec();
            pong.extend_from_slice(rest);
            pong.extend_from_slice(b"\r\n");
            self.send_raw(idx, &pong);
            return;
        }
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        let code = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        let says = |text: &[u8]| line.ends_with(text);
        match c.state {
            State::Waiting if code == b"422" => {
                c.state = State::Regist;
                self.auth_command(idx);
            }
            State::Regist
                if says(b":Anda berhasil terdaftar") || says(b":Username telah dipakai") =>
            {
                c.state = State::Login;
                self.auth_command(idx);
            }
            State::Login if code == b"366" => {
                c.state = State::Ready;
                self.ready += 1;
            }
            State::Regist | State::Login if says(b":Server sibuk, coba lagi nanti") => {
                self.retries
                    .push((Instant::now() + Duration::from_millis(20), idx));
            }
            State::Waiting | State::Regist | State::Login
                if code == b"464"
                    || says(b":Username atau Password anda Salah")
                    || line.starts_with(b"ERROR") =>
            {
                eprintln!("chat-bench: {}: {}", c.name, String::from_utf8_lossy(line));
                c.state = State::Failed;
                self.failed += 1;
            }
            _ => {}
        }
    }

    fn on_irc_line(&mut self, idx: usize, line: &[u8]) {
        if let Some(rest) = line.strip_prefix(b"PING") {
            let mut pong = b"PONG".to_vec();
            pong.extend_from_slice(rest);
            pong.extend_from_slice(b"\r\n");
            self.send_raw(idx, &pong);
            return;
        }
        let code = line
            .split(|&b| b == b' ')
            .nth(1)
            .unwrap_or_default()
            .to_vec();
        if code == b"001" {
            let after = self
                .clients
                .get_mut(idx)
                .map(|c| std::mem::take(&mut c.after_welcome))
                .unwrap_or_default();
            if !after.is_empty() {
                self.send_raw(idx, &after);
            }
        }
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if c.state != State::Waiting {
            return;
        }
        let ready = match code.as_slice() {
            b"366" => c.join,
            b"376" | b"422" => !c.join,
            b"433" | b"432" | b"464" | b"491" => {
                eprintln!("chat-bench: {}: {}", c.name, String::from_utf8_lossy(line));
                c.state = State::Failed;
                self.failed += 1;
                false
            }
            _ => {
                line.starts_with(b"ERROR") && {
                    c.state = State::Failed;
                    self.failed += 1;
                    false
                }
            }
        };
        if ready {
            c.state = State::Ready;
            self.ready += 1;
        }
    }

    /// Formats and sends one benchmark message.
    fn send_msg(&mut self, from: usize, dest: Dest, kind: u8, ts: u64, seq: u64, phase: u32) {
        self.queue_msg(from, dest, kind, ts, seq, phase);
        self.flush(from);
    }

    /// Formats one benchmark message onto the end of the sender's output
    /// buffer, without writing it yet.
    fn queue_msg(&mut self, from: usize, dest: Dest, kind: u8, ts: u64, seq: u64, phase: u32) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let to_name =
            |g: &Self, i: usize| g.clients.get(i).map(|c| c.name.clone()).unwrap_or_default();
        match (self.proto, dest) {
            (Proto::Chat | Proto::Ws, Dest::To(i)) => {
                line.extend_from_slice(b"send-to ");
                line.extend_from_slice(to_name(self, i).as_bytes());
                line.push(b' ');
            }
            (Proto::Irc, Dest::To(i)) => {
                line.extend_from_slice(b"PRIVMSG ");
                line.extend_from_slice(to_name(self, i).as_bytes());
                line.extend_from_slice(b" :");
            }
            (Proto::Irc, Dest::All) => {
                line.extend_from_slice(format!("PRIVMSG {CHANNEL} :").as_bytes());
            }
            (Proto::Irc, Dest::Everyone) => {
                line.extend_from_slice(format!("PRIVMSG {SERVER_MASK} :").as_bytes());
            }
            (Proto::IrcDoor, Dest::To(i)) => {
                line.extend_from_slice(b"PRIVMSG ");
                line.extend_from_slice(to_name(self, i).as_bytes());
                line.extend_from_slice(b" :");
            }
            // Everyone logged in is in the one channel.
            (Proto::IrcDoor, Dest::All | Dest::Everyone) => {
                line.extend_from_slice(format!("PRIVMSG {DOOR_CHANNEL} :").as_bytes());
            }
            _ => {}
        }
        let _ = write!(line, "^{}{ts}^{seq}^{from}^{phase}^{PAD}", char::from(kind));
        line.extend_from_slice(if matches!(self.proto, Proto::Irc | Proto::IrcDoor) {
            b"\r\n"
        } else {
            b"\n"
        });
        if let Some(c) = self.clients.get_mut(from) {
            if self.proto == Proto::Ws {
                push_ws_frames(&mut c.wbuf, &line);
            } else {
                c.wbuf.extend_from_slice(&line);
            }
        }
        self.line = line;
    }

    fn new_phase(&mut self) -> u32 {
        let t = &mut self.track;
        t.phase += 1;
        t.inflight.clear();
        t.lat_ns.clear();
        t.received = 0;
        t.stray = 0;
        t.last_recv = None;
        t.sync_count = 0;
        t.sync_last = None;
        t.rtt_ns.clear();
        t.ping_waiting = None;
        t.ping_timeouts = 0;
        t.flood_received = 0;
        t.phase
    }

    /// Client `from` sends one message to `dest`; waits until `expect`
    /// others have it, within `limit`. Returns the time until the last one.
    pub fn broadcast_time(
        &mut self,
        from: usize,
        dest: Dest,
        expect: usize,
        limit: Duration,
    ) -> Result<Duration, String> {
        let phase = self.new_phase();
        let start = Instant::now();
        let ts = self.now_ns();
        self.send_msg(from, dest, b'S', ts, 0, phase);
        while self.track.sync_count < expect {
            if start.elapsed() > limit {
                return Err(format!(
                    "a broadcast reached {} of {expect} clients within {limit:?}",
                    self.track.sync_count
                ));
            }
            self.pump(Some(Duration::from_millis(5)))?;
        }
        Ok(self
            .track
            .sync_last
            .map_or(Duration::ZERO, |t| t.duration_since(start)))
    }

    /// Pumps for a while, answering what comes (pings, PINGs).
    pub fn idle(&mut self, d: Duration) -> Result<(), String> {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.pump(Some(end - now))?;
        }
    }

    /// One fan-out phase: senders `0..senders` offer load for `dur`, every
    /// message goes to `recipients` others; then up to `drain` to collect.
    pub fn fanout(
        &mut self,
        senders: usize,
        recipients: u32,
        offer: Offer,
        dur: Duration,
        drain: Duration,
        server_pid: u32,
    ) -> Result<PhaseResult, String> {
        let phase = self.new_phase();
        self.track.outstanding = vec![0; senders];
        let cpu0 = crate::sys::process_cpu_ns(server_pid);
        let ticks0 = crate::sys::process_ticks_ns(server_pid);
        let gen0 = crate::sys::self_cpu_ns();
        let start = Instant::now();
        let end = start + dur;
        let mut next_at = start;
        let mut k: u64 = 0;
        let mut sent: u64 = 0;
        let interval = match offer {
            Offer::Rate(r) => Duration::from_secs_f64(f64::from(recipients) / r),
            Offer::Closed(_) => Duration::ZERO,
        };
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let mut timeout = end - now;
            match offer {
                Offer::Rate(_) => {
                    // Bounded backlog: a server that cannot keep up loses
                    // messages rather than growing the generator without end.
                    while next_at <= now && self.track.inflight.len() < 200_000 {
                        let from = (k % senders as u64) as usize;
                        self.send_fanout(from, recipients, phase);
                        k += 1;
                        sent += 1;
                        next_at += interval;
                    }
                    if next_at > now {
                        timeout = timeout.min(next_at - now);
                    } else {
                        timeout = Duration::from_millis(1);
                    }
                }
                Offer::Closed(window) => {
                    // A sender's whole burst (the slots its window freed
                    // this turn) goes in one write. One write per line made
                    // the generator, not the server, the limit: it spent
                    // its CPU on the writes (and, over TLS, on a record per
                    // line), and the server woke for the first line of each
                    // burst, so its rounds were cut short.
                    for from in 0..senders {
                        let mut queued = false;
                        while self.track.outstanding[from] < window {
                            self.queue_fanout(from, recipients, phase);
                            sent += 1;
                            queued = true;
                        }
                        if queued {
                            self.flush(from);
                        }
                    }
                }
            }
            self.pump(Some(timeout))?;
        }
        let drain_end = Instant::now() + drain;
        while !self.track.inflight.is_empty() {
            let now = Instant::now();
            if now >= drain_end {
                break;
            }
            self.pump(Some((drain_end - now).min(Duration::from_millis(10))))?;
        }
        let cpu = crate::sys::process_cpu_ns(server_pid).saturating_sub(cpu0);
        let ticks = crate::sys::process_ticks_ns(server_pid).saturating_sub(ticks0);
        let gen_cpu = crate::sys::self_cpu_ns().saturating_sub(gen0);
        let t = &mut self.track;
        let lost: u64 = t.inflight.values().map(|&v| u64::from(v)).sum();
        let wall = t
            .last_recv
            .map_or(dur, |l| l.duration_since(start).max(dur));
        t.lat_ns.sort_unstable();
        Ok(PhaseResult {
            sent,
            received: t.received,
            lost,
            deliveries_per_s: t.received as f64 / wall.as_secs_f64(),
            p50_ms: ms(percentile(&t.lat_ns, 50.0)),
            p99_ms: ms(percentile(&t.lat_ns, 99.0)),
            max_ms: ms(t.lat_ns.last().copied().unwrap_or(0)),
            server_cpu_ns: cpu,
            server_ticks_ns: ticks,
            gen_cpu_ns: gen_cpu,
            wall_ns: wall.as_nanos() as u64,
            line_bytes: t.line_bytes,
        })
    }

    /// A fixed workload: senders `0..senders` send `total` messages in all,
    /// in turn, each keeping at most `window` not yet delivered to all
    /// `recipients` others (a closed loop: the server stays busy and nothing
    /// is dropped for being behind); then waits until every copy arrived or
    /// `limit` passed. For instruction counts (`chat-bench drive`).
    pub fn fanout_count(
        &mut self,
        senders: usize,
        recipients: u32,
        total: u64,
        window: u32,
        limit: Duration,
    ) -> Result<CountResult, String> {
        let phase = self.new_phase();
        self.track.outstanding = vec![0; senders];
        let start = Instant::now();
        let mut sent: u64 = 0;
        loop {
            let mut progress = true;
            while sent < total && progress {
                progress = false;
                for from in 0..senders {
                    if sent < total && self.track.outstanding[from] < window {
                        self.send_fanout(from, recipients, phase);
                        sent += 1;
                        progress = true;
                    }
                }
            }
            if sent >= total && self.track.inflight.is_empty() {
                break;
            }
            if start.elapsed() > limit {
                break;
            }
            self.pump(Some(Duration::from_millis(10)))?;
        }
        let t = &self.track;
        Ok(CountResult {
            sent,
            received: t.received,
            expected: sent * u64::from(recipients),
            lost: t.inflight.values().map(|&v| u64::from(v)).sum(),
            stray: t.stray,
            wall: start.elapsed(),
        })
    }

    /// The flood scenario's phase: clients `0..honest` (the honest users)
    /// each send one private line every `interval` to another honest user,
    /// spread evenly in time, for `dur`; meanwhile client `flooder`, if any,
    /// broadcasts `flooder_rate` lines a second, or (`None`) as fast as its
    /// socket takes them (256 more lines
    /// only once the previous ones are all in the kernel, at most 4 times a
    /// turn, so neither its buffer nor a turn grows without bound). Then up to
    /// `drain` for the honest lines still under way. Latency is one-way, on
    /// the generator's one clock.
    #[allow(clippy::too_many_arguments)]
    pub fn flood(
        &mut self,
        honest: usize,
        flooder: Option<usize>,
        flooder_rate: Option<f64>,
        interval: Duration,
        dur: Duration,
        drain: Duration,
        server_pid: u32,
    ) -> Result<FloodResult, String> {
        if honest < 2 || honest > self.clients.len() {
            return Err(format!(
                "the flood scenario needs 2 to {} honest users, not {honest}",
                self.clients.len()
            ));
        }
        let phase = self.new_phase();
        self.track.outstanding.clear();
        let failed_before = self.clients[..honest.min(self.clients.len())]
            .iter()
            .filter(|c| c.state == State::Failed)
            .count();
        let cpu0 = crate::sys::process_cpu_ns(server_pid);
        let start = Instant::now();
        let end = start + dur;
        let step = interval.div_f64(honest as f64);
        let mut next_at = start;
        let mut k: u64 = 0;
        let mut sent: u64 = 0;
        let mut flood_sent: u64 = 0;
        let mut flood_seq: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            while next_at <= now {
                let from = (k % honest as u64) as usize;
                // A fixed pseudo-random peer other than the sender.
                let hop = 1 + (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % (honest as u64 - 1);
                let to = ((from as u64 + hop) % honest as u64) as usize;
                k += 1;
                next_at += step;
                if self.clients[from].state == State::Failed
                    || self.clients[to].state == State::Failed
                {
                    continue;
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                self.track.inflight.insert(seq, 1);
                let ts = self.now_ns();
                self.send_msg(from, Dest::To(to), b'T', ts, seq, phase);
                sent += 1;
            }
            if let (Some(f), Some(rate)) = (flooder, flooder_rate) {
                // Steady: one broadcast every 1/rate s, no more.
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while flood_seq < due {
                    flood_seq += 1;
                    let ts = self.now_ns();
                    self.send_msg(f, Dest::All, b'F', ts, flood_seq, phase);
                    flood_sent += 1;
                }
            } else if let Some(f) = flooder {
                // 256 lines (about 16 KiB) per write: a flooder fills its
                // socket in big writes, not one small segment per line.
                let mut turn = 0;
                while turn < 4
                    && self.clients.get(f).is_some_and(|c| {
                        c.connected && c.wbuf.is_empty() && c.state == State::Ready
                    })
                {
                    let ts = self.now_ns();
                    for _ in 0..256 {
                        flood_seq += 1;
                        self.queue_msg(f, Dest::All, b'F', ts, flood_seq, phase);
                    }
                    self.flush(f);
                    flood_sent += 256;
                    turn += 1;
                }
            }
            let wait = next_at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(1));
            self.pump(Some(wait))?;
        }
        let drain_end = Instant::now() + drain;
        while !self.track.inflight.is_empty() {
            let now = Instant::now();
            if now >= drain_end {
                break;
            }
            self.pump(Some((drain_end - now).min(Duration::from_millis(10))))?;
        }
        let cpu = crate::sys::process_cpu_ns(server_pid).saturating_sub(cpu0);
        let disconnected = self.clients[..honest]
            .iter()
            .filter(|c| c.state == State::Failed)
            .count()
            - failed_before;
        let flooder_closed = flooder.is_some_and(|f| {
            self.clients
                .get(f)
                .is_some_and(|c| c.state == State::Failed)
        });
        let t = &mut self.track;
        t.lat_ns.sort_unstable();
        Ok(FloodResult {
            sent,
            received: t.received,
            lost: t.inflight.len() as u64,
            p50_ms: ms(percentile(&t.lat_ns, 50.0)),
            p99_ms: ms(percentile(&t.lat_ns, 99.0)),
            max_ms: ms(t.lat_ns.last().copied().unwrap_or(0)),
            disconnected,
            flood_sent,
            flood_received: t.flood_received,
            flooder_closed,
            server_cpu_ns: cpu,
            wall_ns: start.elapsed().as_nanos() as u64,
        })
    }

    fn send_fanout(&mut self, from: usize, recipients: u32, phase: u32) {
        self.queue_fanout(from, recipients, phase);
        self.flush(from);
    }

    /// [`send_fanout`](Self::send_fanout) without the write: the caller
    /// flushes the sender once its whole burst is queued.
    fn queue_fanout(&mut self, from: usize, recipients: u32, phase: u32) {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.track.inflight.insert(seq, recipients);
        self.track.outstanding[from] += 1;
        let ts = self.now_ns();
        self.queue_msg(from, Dest::All, b'T', ts, seq, phase);
    }

    /// Starts a ping-pong phase between clients `a` and `b`.
    pub fn ping_start(&mut self) -> u32 {
        self.new_phase()
    }

    /// Sends the next ping from `a` to `b` when none is waiting; a ping
    /// unanswered for a second counts as a 1 s round trip.
    pub fn ping_step(&mut self, a: usize, b: usize) {
        let now = Instant::now();
        if let Some(at) = self.track.ping_waiting {
            if now.duration_since(at) < Duration::from_secs(1) {
                return;
            }
            self.track.rtt_ns.push(1_000_000_000);
            self.track.ping_timeouts += 1;
        }
        self.track.ping_waiting = Some(now);
        self.next_seq += 1;
        let (seq, phase, ts) = (self.next_seq, self.track.phase, self.now_ns());
        self.send_msg(a, Dest::To(b), b'P', ts, seq, phase);
    }

    /// The round trips measured since `ping_start`, sorted, in ns.
    pub fn ping_rtts(&mut self) -> Vec<u64> {
        let mut v = std::mem::take(&mut self.track.rtt_ns);
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_found_behind_any_prefix() {
        let p = parse_payload(b"[u3] ^T123^45^3^7^xxxx").unwrap();
        assert_eq!(p, (b'T', 123, 45, 3, 7));
        let p = parse_payload(b":u3!~u3@127.0.0.1 PRIVMSG #bench :^P9^1^0^2^x").unwrap();
        assert_eq!(p, (b'P', 9, 1, 0, 2));
        assert!(parse_payload(b"Login sukses").is_none());
        assert!(parse_payload(b"^T^1").is_none());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 99.0), 0);
    }
}
