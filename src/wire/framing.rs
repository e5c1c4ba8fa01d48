//! Bytes in, lines out.
//!
//! TCP is a byte stream: one `read` may hold half a line or fifty lines. The
//! [`LineBuffer`] of each connection collects the bytes and hands out whole lines
//! one at a time, so the server can stop taking lines from a connection whose
//! previous line is still waiting on slow work (password hashing) without losing
//! or reordering anything. [`clean_line`] then turns a raw line into the text the
//! chat core sees: telnet commands dropped, UTF-8 decoded lossily, control
//! characters removed, so no user can send an escape sequence to another's
//! terminal.

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

/// Splits a connection's byte stream into lines, enforcing [`MAX_LINE`].
///
/// Bytes go in with [`extend`](Self::extend) and lines come out with
/// [`next_frame`](Self::next_frame). The buffer never holds more than one line
/// in progress plus what was read in one chunk, because the server stops reading
/// while lines are still waiting.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset were already handed out.
    start: usize,
    /// Inside an over-long line: drop bytes up to and including the next `\n`.
    discarding: bool,
}

impl LineBuffer {
    /// An empty buffer; allocates nothing until bytes arrive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Move the unfinished tail to the front before growing, so the
            // buffer stays about one line long however long the connection lives.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True when no bytes are waiting (a partial line counts as waiting).
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The next complete line or over-long report, if the buffered bytes hold one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let pending = &self.buf[self.start..];
            let newline = pending.iter().position(|&b| b == b'\n');
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
                    let mut line = &self.buf[begin..begin + at];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
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
        self.start = self.buf.len();
        let mut line = &self.buf[begin..];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
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

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.release_if_drained();
    }

    fn release_if_drained(&mut self) {
        if self.is_empty() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
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
/// controls except TAB, DEL, and C1 controls.
pub fn is_forbidden_control(c: char) -> bool {
    c != '\t' && c.is_control()
}

/// Turns a raw line into clean text: telnet sequences removed, UTF-8 decoded
/// lossily, control characters removed. Trimming is left to the caller, which
/// needs the untrimmed text to find where a `send-to` message begins. A line
/// that is already clean (nearly every line) is borrowed, not copied.
pub fn clean_line(raw: &[u8]) -> Cow<'_, str> {
    // Fast path for the common line: printable ASCII (and TAB) needs nothing
    // removed and is valid UTF-8 as it is.
    if raw.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
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

fn remove_controls(text: Cow<'_, str>) -> Cow<'_, str> {
    if text.chars().any(is_forbidden_control) {
        Cow::Owned(text.chars().filter(|&c| !is_forbidden_control(c)).collect())
    } else {
        text
    }
}

/// `line` without its line end: drops a trailing `\n` and one `\r` right
/// before it, so CRLF and LF input read the same.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n'] => rest,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
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
}
