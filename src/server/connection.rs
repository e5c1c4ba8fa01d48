//! One client connection as the event loop sees it.

use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::core::chat::ConnId;
use crate::core::limits::TokenBucket;
use crate::transport::Transport;
use crate::transport::output::OutputBuffer;
use crate::wire::dialect::Dialect;
use crate::wire::framing::LineBuffer;

/// Where a connection is in its life. Each phase excludes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Lines are read and fed to the core as they arrive.
    Open,
    /// The core is working on this connection's last line (a password hash):
    /// its next bytes wait in the kernel, so replies keep the order of lines.
    Held,
    /// Over its flood allowance (SPEC section 7): neither fed nor read until
    /// the loop's timer for it fires, so its lines wait, in order, in our
    /// buffer, the kernel's and the client's.
    Paused,
    /// Its last broadcast is still being written to its readers (a slice
    /// per turn): neither fed nor read until every reader has been written,
    /// so a sender at full speed has one round of broadcasts in flight, not
    /// a backlog in every reader's buffer. Its lines wait as in `Paused`.
    Broadcasting,
    /// The server is closing it and the core has forgotten it: what is
    /// queued is flushed, then the write side is shut and input discarded
    /// until the peer closes or the linger time ends.
    Closing,
    /// Over an output limit: dropped at the end of the turn, unflushed.
    Doomed,
}

/// A client connection: its socket, its door (transport and dialect), and its
/// buffers in each direction.
#[derive(Debug)]
pub struct Connection {
    pub id: ConnId,
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    /// The peer has closed its sending side. Lines it sent before are still
    /// answered (SPEC section 1: `nc -N`).
    pub peer_eof: bool,
    /// Flood control: a token per line.
    pub bucket: TokenBucket,
    pub transport: Transport,
    pub dialect: Dialect,
    pub lines: LineBuffer,
    pub out: OutputBuffer,
    /// On the loop's list of connections to flush at the end of this turn.
    pub queued_flush: bool,
    /// On the loop's list of broadcast readers written a slice per turn.
    pub queued_fanout: bool,
    /// On the loop's list of connections to read again next turn (its read
    /// budget ran out with input left).
    pub queued_read: bool,
    /// WRITABLE interest is registered (only while output is pending).
    pub writable_interest: bool,
    /// It sent a broadcast of the batch being gathered: its copy of the
    /// batch leaves that out.
    pub sent_in_batch: bool,
    /// The core knows this connection: true from `connect` until the shell
    /// calls `disconnect`, which it does exactly once.
    pub in_core: bool,
}

impl Connection {
    /// A new connection through the given door.
    pub fn new(
        id: ConnId,
        socket: TcpStream,
        peer: SocketAddr,
        transport: Transport,
        dialect: Dialect,
        bucket: TokenBucket,
    ) -> Self {
        Self {
            id,
            socket,
            peer,
            phase: Phase::Open,
            peer_eof: false,
            bucket,
            transport,
            dialect,
            lines: LineBuffer::new(),
            out: OutputBuffer::default(),
            queued_flush: false,
            queued_fanout: false,
            queued_read: false,
            writable_interest: false,
            sent_in_batch: false,
            in_core: true,
        }
    }

    /// Output accepted for this connection and not yet written: the output
    /// buffer plus what the transport has staged. Every output limit and the
    /// server-wide total count this.
    #[inline]
    pub fn pending(&self) -> usize {
        self.out.pending() + self.transport.staged()
    }
}
