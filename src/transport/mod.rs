//! How a connection's bytes travel: the transport seam.
//!
//! Every door of the chat has a transport (how bytes cross the socket: plain
//! TCP today; TLS and WebSocket next) and a dialect (what the bytes mean:
//! [`crate::wire::dialect`]). The event loop only ever calls the four methods
//! of [`Transport`], so a new door is a new variant here and a file beside
//! this one, not new branches in the loop.
//!
//! A transport works on the connection's own buffers: what it decodes goes into
//! the connection's [`LineBuffer`], what it encodes into its
//! [`OutputBuffer`]. So the 1 MiB slow-reader rule, the order of replies and
//! the read budget hold for every transport alike.

use std::io::{self, Read, Write};

use crate::server::output::OutputBuffer;
use crate::wire::framing::LineBuffer;

/// A connection's transport.
#[derive(Debug)]
pub enum Transport {
    /// Bytes as they are: the seed's TCP, `nc`, `telnet`.
    Plain,
}

impl Transport {
    /// Reads what the socket has, once, and puts the decoded bytes into
    /// `lines`. Bytes the transport must answer by itself (a handshake, a
    /// pong) go into `out`. Returns the bytes taken off the socket; `Ok(0)`
    /// when the peer has closed its side. `WouldBlock` passes through.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        lines: &mut LineBuffer,
        _out: &mut OutputBuffer,
    ) -> io::Result<usize> {
        match self {
            Transport::Plain => lines.read_from(socket),
        }
    }

    /// Queues one message of the dialect (a line, or a prompt) for the peer.
    /// It adds exactly `message.len()` to `out.pending()`, which the loop's
    /// accounting of output relies on: a transport whose wire form differs
    /// in size stages the message and encodes it in [`write`](Self::write).
    #[inline]
    pub fn encode(&mut self, message: &[u8], out: &mut OutputBuffer) {
        match self {
            Transport::Plain => out.push(message),
        }
    }

    /// Writes what `out` holds as far as the socket takes it now. Returns
    /// the bytes of `out` consumed.
    pub fn write(&mut self, socket: &mut impl Write, out: &mut OutputBuffer) -> io::Result<usize> {
        match self {
            Transport::Plain => out.write_to(socket),
        }
    }

    /// The server is closing the connection: queue whatever says goodbye at
    /// this layer (nothing for plain TCP; TLS sends `close_notify`).
    pub fn start_close(&mut self, _out: &mut OutputBuffer) {
        match self {
            Transport::Plain => {}
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
