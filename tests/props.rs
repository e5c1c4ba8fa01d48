//! Property tests of the pure layers (issue 5): framing, cleaning, parsing and
//! the chat core, fed arbitrary input. Case counts are modest so the file runs
//! in a few seconds.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;

use chat::core::chat::{
    AuthDone, AuthJob, AuthOutcome, Chat, ChatConfig, ConnId, Event, Flow, Outbox, Ticket,
};
use chat::wire::framing::{Frame, LineBuffer, MAX_LINE, READ_CHUNK, clean_line, strip_line_end};
use chat::wire::line;
use chat::wire::protocol::{Command, Lang, name_skeleton};

// ---------------------------------------------------------------------------
// Framing

/// A frame as owned data: `Some(line)` or `None` for "too long".
type Owned = Option<Vec<u8>>;

fn own(frame: Frame<'_>) -> Owned {
    match frame {
        Frame::Line(line) => Some(line.to_vec()),
        Frame::TooLong => None,
    }
}

/// Feeds `stream` to a fresh buffer in the given chunks, taking every frame
/// after each chunk when `drain[i]` says so (the server always does; a buffer
/// that is fed twice without draining must not care), then what is left at
/// end of stream.
fn frames_chunked(stream: &[u8], cuts: &[usize], drain: &[bool]) -> Vec<Owned> {
    let mut buffer = LineBuffer::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let size = cuts.get(i).copied().unwrap_or(stream.len()).max(1);
        let end = (at + size).min(stream.len());
        buffer.extend(&stream[at..end]);
        if drain.get(i).copied().unwrap_or(true) {
            while let Some(frame) = buffer.next_frame() {
                out.push(own(frame));
            }
        }
        at = end;
        i += 1;
    }
    while let Some(frame) = buffer.next_frame() {
        out.push(own(frame));
    }
    if let Some(frame) = buffer.take_unterminated() {
        out.push(own(frame));
    }
    assert!(buffer.take_unterminated().is_none());
    out
}

/// What SPEC section 1 says the frames of a whole stream are.
fn frames_reference(stream: &[u8]) -> Vec<Owned> {
    let strip_cr = |line: &[u8]| -> Vec<u8> {
        match line {
            [rest @ .., b'\r'] => rest.to_vec(),
            _ => line.to_vec(),
        }
    };
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    for part in parts {
        let line = strip_cr(part);
        out.push((line.len() <= MAX_LINE).then_some(line));
    }
    if !tail.is_empty() {
        let line = strip_cr(tail);
        out.push((line.len() <= MAX_LINE).then_some(line));
    }
    out
}

/// Byte streams rich in the cases that matter: terminators, lone `\r`,
/// line lengths around [`MAX_LINE`], and long runs.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => vec(any::<u8>(), 0..40),
        2 => Just(b"\n".to_vec()),
        2 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        2 => (MAX_LINE - 3..MAX_LINE + 4, any::<u8>())
            .prop_map(|(n, b)| vec![if b == b'\n' { b'x' } else { b }; n]),
        1 => (MAX_LINE + 4..3 * MAX_LINE, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However the stream is cut, the frames are those of the whole stream,
    /// and those of the contract.
    #[test]
    fn chunking_never_changes_the_frames(
        stream in stream(),
        cuts in vec(prop_oneof![3 => 1usize..8, 2 => 1usize..5000, 1 => Just(4096usize)], 0..64),
        drain in vec(prop::bool::weighted(0.8), 0..64),
    ) {
        let whole = frames_chunked(&stream, &[stream.len().max(1)], &[true]);
        let chunked = frames_chunked(&stream, &cuts, &drain);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&whole, &frames_reference(&stream));
    }

    /// No delivered line is longer than the limit or holds a `\n`.
    #[test]
    fn no_line_over_the_limit_is_delivered(
        stream in stream(),
        cuts in vec(1usize..6000, 0..32),
    ) {
        for line in frames_chunked(&stream, &cuts, &[]).into_iter().flatten() {
            prop_assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
            prop_assert!(!line.contains(&b'\n'));
        }
    }
}

// ---------------------------------------------------------------------------
// Cleaning and parsing

/// Bytes with a high share of controls, ESC, C1 in UTF-8, telnet IAC and
/// invalid UTF-8.
fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => vec(any::<u8>(), 0..8),
        2 => "[ -~]{0,8}".prop_map(String::into_bytes),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => Just(b"\x1b[2J".to_vec()),
        1 => Just(b"\xc2\x9b".to_vec()),
        1 => Just(b"\xc2\x85".to_vec()),
        1 => Just(b"\xff\xfb\x01".to_vec()),
        1 => Just(b"\xff\xfa\x18\x00xterm\xff\xf0".to_vec()),
        1 => Just(b"\xff".to_vec()),
        1 => (0u8..0x20).prop_map(|b| vec![b]),
        1 => Just(b"\x7f".to_vec()),
        2 => prop::sample::select(HIDING.to_vec()).prop_map(|c| c.to_string().into_bytes()),
    ];
    vec(piece, 0..10).prop_map(|p| p.concat())
}

/// The characters that reorder or hide text (SPEC section 1), written out here
/// rather than taken from the code under test.
const HIDING: [char; 13] = [
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}', '\u{2028}', '\u{2029}', '\u{200B}', '\u{FEFF}',
];

/// What may never come out of `clean_line`.
fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\t') || HIDING.contains(&c)
}

/// Arbitrary text with a high share of the hiding characters mixed in.
fn text_with_hiding() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => any::<String>(),
        1 => prop::sample::select(HIDING.to_vec()).prop_map(String::from),
    ];
    vec(piece, 0..8).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn clean_line_leaves_no_forbidden_character(raw in nasty_bytes()) {
        let text = clean_line(&raw);
        for c in text.chars() {
            prop_assert!(!forbidden(c), "{c:?} left in {text:?}");
        }
    }

    /// Text that is already clean passes unchanged; forbidden characters are
    /// removed and nothing else is.
    #[test]
    fn clean_line_removes_exactly_the_forbidden(text in text_with_hiding()) {
        let clean: String = text.chars().filter(|&c| !forbidden(c)).collect();
        prop_assert_eq!(clean_line(clean.as_bytes()), clean.as_str());
        prop_assert_eq!(clean_line(text.as_bytes()), clean.as_str());
    }

    #[test]
    fn command_parse_never_panics_and_keeps_its_invariants(
        head in prop_oneof![
            Just(""), Just("login"), Just("regist"), Just("send-to"), Just("list-user"),
            Just("logout"), Just("help"), Just("quit"), Just("  send-to "),
        ],
        rest in any::<String>(),
    ) {
        let line = format!("{head}{rest}");
        match Command::parse(&line) {
            Command::Empty => prop_assert!(line.trim().is_empty()),
            Command::SendTo(Some((target, text))) => {
                prop_assert!(!target.is_empty());
                prop_assert!(!target.contains(char::is_whitespace));
                prop_assert!(!text.is_empty());
                prop_assert_eq!(text, text.trim());
            }
            Command::Message(text) => {
                prop_assert!(!text.is_empty());
                prop_assert_eq!(text, line.trim());
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Telnet refusals and reading straight into the buffer

const IAC: u8 = 0xFF;

/// The refusals SPEC section 1 asks for, computed over the whole stream at
/// once: `DO x` gets `WONT x`, `WILL x` gets `DONT x`; a subnegotiation runs
/// to `IAC SE` or the end of its line.
fn replies_reference(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] != IAC {
            i += 1;
            continue;
        }
        match s.get(i + 1) {
            None => break,
            Some(&cmd @ 0xFB..=0xFE) => {
                match (cmd, s.get(i + 2)) {
                    (0xFD, Some(&opt)) => out.extend_from_slice(&[IAC, 0xFC, opt]),
                    (0xFB, Some(&opt)) => out.extend_from_slice(&[IAC, 0xFE, opt]),
                    _ => {}
                }
                i += 3;
            }
            Some(&0xFA) => {
                let body = &s[i + 2..];
                let end = (0..body.len()).find(|&p| {
                    body[p] == b'\n' || (body[p] == IAC && body.get(p + 1) == Some(&0xF0))
                });
                i = match end {
                    Some(p) if body[p] == b'\n' => i + 2 + p + 1,
                    Some(p) => i + 2 + p + 2,
                    None => s.len(),
                };
            }
            Some(_) => i += 2,
        }
    }
    out
}

/// Streams dense in telnet commands, cut lines and subnegotiations.
fn telnet_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => vec(any::<u8>(), 0..12),
        2 => "[ -~]{0,10}".prop_map(String::into_bytes),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        3 => (0xFBu8..=0xFE, any::<u8>()).prop_map(|(cmd, opt)| vec![IAC, cmd, opt]),
        1 => Just(b"\xff\xf4\xff\xfd\x06".to_vec()),
        1 => Just(b"\xff\xff".to_vec()),
        1 => Just(b"\xff".to_vec()),
        1 => Just(b"\xff\xfa\x18\x00xterm\xff\xf0".to_vec()),
        1 => Just(b"\xff\xfa".to_vec()),
        1 => Just(b"\xff\xf0".to_vec()),
        1 => (MAX_LINE - 2..MAX_LINE + 3).prop_map(|n| vec![b'x'; n]),
    ];
    vec(piece, 0..24).prop_map(|p| p.concat())
}

/// A reader that hands out `data` in the given piece sizes, now and then
/// saying `WouldBlock` (as a non-blocking socket does between bursts).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    block: &'a [bool],
    calls: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        let call = self.calls;
        self.calls += 1;
        if self.block.get(call).copied().unwrap_or(false) {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let size = self.sizes.get(call).copied().unwrap_or(usize::MAX).max(1);
        let n = size.min(dst.len()).min(self.data.len());
        dst[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Everything a buffer yields for `stream` read through `read_from`: frames
/// and telnet replies, drained after every read as the server does.
fn read_all(stream: &[u8], sizes: &[usize], block: &[bool]) -> (Vec<Owned>, Vec<u8>) {
    let mut src = Pieces {
        data: stream,
        sizes,
        block,
        calls: 0,
    };
    let mut buffer = LineBuffer::new();
    let (mut frames, mut replies) = (Vec::new(), Vec::new());
    loop {
        match buffer.read_from(&mut src) {
            Ok(0) => break,
            Ok(n) => assert!(n <= READ_CHUNK),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
        replies.extend_from_slice(buffer.telnet_replies());
        buffer.clear_telnet_replies();
        while let Some(frame) = buffer.next_frame() {
            frames.push(own(frame));
        }
    }
    if let Some(frame) = buffer.take_unterminated() {
        frames.push(own(frame));
    }
    (frames, replies)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However a stream is cut into reads, the telnet refusals are those of
    /// the whole stream, in order, and the frames do not change.
    #[test]
    fn telnet_replies_do_not_depend_on_chunking(
        stream in telnet_stream(),
        cuts in vec(prop_oneof![4 => 1usize..4, 2 => 1usize..40, 1 => 1usize..5000], 0..200),
        block in vec(prop::bool::weighted(0.2), 0..200),
    ) {
        let reference = replies_reference(&stream);
        // One extend of everything.
        let mut whole = LineBuffer::new();
        whole.extend(&stream);
        prop_assert_eq!(whole.telnet_replies(), &reference[..]);
        // Chunked extends, replies collected after each (some left to pile up).
        let mut chunked = LineBuffer::new();
        let mut got = Vec::new();
        let mut at = 0;
        for (i, size) in cuts.iter().chain(std::iter::repeat(&7)).enumerate() {
            if at >= stream.len() {
                break;
            }
            let end = (at + size).min(stream.len());
            chunked.extend(&stream[at..end]);
            if block.get(i).copied().unwrap_or(true) {
                got.extend_from_slice(chunked.telnet_replies());
                chunked.clear_telnet_replies();
            }
            at = end;
        }
        got.extend_from_slice(chunked.telnet_replies());
        prop_assert_eq!(&got, &reference);
        // Straight reads in odd pieces with WouldBlock between them.
        let (frames, replies) = read_all(&stream, &cuts, &block);
        prop_assert_eq!(&replies, &reference);
        prop_assert_eq!(&frames, &frames_chunked(&stream, &[stream.len().max(1)], &[true]));
    }

    /// `strip_line_end` is what the buffer does to a line.
    #[test]
    fn strip_line_end_agrees_with_the_buffer(line in vec(prop_oneof![
        3 => any::<u8>(), 1 => Just(b'\r'),
    ], 0..20).prop_filter("one line", |l| !l.contains(&b'\n'))) {
        let mut terminated = line.clone();
        terminated.push(b'\n');
        let mut buffer = LineBuffer::new();
        buffer.extend(&terminated);
        prop_assert_eq!(buffer.next_frame(), Some(Frame::Line(strip_line_end(&terminated))));
        let mut buffer = LineBuffer::new();
        buffer.extend(&line);
        let expected = (!line.is_empty()).then(|| Frame::Line(strip_line_end(&line)));
        prop_assert_eq!(buffer.take_unterminated(), expected);
    }
}

// ---------------------------------------------------------------------------
// Look-alike names and mistyped keywords

/// The look-alike rule of SPEC section 2, as a reference: same length, and
/// each pair of characters equal ignoring ASCII case or both in one of the
/// groups l/I/1 (any case) and O/0.
fn look_alike(a: &str, b: &str) -> bool {
    let group = |c: char| -> Option<u8> {
        match c {
            'l' | 'L' | 'i' | 'I' | '1' => Some(1),
            'o' | 'O' | '0' => Some(2),
            _ => None,
        }
    };
    a.chars().count() == b.chars().count()
        && a.chars().zip(b.chars()).all(|(x, y)| {
            x.eq_ignore_ascii_case(&y) || (group(x).is_some() && group(x) == group(y))
        })
}

/// Names from a small alphabet rich in look-alike letters, so that equal
/// skeletons are common.
fn lookalike_name() -> impl Strategy<Value = String> {
    "[lLiI1oO0aAbB_-]{1,6}"
}

/// The same name with each character swapped for an arbitrary look-alike.
fn disguise(name: &str, picks: &[u8]) -> String {
    name.chars()
        .zip(picks.iter().cycle())
        .map(|(c, &pick)| {
            let choices: &[char] = match c {
                'l' | 'L' | 'i' | 'I' | '1' => &['l', 'L', 'i', 'I', '1'],
                'o' | 'O' | '0' => &['o', 'O', '0'],
                c if c.is_ascii_alphabetic() => {
                    return if pick % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    };
                }
                _ => return c,
            };
            choices[usize::from(pick) % choices.len()]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Equal skeletons exactly when the rule says the names look alike.
    #[test]
    fn name_skeleton_matches_the_look_alike_rule(a in lookalike_name(), b in lookalike_name()) {
        prop_assert_eq!(name_skeleton(&a) == name_skeleton(&b), look_alike(&a, &b), "{} {}", a, b);
    }

    /// A disguised name always shares its skeleton (any valid name).
    #[test]
    fn a_disguise_is_always_caught(
        name in "[A-Za-z0-9_-]{1,32}",
        picks in vec(any::<u8>(), 1..32),
    ) {
        let fake = disguise(&name, &picks);
        prop_assert!(look_alike(&name, &fake));
        prop_assert_eq!(name_skeleton(&fake), name_skeleton(&name));
        // An equivalence: the skeleton of a skeleton is itself.
        prop_assert_eq!(name_skeleton(&name_skeleton(&name)), name_skeleton(&name));
    }

    /// `login` / `regist` in any other case is a mistyped keyword, never chat.
    #[test]
    fn mistyped_keywords_are_never_messages(
        word in prop_oneof![Just("login"), Just("regist")],
        flips in vec(any::<bool>(), 6),
        rest in prop_oneof![Just(String::new()), " [ -~]{0,20}".boxed()],
    ) {
        let typed: String = word
            .chars()
            .zip(&flips)
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let line = format!("{typed}{rest}");
        let parsed = Command::parse(&line);
        if typed == word {
            prop_assert!(matches!(parsed, Command::Login(_) | Command::Regist(_)));
        } else {
            prop_assert_eq!(parsed, Command::MistypedKeyword);
        }
    }
}

// ---------------------------------------------------------------------------
// The chat core

/// What the core did, in order; sends rendered by the line dialect.
#[derive(Debug)]
enum Did {
    Send(ConnId, Vec<u8>),
    Close(ConnId),
    Submit(AuthJob),
}

#[derive(Default)]
struct Recorder {
    did: Vec<Did>,
}

impl Outbox for Recorder {
    fn send(&mut self, conn: ConnId, event: Event<'_>) {
        let mut bytes = Vec::new();
        line::render(Lang::Id, &event, &mut bytes);
        // The line protocol says nothing for some events (a login, told to
        // the others): nothing is sent, as in the server.
        if !bytes.is_empty() {
            self.did.push(Did::Send(conn, bytes));
        }
    }
    fn close(&mut self, conn: ConnId) {
        self.did.push(Did::Close(conn));
    }
    fn submit(&mut self, job: AuthJob) {
        self.did.push(Did::Submit(job));
    }
}

/// Slab keys the harness uses.
const CONNS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Line(usize, Vec<u8>),
    TooLong(usize),
    /// Finish the pending job at this index (modulo), as a worker would; the
    /// flag makes a registration's disk write fail.
    Finish(usize, bool),
    Disconnect(usize),
    Tick(u64),
}

/// Lines that hit every command, with names and passwords from a small pool
/// so that logins succeed, collide and fail, plus arbitrary nasty bytes.
fn chat_line() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("u0"),
        Just("u1"),
        Just("u2"),
        Just("u3"),
        Just("bad name"),
        Just("")
    ];
    let pass = prop_oneof![Just("p0"), Just("p1"), Just("")];
    prop_oneof![
        2 => (name.clone(), pass.clone()).prop_map(|(u, p)| format!("regist {u} {p}").into_bytes()),
        3 => (name.clone(), pass.clone()).prop_map(|(u, p)| format!("login {u} {p}").into_bytes()),
        1 => Just(b"login".to_vec()),
        1 => Just(b"regist".to_vec()),
        1 => name.clone().prop_map(|u| u.as_bytes().to_vec()),
        1 => pass.prop_map(|p| p.as_bytes().to_vec()),
        2 => (name, nasty_bytes()).prop_map(|(u, text)| [format!("send-to {u} ").into_bytes(), text].concat()),
        1 => Just(b"list-user".to_vec()),
        1 => Just(b"logout".to_vec()),
        1 => Just(b"quit".to_vec()),
        1 => Just(b"help".to_vec()),
        4 => nasty_bytes(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0..CONNS;
    prop_oneof![
        2 => conn.clone().prop_map(Op::Connect),
        10 => (conn.clone(), chat_line()).prop_map(|(c, l)| Op::Line(c, l)),
        1 => conn.clone().prop_map(Op::TooLong),
        4 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(i, f)| Op::Finish(i, f)),
        1 => conn.prop_map(Op::Disconnect),
        1 => (0u64..8).prop_map(Op::Tick),
    ]
}

/// The shell around the core, held to the call protocol: ids minted per slab
/// key with a fresh generation, lines fed only while the core says
/// `Flow::Ready`, and `disconnect` exactly once per connection (at once when
/// the core asks to close).
struct Harness {
    chat: Chat,
    start: Instant,
    now: Instant,
    /// The connection open on each key.
    open: HashMap<usize, ConnId>,
    next_generation: u32,
    jobs: Vec<AuthJob>,
}

impl Harness {
    fn new() -> Self {
        let config = ChatConfig {
            login_timeout: Duration::from_secs(5),
            max_pending_auth: 2,
            ..ChatConfig::default()
        };
        // Some accounts exist from the start; u3 does not.
        let accounts = [("u0", "fake$p0"), ("u1", "fake$p0"), ("u2", "fake$p1")]
            .map(|(name, phc)| (name.to_owned(), phc.to_owned()));
        let start = Instant::now();
        Self {
            chat: Chat::new(config, accounts),
            start,
            now: start,
            open: HashMap::new(),
            next_generation: 0,
            jobs: Vec::new(),
        }
    }

    fn ticket_of(job: &AuthJob) -> Ticket {
        match job {
            AuthJob::Register { ticket, .. } | AuthJob::Verify { ticket, .. } => *ticket,
        }
    }

    fn is_open(&self, id: ConnId) -> bool {
        self.open.get(&id.key()) == Some(&id)
    }

    /// Checks what the core did in one call and plays the shell's part: a
    /// connection the core closes is disconnected at once. `source` is the
    /// connection whose event this was; `stale` one that must hear nothing.
    fn settle(
        &mut self,
        mut out: Recorder,
        source: Option<ConnId>,
        stale: Option<ConnId>,
    ) -> Result<(), TestCaseError> {
        let mut i = 0;
        while i < out.did.len() {
            let did = std::mem::replace(&mut out.did[i], Did::Submit(placeholder()));
            match did {
                Did::Send(conn, bytes) => {
                    prop_assert!(self.is_open(conn), "sent to {conn:?}, which is not open");
                    prop_assert!(Some(conn) != stale, "a stale job spoke to {conn:?}");
                    check_output(&bytes)?;
                }
                Did::Close(conn) => {
                    prop_assert!(self.is_open(conn), "closed {conn:?}, which is not open");
                    self.open.remove(&conn.key());
                    let mut again = Recorder::default();
                    self.chat.disconnect(conn, self.now, &mut again);
                    prop_assert_eq!(self.chat.flow(conn), Flow::Closed);
                    out.did.append(&mut again.did);
                }
                Did::Submit(job) => {
                    let ticket = Self::ticket_of(&job);
                    if ticket == placeholder_ticket() {
                        i += 1;
                        continue;
                    }
                    prop_assert_eq!(Some(ticket), source, "job for another conn");
                    prop_assert_eq!(self.chat.flow(ticket), Flow::Held);
                    self.jobs.push(job);
                }
            }
            i += 1;
        }
        prop_assert!(self.chat.online_count() <= self.open.len());
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let mut out = Recorder::default();
        match op {
            Op::Connect(key) => {
                if !self.open.contains_key(&key) {
                    self.next_generation += 1;
                    let id = ConnId::new(key, self.next_generation);
                    self.open.insert(key, id);
                    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
                    self.chat.connect(id, peer, self.now, &mut out);
                }
            }
            Op::Line(key, raw) => {
                let Some(&id) = self.open.get(&key) else {
                    return Ok(());
                };
                // The shell feeds a line only while the core is ready for it.
                if self.chat.flow(id) == Flow::Ready {
                    let flow = self.chat.line(id, &raw, self.now, &mut out);
                    prop_assert_eq!(flow, self.chat.flow(id));
                }
                return self.settle(out, Some(id), None);
            }
            Op::TooLong(key) => {
                if let Some(&id) = self.open.get(&key)
                    && self.chat.flow(id) == Flow::Ready
                {
                    prop_assert_eq!(self.chat.too_long(id, &mut out), Flow::Ready);
                }
            }
            Op::Finish(index, fail) => {
                if self.jobs.is_empty() {
                    return Ok(());
                }
                let job = self.jobs.remove(index % self.jobs.len());
                let ticket = Self::ticket_of(&job);
                let current = self.is_open(ticket);
                let outcome = match job {
                    AuthJob::Register {
                        username, password, ..
                    } => {
                        if fail {
                            AuthOutcome::StorageFailed { username }
                        } else {
                            AuthOutcome::Registered {
                                username,
                                phc: format!("fake${password}").into(),
                            }
                        }
                    }
                    AuthJob::Verify { phc, password, .. } => AuthOutcome::Verified(
                        phc.is_some_and(|phc| *phc == *format!("fake${password}")),
                    ),
                };
                let resumed = self
                    .chat
                    .auth_done(AuthDone { ticket, outcome }, self.now, &mut out);
                let stale = (!current).then_some(ticket);
                self.settle(out, Some(ticket), stale)?;
                // A finished job lets the shell feed that connection again,
                // unless the core closed it.
                prop_assert_eq!(
                    resumed.is_some(),
                    current && self.chat.flow(ticket) == Flow::Ready
                );
                return Ok(());
            }
            Op::Disconnect(key) => {
                if let Some(id) = self.open.remove(&key) {
                    self.chat.disconnect(id, self.now, &mut out);
                }
            }
            Op::Tick(secs) => {
                self.now += Duration::from_secs(secs);
                self.chat.tick(self.now, &mut out);
                prop_assert!(self.now >= self.start);
            }
        }
        self.settle(out, None, None)
    }
}

/// A job that stands in for one moved out of the record.
fn placeholder() -> AuthJob {
    AuthJob::Verify {
        ticket: placeholder_ticket(),
        phc: None,
        password: String::new(),
    }
}

fn placeholder_ticket() -> Ticket {
    ConnId::new(usize::MAX, u32::MAX)
}

/// Anything the core sends: UTF-8, no control character but `\n` (and TAB
/// inside text), and every line but the help text one line ending in `\n`
/// (or a prompt, with none), so no message can smuggle in a line of its own.
fn check_output(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = std::str::from_utf8(bytes);
    prop_assert!(text.is_ok(), "not UTF-8: {bytes:?}");
    let text = text.unwrap();
    for c in text.chars() {
        prop_assert!(
            !c.is_control() || c == '\n' || c == '\t',
            "{c:?} sent in {text:?}"
        );
    }
    if !text.starts_with("Perintah:") {
        let newlines = text.matches('\n').count();
        let prompt = text == "Username : " || text == "Password : ";
        prop_assert!(
            (newlines == 1 && text.ends_with('\n')) || (newlines == 0 && prompt),
            "not one line: {text:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_chat_core_survives_arbitrary_lines(
        logged_in_first in 0..=CONNS,
        ops in vec(op(), 1..120),
    ) {
        let mut harness = Harness::new();
        for conn in 0..CONNS {
            harness.apply(Op::Connect(conn))?;
        }
        // Some connections start logged in, so that chat flows between them.
        for (conn, login) in ["login u0 p0", "login u1 p0", "login u2 p1"]
            .into_iter()
            .take(logged_in_first)
            .enumerate()
        {
            harness.apply(Op::Line(conn, login.as_bytes().to_vec()))?;
            harness.apply(Op::Finish(0, false))?;
        }
        for op in ops {
            harness.apply(op)?;
        }
        // Finish whatever is pending; nothing may go wrong on the way out.
        while !harness.jobs.is_empty() {
            harness.apply(Op::Finish(0, false))?;
        }
        for conn in 0..CONNS {
            harness.apply(Op::Disconnect(conn))?;
        }
        prop_assert_eq!(harness.chat.online_count(), 0);
    }
}
