//! How a connection's bytes travel: the transport seam.
//!
//! Every door of the chat has a transport (how bytes cross the socket: plain
//! TCP, TLS, or the browser's HTTP and WebSocket) and a dialect (what the
//! bytes mean: [`crate::wire::dialect`]). The event loop calls the four
//! methods of [`Transport`] (read, encode, write, start_close) and a few
//! questions (staged, is_handshaking, takes_framed, sweep), so a new door is
//! a new variant here and a file beside this one, not new branches in the
//! loop.
//!
//! A transport works on the connection's own buffers: what it decodes goes into
//! the connection's [`LineBuffer`], what it encodes into its
//! [`OutputBuffer`]. So the 1 MiB slow-reader rule, the order of replies and
//! the read budget hold for every transport alike. A transport may hold back
//! output for a moment (TLS stages a turn's plaintext to seal it into one
//! record; the browser door frames a turn's lines when the connection is
//! flushed): [`Transport::staged`] says how much, and it counts as pending.
//! Since encoding can change the size of what is pending (record headers and
//! tags, frame headers), the loop accounts for output by comparing pending
//! bytes before and after each call, never by the bytes a call reports.

pub mod output;
pub mod tls;
pub mod web;

use std::io::{self, Read, Write};
use std::rc::Rc;

use self::output::OutputBuffer;
use crate::wire::framing::LineBuffer;

/// A connection's transport.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they are: the seed's TCP, `nc`, `telnet`.
    Plain,
    /// TLS 1.2/1.3 (SPEC section 8.1). Boxed: rustls's state is large, and
    /// plain connections must not grow by it.
    Tls(Box<tls::TlsTransport>),
    /// The browser door (SPEC section 8.2): an HTTP request, then the page or
    /// a WebSocket. Boxed: plain connections must not grow by its state.
    Web(Box<web::WebTransport>),
}

impl Transport {
    /// Reads what the socket has, once, and puts the decoded bytes into
    /// `lines`. Bytes the transport must answer by itself (a handshake, a
    /// pong) go into `out`. Returns the bytes taken off the socket; `Ok(0)`
    /// when the peer has closed its side. `WouldBlock` passes through.
    /// `InvalidData`: the connection is over at this layer (a failed TLS
    /// handshake, an HTTP answer, a WebSocket close frame); what says so is
    /// in `out`, and the connection should be closed after it is flushed.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        lines: &mut LineBuffer,
        out: &mut OutputBuffer,
    ) -> io::Result<usize> {
        match self {
            Transport::Plain => lines.read_from(socket),
            Transport::Tls(tls) => tls.read(socket, lines, out),
            Transport::Web(web) => web.read(socket, lines, out),
        }
    }

    /// Queues one message of the dialect (a line, or a prompt) for the peer.
    /// It adds exactly `message.len()` to what is pending (`out.pending()`
    /// plus [`staged`](Self::staged)), which the loop's accounting of output
    /// relies on: a transport whose wire form differs in size (TLS records,
    /// WebSocket frames) stages the message and encodes it in
    /// [`write`](Self::write).
    #[inline]
    pub fn encode(&mut self, message: &[u8], out: &mut OutputBuffer) {
        match self {
            Transport::Plain => out.push(message),
            Transport::Tls(tls) => tls.encode(message),
            Transport::Web(web) => web.encode(message),
        }
    }

    /// Output accepted by [`encode`](Self::encode) but not yet in the
    /// output buffer (TLS's staged plaintext). Pending output is this plus
    /// what the buffer holds.
    #[inline]
    pub fn staged(&self) -> usize {
        match self {
            Transport::Plain => 0,
            Transport::Tls(tls) => tls.staged(),
            Transport::Web(web) => web.staged(),
        }
    }

    /// The connection takes broadcasts already framed for its kind of
    /// transport ([`web::frame_lines`]) as they are, shared with other
    /// readers: a WebSocket that is open with nothing staged.
    #[inline]
    pub fn takes_framed(&self) -> bool {
        match self {
            Transport::Plain | Transport::Tls(_) => false,
            Transport::Web(web) => web.takes_framed(),
        }
    }

    /// Takes a turn's broadcasts shared with other readers, uncopied, if the
    /// transport can (TLS with nothing staged); adds exactly `batch.len()`
    /// to what is pending, like [`encode`](Self::encode). False: it did not,
    /// and the caller encodes a copy.
    #[inline]
    pub fn share(&mut self, batch: &Rc<Vec<u8>>) -> bool {
        match self {
            Transport::Tls(tls) => tls.share(batch),
            Transport::Plain | Transport::Web(_) => false,
        }
    }

    /// The connection cannot carry chat yet (a TLS handshake, or a request
    /// head, is under way): the loop closes it if that lasts too long.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(tls) => tls.is_handshaking(),
            Transport::Web(web) => web.is_handshaking(),
        }
    }

    /// Frees what the transport holds for an idle connection; returns the
    /// bytes freed. Called with the output buffers' periodic sweep.
    pub fn sweep(&mut self) -> usize {
        match self {
            Transport::Plain => 0,
            Transport::Tls(tls) => tls.sweep(),
            Transport::Web(web) => web.sweep(),
        }
    }

    /// Writes what `out` holds (after sealing or framing what is staged) as far as the
    /// socket takes it now. Returns the bytes written to the socket.
    pub fn write(&mut self, socket: &mut impl Write, out: &mut OutputBuffer) -> io::Result<usize> {
        match self {
            Transport::Plain => out.write_to(socket),
            Transport::Tls(tls) => tls.write(socket, out),
            Transport::Web(web) => web.write(socket, out),
        }
    }

    /// The server is closing the connection: queue whatever says goodbye at
    /// this layer (nothing for plain TCP; TLS sends `close_notify`; the
    /// browser door a WebSocket close frame, or an HTTP answer to a request
    /// not yet answered).
    pub fn start_close(&mut self, out: &mut OutputBuffer) {
        match self {
            Transport::Plain => {}
            Transport::Tls(tls) => tls.start_close(out),
            Transport::Web(web) => web.start_close(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::Frame;

    #[test]
    fn plain_passes_bytes_both_ways_unchanged() {
        let mut transport = Transport::Plain;
        let mut lines = LineBuffer::new();
        let mut out = OutputBuffer::default();
        let mut input: &[u8] = b"login a b\nhalo";
        assert_eq!(
            transport.read(&mut input, &mut lines, &mut out).unwrap(),
            14
        );
        assert_eq!(lines.next_frame(), Some(Frame::Line(b"login a b")));
        assert_eq!(lines.next_frame(), None);
        assert_eq!(transport.read(&mut input, &mut lines, &mut out).unwrap(), 0);
        transport.encode(b"Login sukses\n", &mut out);
        transport.start_close(&mut out);
        let mut sink = Vec::new();
        assert_eq!(transport.write(&mut sink, &mut out).unwrap(), 13);
        assert_eq!(sink, b"Login sukses\n");
    }
}
