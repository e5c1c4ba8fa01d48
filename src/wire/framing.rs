//! Bytes in, lines out.
//!
//! TCP is a byte stream: one `read` may hold half a line or fifty lines. The
//! [`LineBuffer`] of each connection collects the bytes and hands out whole lines
//! one at a time, so the server can stop taking lines from a connection whose
//! previous line is still waiting on slow work (password hashing) without losing
//! or reordering anything. [`clean_line`] then turns a raw line into the text the
//! chat core sees: telnet commands dropped, UTF-8 decoded lossily, control
//! characters removed, so no user can send an escape sequence to another's
//! terminal. The buffer also answers telnet option requests as the bytes
//! arrive ([`LineBuffer::telnet_replies`]): telnet waits for those answers, so
//! they cannot wait for a line to end.

use std::borrow::Cow;

/// Longest accepted line in bytes, the terminator (`\n` or `\r\n`) excluded
/// (SPEC section 1).
pub const MAX_LINE: usize = 4096;

/// Size of one `read` from a socket, as in the seed's `recv(4096)`.
pub const READ_CHUNK: usize = 4096;

/// A buffer bigger than this is released when it empties, so an idle connection
/// that once received a burst does not keep the burst's memory.
const KEEP_CAPACITY: usize = 2 * READ_CHUNK;

/// What the line buffer yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its terminator.
    Line(&'a [u8]),
    /// A line went over [`MAX_LINE`]; it is reported once and its bytes up to the
    /// next `\n` are discarded.
    TooLong,
}

/// Removes the end of one line: a trailing `\n` if there is one, then one `\r`
/// right before it (or at the very end, for a last line that had no `\n`).
///
/// This is the single definition of a line end, used by [`LineBuffer`] for every
/// line it hands out and by the client for every line it receives, so both
/// sides agree on what a line is: `"a\r\n"` and `"a\n"` and `"a\r"` give `"a"`,
/// `"a\r\r\n"` gives `"a\r"` (only one `\r` belongs to the terminator), and a
/// `\r` that is not last is left alone.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

thread_local! {
    /// Where an idle connection's read lands before its bytes are kept: one
    /// per thread (the event loop's), initialised once.
    static SCRATCH: std::cell::RefCell<Box<[u8; READ_CHUNK]>> =
        std::cell::RefCell::new(Box::new([0; READ_CHUNK]));
}

/// Splits a connection's byte stream into lines, enforcing [`MAX_LINE`], and
/// answers telnet option negotiation as the bytes arrive.
///
/// Bytes go in with [`read_from`](Self::read_from) (straight from a socket) or
/// [`extend`](Self::extend) (bytes some other layer already decoded), and lines
/// come out with [`next_frame`](Self::next_frame). The buffer never holds more
/// than one line in progress plus what was read in one chunk, because the
/// server stops reading while lines are still waiting.
///
/// Telnet refusals ([`telnet_replies`](Self::telnet_replies)) are found while
/// bytes come in, not when lines go out: a telnet client that sends `IAC DO
/// TIMING-MARK` on Ctrl-C waits for the answer before it shows anything more,
/// and it sends no newline after it.
#[derive(Debug, Default)]
pub struct LineBuffer {
    /// `buf[start..end]` are the bytes not handed out yet. Bytes past `end`
    /// are initialised spare room that [`read_from`](Self::read_from) reads
    /// into without zeroing it again.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Inside an over-long line: drop bytes up to and including the next `\n`.
    discarding: bool,
    /// Telnet negotiation in progress; `None` (no allocation) for the common
    /// connection that never sent an `IAC`, or is done with negotiating.
    telnet: Option<Box<Telnet>>,
}

impl LineBuffer {
    /// An empty buffer; allocates nothing until bytes arrive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes that came from the peer (already decoded by a transport
    /// such as TLS or WebSocket, or read into another buffer).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        // Spare initialised room is dropped: copying into it would cost the
        // same as appending, and appending keeps the length exact.
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
        self.scan_telnet(self.end - bytes.len());
    }

    /// Reads once from `src`, at most [`READ_CHUNK`] bytes, and then does what
    /// [`extend`](Self::extend) does. Returns what `read` returned: `Ok(0)` is
    /// end of stream, and `WouldBlock` is passed on for the caller's loop.
    ///
    /// A buffer that holds bytes (a partial line, or the middle of a burst)
    /// reads straight into its room, which is zeroed only when it grows. An
    /// empty one (the common idle connection) holds no memory at all: it
    /// reads into a scratch buffer of the thread's, reused by every
    /// connection and never zeroed again, and keeps only the bytes that came.
    /// When the read ends a burst (end of stream, `WouldBlock`, an error) the
    /// room is given back, so an idle connection holds no buffer memory.
    pub fn read_from<R: std::io::Read>(&mut self, src: &mut R) -> std::io::Result<usize> {
        self.compact();
        if self.is_empty() && self.buf.len() < self.end + READ_CHUNK {
            let result = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let n = src.read(&mut scratch[..])?;
                // A reader that claims more than it was given is a bug in
                // the reader; never trust it past the room it had.
                let n = n.min(READ_CHUNK);
                self.extend(&scratch[..n]);
                Ok(n)
            });
            if !matches!(result, Ok(n) if n > 0) {
                self.trim_room();
            }
            return result;
        }
        let want = self.end + READ_CHUNK;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        match src.read(&mut self.buf[self.end..want]) {
            Ok(0) => {
                self.trim_room();
                Ok(0)
            }
            Ok(n) => {
                let n = n.min(READ_CHUNK);
                self.end += n;
                self.scan_telnet(self.end - n);
                Ok(n)
            }
            Err(e) => {
                self.trim_room();
                Err(e)
            }
        }
    }

    /// Gives back the read room of a connection with nothing pending; the
    /// event loop calls it for every connection every few seconds. Returns
    /// the bytes freed.
    pub fn sweep(&mut self) -> usize {
        if self.is_empty() && self.buf.capacity() > 0 {
            let freed = self.buf.capacity();
            self.start = 0;
            self.end = 0;
            self.buf = Vec::new();
            freed
        } else {
            0
        }
    }

    /// The telnet refusals owed to the peer for what came in so far: `IAC
    /// WONT x` for each `IAC DO x`, `IAC DONT x` for each `IAC WILL x`, in
    /// order, every time asked. Empty for nearly every connection. The caller
    /// queues them to the connection's output right after a read, then calls
    /// [`clear_telnet_replies`](Self::clear_telnet_replies).
    pub fn telnet_replies(&self) -> &[u8] {
        match &self.telnet {
            Some(t) => &t.replies,
            None => &[],
        }
    }

    /// Forgets the replies already queued; frees the negotiation state when no
    /// sequence is half-way, so a telnet client costs nothing between
    /// negotiations.
    pub fn clear_telnet_replies(&mut self) {
        if let Some(t) = &mut self.telnet {
            if t.state == TelnetState::Data {
                self.telnet = None;
            } else {
                t.replies.clear();
            }
        }
    }

    /// True when no bytes are waiting (a partial line counts as waiting).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The next complete line or over-long report, if the buffered bytes hold one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            let newline = memchr::memchr(b'\n', pending);
            if self.discarding {
                match newline {
                    Some(at) => {
                        self.start += at + 1;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.clear();
                        return None;
                    }
                }
            }
            return match newline {
                Some(at) => {
                    let begin = self.start;
                    self.start += at + 1;
                    let line = strip_line_end(&self.buf[begin..self.start]);
                    if line.len() > MAX_LINE {
                        Some(Frame::TooLong)
                    } else {
                        Some(Frame::Line(line))
                    }
                }
                None if Self::too_long_already(pending) => {
                    self.clear();
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => {
                    self.release_if_drained();
                    None
                }
            };
        }
    }

    /// Takes what is left when the peer has closed its side: a last line that
    /// had no `\n` is still a line (a script whose final line lacks a newline).
    pub fn take_unterminated(&mut self) -> Option<Frame<'_>> {
        if self.is_empty() || self.discarding {
            self.clear();
            return None;
        }
        let begin = self.start;
        self.start = self.end;
        let line = strip_line_end(&self.buf[begin..self.end]);
        if line.len() > MAX_LINE {
            Some(Frame::TooLong)
        } else {
            Some(Frame::Line(line))
        }
    }

    /// An unterminated tail is over the limit once it has more than
    /// `MAX_LINE` bytes that cannot be a `\r` before the coming `\n`.
    fn too_long_already(pending: &[u8]) -> bool {
        pending.len() > MAX_LINE + 1
            || (pending.len() == MAX_LINE + 1 && pending.last() != Some(&b'\r'))
    }

    /// Moves the unfinished tail to the front before growing, so the buffer
    /// stays about one line long however long the connection lives.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.release_if_drained();
    }

    fn release_if_drained(&mut self) {
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// After a burst of reads: give back the read room. Nothing pending frees
    /// the whole buffer; a partial line keeps only its own bytes.
    fn trim_room(&mut self) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.shrink_to_fit();
    }

    /// Looks for telnet commands in `buf[from..end]`, the bytes just added,
    /// and queues the refusals they call for. The common chunk holds no `IAC`
    /// and costs one `memchr`-style search.
    fn scan_telnet(&mut self, from: usize) {
        let chunk = &self.buf[from..self.end];
        let telnet = match &mut self.telnet {
            Some(t) => t,
            None if !chunk.contains(&IAC) => return,
            None => self.telnet.insert(Box::default()),
        };
        telnet.scan(chunk);
    }
}

/// Where a telnet command sequence stands between reads: a sequence may be cut
/// anywhere by TCP (`IAC` in one read, `DO` in the next, the option in a third).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TelnetState {
    /// Plain data.
    #[default]
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC WILL/WONT/DO/DONT`: the option byte comes next.
    Option(u8),
    /// Inside `IAC SB ...`: up to `IAC SE`, or to the end of the line (as
    /// [`clean_line`] treats it, so both agree where a subnegotiation ends).
    Sub,
    /// After an `IAC` inside a subnegotiation.
    SubIac,
}

#[derive(Debug, Default)]
struct Telnet {
    state: TelnetState,
    /// Refusals not yet handed to the connection's output.
    replies: Vec<u8>,
}

impl Telnet {
    fn scan(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                TelnetState::Data => match chunk[i..].iter().position(|&b| b == IAC) {
                    Some(at) => {
                        i += at + 1;
                        self.state = TelnetState::Iac;
                    }
                    None => return,
                },
                TelnetState::Iac => {
                    let cmd = chunk[i];
                    i += 1;
                    self.state = match cmd {
                        WILL..=DONT => TelnetState::Option(cmd),
                        SB => TelnetState::Sub,
                        // `IAC IAC` (a data 0xFF) or a two-byte command such
                        // as `IAC IP`: nothing to answer.
                        _ => TelnetState::Data,
                    };
                }
                TelnetState::Option(cmd) => {
                    let option = chunk[i];
                    i += 1;
                    // We do nothing and will do nothing: refuse both ways.
                    // WONT and DONT are acknowledgements; answering them would
                    // start a loop.
                    match cmd {
                        DO => self.replies.extend_from_slice(&[IAC, WONT, option]),
                        WILL => self.replies.extend_from_slice(&[IAC, DONT, option]),
                        _ => {}
                    }
                    self.state = TelnetState::Data;
                }
                TelnetState::Sub => match chunk[i..].iter().position(|&b| b == IAC || b == b'\n') {
                    Some(at) => {
                        self.state = if chunk[i + at] == IAC {
                            TelnetState::SubIac
                        } else {
                            TelnetState::Data
                        };
                        i += at + 1;
                    }
                    None => return,
                },
                TelnetState::SubIac => {
                    let b = chunk[i];
                    i += 1;
                    // Ends at the first `IAC SE`, as in `clean_line` (which
                    // also ends it at the end of the line).
                    self.state = match b {
                        SE | b'\n' => TelnetState::Data,
                        IAC => TelnetState::SubIac,
                        _ => TelnetState::Sub,
                    };
                }
            }
        }
    }
}

/// Telnet's "interpret as command" byte.
const IAC: u8 = 0xFF;
/// Telnet subnegotiation begin / end.
const SB: u8 = 0xFA;
const SE: u8 = 0xF0;
/// WILL, WONT, DO, DONT: these carry one option byte.
const WILL: u8 = 0xFB;
const WONT: u8 = 0xFC;
const DO: u8 = 0xFD;
const DONT: u8 = 0xFE;

/// Removes telnet IAC command sequences from raw bytes: `IAC IAC`, `IAC cmd`,
/// `IAC WILL/WONT/DO/DONT opt`, and `IAC SB ... IAC SE`. Done before UTF-8
/// decoding because 0xFF is never valid UTF-8 and would become U+FFFD.
fn strip_telnet(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&IAC) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != IAC {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            None => i += 1,
            Some(&cmd) if (WILL..=DONT).contains(&cmd) => i += 3,
            Some(&SB) => {
                // Skip to the closing IAC SE, or to the end of the line.
                let body = &raw[i + 2..];
                i = match body.windows(2).position(|w| w == [IAC, SE]) {
                    Some(at) => i + 2 + at + 2,
                    None => raw.len(),
                };
            }
            Some(_) => i += 2,
        }
    }
    Cow::Owned(out)
}

/// True for characters that must never reach another user's terminal: C0
/// controls except TAB, DEL and C1 controls (escape sequences, bells), and the
/// characters that reorder or hide text so a message can pretend to say what it
/// does not: the bidirectional embedding, override and isolate controls
/// (U+202A-U+202E, U+2066-U+2069), the line and paragraph separators (U+2028,
/// U+2029), the zero-width space (U+200B) and the byte order mark / zero-width
/// no-break space (U+FEFF).
pub fn is_forbidden_control(c: char) -> bool {
    if c.is_ascii() {
        return c != '\t' && c.is_ascii_control();
    }
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{200B}'
                | '\u{FEFF}'
        )
}

/// Turns a raw line into clean text: telnet sequences removed, UTF-8 decoded
/// lossily, forbidden characters ([`is_forbidden_control`]) removed. Trimming
/// is left to the caller, which needs the untrimmed text to find where a
/// `send-to` message begins. A line that is already clean (nearly every line)
/// is borrowed, not copied.
pub fn clean_line(raw: &[u8]) -> Cow<'_, str> {
    // Fast path for the common line: printable ASCII (and TAB) needs nothing
    // removed and is valid UTF-8 as it is.
    if is_printable_ascii(raw)
        && let Ok(text) = std::str::from_utf8(raw)
    {
        return Cow::Borrowed(text);
    }
    match strip_telnet(raw) {
        Cow::Borrowed(bytes) => remove_controls(String::from_utf8_lossy(bytes)),
        Cow::Owned(bytes) => {
            remove_controls(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
        }
    }
}

/// Whether every byte is printable ASCII (0x20 to 0x7e) or TAB. Every line
/// that is relayed passes here, so it looks at eight bytes at a time: a
/// word with no byte below 0x20, none at or above 0x7f, passes at once; any
/// other word (a TAB, say) is looked at byte by byte.
fn is_printable_ascii(raw: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let byte_ok = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\t';
    let mut words = raw.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        // High bit of a byte set in `low` when the byte is below 0x20, in
        // `high` when it is 0x7f or above (0x7f + 1 carries into bit 7).
        let low = w.wrapping_sub(ONES * 0x20) & !w;
        let high = (w & !HIGHS).wrapping_add(ONES) | w;
        if (low | high) & HIGHS != 0 && !word.iter().all(byte_ok) {
            return false;
        }
    }
    words.remainder().iter().all(byte_ok)
}

fn remove_controls(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.chars().any(is_forbidden_control) {
        Cow::Owned(text.chars().filter(|&c| !is_forbidden_control(c)).collect())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_word_check_agrees_with_the_byte_check_on_every_byte_at_every_place() {
        let byte_ok = |b: u8| (0x20..0x7f).contains(&b) || b == b'\t';
        for len in [1usize, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut line = vec![b'a'; len];
                    line[at] = b;
                    assert_eq!(
                        super::is_printable_ascii(&line),
                        byte_ok(b),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(super::is_printable_ascii(b""));
    }

    use super::*;

    fn frames(buffer: &mut LineBuffer) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        while let Some(frame) = buffer.next_frame() {
            out.push(match frame {
                Frame::Line(line) => Ok(line.to_vec()),
                Frame::TooLong => Err(()),
            });
        }
        out
    }

    #[test]
    fn many_lines_in_one_read() {
        let mut b = LineBuffer::new();
        b.extend(b"one\ntwo\r\nthree\n");
        assert_eq!(
            frames(&mut b),
            vec![
                Ok(b"one".to_vec()),
                Ok(b"two".to_vec()),
                Ok(b"three".to_vec())
            ]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn a_line_split_byte_by_byte() {
        let mut b = LineBuffer::new();
        let mut got = Vec::new();
        for &byte in b"hello world\r\n" {
            b.extend(&[byte]);
            got.extend(frames(&mut b));
        }
        assert_eq!(got, vec![Ok(b"hello world".to_vec())]);
    }

    #[test]
    fn only_one_cr_is_dropped() {
        let mut b = LineBuffer::new();
        b.extend(b"a\r\r\n");
        assert_eq!(frames(&mut b), vec![Ok(b"a\r".to_vec())]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_with_either_terminator() {
        for term in [&b"\n"[..], b"\r\n"] {
            let mut b = LineBuffer::new();
            let mut line = vec![b'x'; MAX_LINE];
            line.extend_from_slice(term);
            b.extend(&line);
            assert_eq!(frames(&mut b), vec![Ok(vec![b'x'; MAX_LINE])]);
        }
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_the_next_line_survives() {
        let mut b = LineBuffer::new();
        let mut got = Vec::new();
        // 100 KB in chunks, as a socket would deliver it.
        let long = vec![b'y'; 100_000];
        for chunk in long.chunks(READ_CHUNK) {
            b.extend(chunk);
            got.extend(frames(&mut b));
        }
        b.extend(b"\nafter\n");
        got.extend(frames(&mut b));
        assert_eq!(got, vec![Err(()), Ok(b"after".to_vec())]);
    }

    #[test]
    fn limit_plus_one_is_too_long_even_when_the_newline_is_in_the_same_read() {
        let mut b = LineBuffer::new();
        let mut line = vec![b'z'; MAX_LINE + 1];
        line.extend_from_slice(b"\nok\n");
        b.extend(&line);
        assert_eq!(frames(&mut b), vec![Err(()), Ok(b"ok".to_vec())]);
    }

    #[test]
    fn a_cr_at_the_limit_waits_for_its_newline() {
        let mut b = LineBuffer::new();
        let mut line = vec![b'z'; MAX_LINE];
        line.push(b'\r');
        b.extend(&line);
        assert_eq!(frames(&mut b), vec![]);
        b.extend(b"\n");
        assert_eq!(frames(&mut b), vec![Ok(vec![b'z'; MAX_LINE])]);
    }

    #[test]
    fn buffer_memory_is_released_after_a_burst() {
        let mut b = LineBuffer::new();
        b.extend(&[b'q'; 3 * READ_CHUNK]);
        let _ = frames(&mut b);
        b.extend(b"\n");
        let _ = frames(&mut b);
        assert!(b.is_empty());
        assert!(b.buf.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn unterminated_tail_is_taken_at_eof() {
        let mut b = LineBuffer::new();
        b.extend(b"first\nlast");
        assert_eq!(frames(&mut b), vec![Ok(b"first".to_vec())]);
        assert_eq!(b.take_unterminated(), Some(Frame::Line(b"last")));
        assert_eq!(b.take_unterminated(), None);
    }

    #[test]
    fn clean_removes_controls_but_keeps_tab_and_unicode() {
        assert_eq!(clean_line(b"a\x1b[31mred\x07\x7f\tb"), "a[31mred\tb");
        assert_eq!(clean_line("h\u{0085}\u{009b}é".as_bytes()), "hé");
        assert_eq!(clean_line(b"bad\xc3(utf8"), "bad\u{fffd}(utf8");
    }

    #[test]
    fn clean_removes_telnet_sequences() {
        // IAC DO ECHO, IAC IAC, IAC NOP, IAC SB ... IAC SE, trailing IAC.
        let raw = b"\xff\xfd\x01hi\xff\xff there\xff\xf1!\xff\xfa\x18\x00xterm\xff\xf0.\xff";
        assert_eq!(clean_line(raw), "hi there!.");
    }

    #[test]
    fn clean_handles_unterminated_subnegotiation() {
        assert_eq!(clean_line(b"ok\xff\xfa\x18junk"), "ok");
    }

    #[test]
    fn clean_removes_text_reordering_and_hiding_characters() {
        // A right-to-left override makes "txt.exe" look like "exe.txt".
        assert_eq!(
            clean_line("see \u{202E}txt.exe\u{202C}!".as_bytes()),
            "see txt.exe!"
        );
        let hidden: String = [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}', '\u{200B}', '\u{FEFF}',
        ]
        .iter()
        .collect();
        assert_eq!(clean_line(format!("a{hidden}b").as_bytes()), "ab");
        // Their neighbours stay: ZWNJ/ZWJ (needed by some scripts), LRM, U+2065, U+2070.
        let kept = "\u{200C}\u{200D}\u{200E}\u{2070}\u{2065}";
        assert_eq!(clean_line(kept.as_bytes()), kept);
    }

    #[test]
    fn strip_line_end_removes_one_terminator() {
        assert_eq!(strip_line_end(b"a\r\n"), b"a");
        assert_eq!(strip_line_end(b"a\n"), b"a");
        assert_eq!(strip_line_end(b"a\r"), b"a");
        assert_eq!(strip_line_end(b"a\r\r\n"), b"a\r");
        assert_eq!(strip_line_end(b"a\n\n"), b"a\n");
        assert_eq!(strip_line_end(b"a\rb"), b"a\rb");
        assert_eq!(strip_line_end(b"\r\n"), b"");
        assert_eq!(strip_line_end(b""), b"");
    }

    /// Feeds `chunks` one by one, collecting the telnet replies after each.
    fn replies_for(chunks: &[&[u8]]) -> Vec<u8> {
        let mut b = LineBuffer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            b.extend(chunk);
            out.extend_from_slice(b.telnet_replies());
            b.clear_telnet_replies();
        }
        out
    }

    #[test]
    fn telnet_options_are_refused_at_once() {
        // What telnet sends on Ctrl-C: IAC IP, IAC DO TIMING-MARK; no newline.
        assert_eq!(replies_for(&[b"\xff\xf4\xff\xfd\x06"]), b"\xff\xfc\x06");
        // WILL gets DONT; WONT and DONT get nothing; every DO is answered.
        assert_eq!(
            replies_for(&[b"\xff\xfb\x18\xff\xfc\x01\xff\xfe\x03\xff\xfd\x06\xff\xfd\x06"]),
            b"\xff\xfe\x18\xff\xfc\x06\xff\xfc\x06"
        );
        // Plain text, IAC IAC and a subnegotiation holding DO-like bytes: nothing.
        assert_eq!(
            replies_for(&[b"hi\xff\xff\xfd\x01 \xff\xfa\x18\xff\xfd\x01\xff\xf0\n"]),
            b""
        );
        // After the subnegotiation ends, options are answered again.
        assert_eq!(
            replies_for(&[b"\xff\xfa\x18\x00x\xff\xf0\xff\xfd\x01"]),
            b"\xff\xfc\x01"
        );
        // An unterminated subnegotiation ends with its line, as in clean_line.
        assert_eq!(
            replies_for(&[b"\xff\xfa\x18junk\n\xff\xfd\x03"]),
            b"\xff\xfc\x03"
        );
    }

    #[test]
    fn telnet_sequences_split_across_reads_are_answered() {
        assert_eq!(
            replies_for(&[b"x\xff", b"\xfd", b"\x06", b"\xff\xfb", b"\x01y"]),
            b"\xff\xfc\x06\xff\xfe\x01"
        );
        assert_eq!(replies_for(&[b"\xff", b"\xff", b"\xfd\x01"]), b"");
        assert_eq!(
            replies_for(&[b"\xff\xfa", b"\x18\xff", b"\xf0", b"\xff\xfd", b"\x05"]),
            b"\xff\xfc\x05"
        );
    }

    #[test]
    fn telnet_state_is_freed_between_negotiations() {
        let mut b = LineBuffer::new();
        b.extend(b"\xff\xfd\x06");
        assert_eq!(b.telnet_replies(), b"\xff\xfc\x06");
        b.clear_telnet_replies();
        assert!(b.telnet.is_none());
        b.extend(b"\xff");
        b.clear_telnet_replies();
        assert!(b.telnet.is_some(), "half a sequence must be remembered");
        b.extend(b"\xfd\x01");
        assert_eq!(b.telnet_replies(), b"\xff\xfc\x01");
        // The lines themselves are untouched; clean_line drops the commands.
        b.extend(b"ok\n");
        assert_eq!(
            frames(&mut b),
            vec![Ok(b"\xff\xfd\x06\xff\xfd\x01ok".to_vec())]
        );
    }

    /// Hands out its data in the given piece sizes, then a final result.
    struct Pieces {
        data: Vec<u8>,
        sizes: Vec<usize>,
        then: Option<std::io::ErrorKind>,
        calls: usize,
    }

    impl std::io::Read for Pieces {
        fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
            assert!(dst.len() <= READ_CHUNK, "asked for more than one chunk");
            if self.data.is_empty() {
                return match self.then {
                    Some(kind) => Err(kind.into()),
                    None => Ok(0),
                };
            }
            let size = self.sizes.get(self.calls).copied().unwrap_or(usize::MAX);
            self.calls += 1;
            let n = size.min(dst.len()).min(self.data.len());
            dst[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn read_from_takes_odd_pieces_straight_into_lines() {
        let mut data = b"one\r\ntw".to_vec();
        data.extend_from_slice(b"o\n\xff\xfd\x06three");
        data.extend(vec![b'z'; 5000]);
        data.extend_from_slice(b"\nlast\n");
        let mut src = Pieces {
            data,
            sizes: vec![3, 1, 7, 2, 1, 9000, 4096, 5],
            then: Some(std::io::ErrorKind::WouldBlock),
            calls: 0,
        };
        let mut b = LineBuffer::new();
        let mut got = Vec::new();
        let mut replies = Vec::new();
        loop {
            match b.read_from(&mut src) {
                Ok(n) => {
                    assert!(n > 0 && n <= READ_CHUNK);
                    replies.extend_from_slice(b.telnet_replies());
                    b.clear_telnet_replies();
                    got.extend(frames(&mut b));
                }
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(
            got,
            vec![
                Ok(b"one".to_vec()),
                Ok(b"two".to_vec()),
                Err(()),
                Ok(b"last".to_vec())
            ]
        );
        assert_eq!(replies, b"\xff\xfc\x06");
        // The burst ended with nothing pending: no buffer memory is kept.
        assert!(b.is_empty());
        assert_eq!(b.buf.capacity(), 0);
        assert_eq!(b.sweep(), 0);
    }

    #[test]
    fn read_from_keeps_a_partial_line_across_would_block() {
        let mut b = LineBuffer::new();
        let mut src = Pieces {
            data: b"hal".to_vec(),
            sizes: vec![],
            then: Some(std::io::ErrorKind::WouldBlock),
            calls: 0,
        };
        assert_eq!(b.read_from(&mut src).ok(), Some(3));
        assert!(b.read_from(&mut src).is_err());
        assert_eq!(frames(&mut b), vec![]);
        assert!(
            b.buf.capacity() < READ_CHUNK,
            "the read room was not given back"
        );
        // A partial line is pending: a sweep keeps it.
        assert_eq!(b.sweep(), 0);
        src.data = b"o\n".to_vec();
        assert_eq!(b.read_from(&mut src).ok(), Some(2));
        assert_eq!(frames(&mut b), vec![Ok(b"halo".to_vec())]);
    }

    #[test]
    fn read_from_reports_end_of_stream() {
        let mut b = LineBuffer::new();
        let mut src = Pieces {
            data: b"bye".to_vec(),
            sizes: vec![],
            then: None,
            calls: 0,
        };
        assert_eq!(b.read_from(&mut src).ok(), Some(3));
        assert_eq!(b.read_from(&mut src).ok(), Some(0));
        assert_eq!(frames(&mut b), vec![]);
        assert_eq!(b.take_unterminated(), Some(Frame::Line(b"bye")));
        assert!(b.is_empty());
    }

    #[test]
    fn extend_and_read_from_mix() {
        let mut b = LineBuffer::new();
        b.extend(b"ab");
        let mut src = Pieces {
            data: b"c\nd".to_vec(),
            sizes: vec![],
            then: Some(std::io::ErrorKind::WouldBlock),
            calls: 0,
        };
        assert_eq!(b.read_from(&mut src).ok(), Some(3));
        b.extend(b"e\n");
        assert_eq!(
            frames(&mut b),
            vec![Ok(b"abc".to_vec()), Ok(b"de".to_vec())]
        );
    }
}
