//! What a connection's bytes mean: the dialect seam.
//!
//! A dialect turns the lines a transport decoded into calls on the chat core,
//! and the core's typed [`Event`]s back into bytes. The seed's line protocol is
//! the only one today; IRC is next. The event loop calls [`Dialect::feed`] and
//! [`Dialect::render`] and nothing else, so a new dialect is a new variant and
//! a file beside this one.
//!
//! Rendering depends only on the dialect's kind and the server's language, so
//! a broadcast is rendered once per kind present and copied to every reader of
//! that kind ([`Dialect::kind`] indexes that cache).

use std::time::Instant;

use crate::core::chat::{Chat, ConnId, Event, Flow, Outbox};
use crate::core::limits::TokenBucket;
use std::time::Duration;

use crate::wire::framing::{Frame, LineBuffer};
use crate::wire::irc::{self, Irc, Keepalive};
use crate::wire::line;
use crate::wire::protocol::Lang;

/// A connection's dialect.
#[derive(Debug)]
pub enum Dialect {
    /// The seed's protocol: one command per line, replies from the catalogue.
    Line,
    /// IRC (SPEC 8.3), with the connection's registration state (boxed:
    /// it is far bigger than a line connection's nothing).
    Irc(Box<Irc>),
}

impl Dialect {
    /// How many kinds there are: the size of a per-kind render cache.
    pub const KINDS: usize = 2;

    /// The kind of [`Dialect::Irc`].
    pub const IRC: usize = 1;

    /// A new IRC connection, accepted at `now`.
    pub fn irc(now: Instant) -> Self {
        Dialect::Irc(Box::new(Irc::new(now)))
    }

    /// What stays in the connection while the loop has this dialect out for
    /// a feed: the same kind, so broadcasts delivered meanwhile are said in
    /// the right dialect, without the state (nothing else is rendered by
    /// it: what the core says to the connection then goes to the dialect
    /// itself).
    #[inline]
    pub fn stand_in(&self, now: Instant) -> Self {
        match self {
            Dialect::Line => Dialect::Line,
            Dialect::Irc(_) => Self::irc(now),
        }
    }

    /// This dialect's index among [`KINDS`](Self::KINDS).
    #[inline]
    pub fn kind(&self) -> usize {
        match self {
            Dialect::Line => 0,
            Dialect::Irc(_) => Self::IRC,
        }
    }

    /// Appends `event` as this dialect says it. A dialect may change its
    /// own state as it does (IRC learns here that a login went through).
    #[inline]
    pub fn render(&mut self, lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
        match self {
            Dialect::Line => line::render(lang, event, out),
            Dialect::Irc(irc) => irc.render(lang, event, out),
        }
    }

    /// Whether dialect `kind` says anything at all for this broadcast: the
    /// line protocol has no login notice, so a login costs its readers
    /// nothing (not even a pass over the audience).
    #[inline]
    pub fn says_broadcast(kind: usize, event: &Event<'_>) -> bool {
        !(kind == 0 && matches!(event, Event::Online(_)))
    }

    /// What this connection's dialect rendered while its own lines were
    /// fed (see [`crate::wire::irc`]): the loop queues it after each feed
    /// and hands the emptied buffer back. Always empty for the line
    /// protocol, which the loop renders itself.
    #[inline]
    pub fn take_output(&mut self) -> Vec<u8> {
        match self {
            Dialect::Line => Vec::new(),
            Dialect::Irc(irc) => std::mem::take(irc.output()),
        }
    }

    /// Gives back the buffer of [`take_output`](Self::take_output), emptied,
    /// so its allocation serves the next feed.
    #[inline]
    pub fn restore_output(&mut self, mut buffer: Vec<u8>) {
        if let Dialect::Irc(irc) = self {
            buffer.clear();
            *irc.output() = buffer;
        }
    }

    /// The keepalive check, every few seconds: IRC pings a silent client
    /// and drops one that never answers; the line protocol has TCP
    /// keepalive only.
    pub fn keepalive(&mut self, now: Instant, every: Duration) -> Keepalive {
        match self {
            Dialect::Line => Keepalive::Quiet,
            Dialect::Irc(irc) => irc.keepalive(now, every),
        }
    }

    /// Appends a broadcast (an event that reads the same for every reader:
    /// a chat message, an offline notice) as dialect `kind` says it, without
    /// a connection at hand: broadcasts are rendered once per kind.
    #[inline]
    pub fn render_broadcast(kind: usize, lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
        match kind {
            0 => line::render(lang, event, out),
            Self::IRC => irc::render_broadcast(lang, event, out),
            _ => debug_assert!(false, "no dialect of kind {kind}"),
        }
    }

    /// Hands the buffered lines to the core, in order, until it says to wait,
    /// the connection's flood allowance runs out, or none are left. Each line
    /// takes a token from the input's bucket (SPEC section 7).
    pub fn feed(
        &mut self,
        id: ConnId,
        input: Input<'_>,
        chat: &mut Chat,
        now: Instant,
        out: &mut impl Outbox,
    ) -> Fed {
        let Input {
            lines,
            at_eof,
            bucket,
            lang,
        } = input;
        loop {
            if !bucket.try_take(now) {
                // Over the rate: the rest waits, in order, until a token
                // comes (nothing to wait for if nothing is buffered).
                return match bucket.ready_at(now) {
                    Some(at) if !lines.is_empty() => Fed::Paused(at),
                    _ => Fed::Flow(Flow::Ready),
                };
            }
            let frame = match lines.next_frame() {
                Some(frame) => frame,
                None if at_eof => match lines.take_unterminated() {
                    Some(frame) => frame,
                    None => {
                        bucket.refund();
                        return Fed::Flow(Flow::Ready);
                    }
                },
                None => {
                    bucket.refund();
                    return Fed::Flow(Flow::Ready);
                }
            };
            let flow = match (&mut *self, frame) {
                (Dialect::Line, Frame::Line(line)) => chat.line(id, line, now, out),
                (Dialect::Line, Frame::TooLong) => chat.too_long(id, out),
                (Dialect::Irc(irc), Frame::Line(line)) => irc.line(id, line, chat, now, lang, out),
                (Dialect::Irc(irc), Frame::TooLong) => irc.too_long(id, chat, now, out),
            };
            if flow != Flow::Ready {
                return Fed::Flow(flow);
            }
        }
    }
}

/// A connection's input, as [`Dialect::feed`] takes it.
#[derive(Debug)]
pub struct Input<'a> {
    /// The bytes read and not yet handed out.
    pub lines: &'a mut LineBuffer,
    /// The peer has closed its side: a last line without `\n` counts too.
    pub at_eof: bool,
    /// Flood control: a token per line (SPEC section 7).
    pub bucket: &'a mut TokenBucket,
    /// The server's language, for what a dialect renders while fed.
    pub lang: Lang,
}

/// What came of [`Dialect::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The core's word on the connection (see [`Flow`]).
    Flow(Flow),
    /// Over its flood allowance: feed it again, and read its socket again,
    /// at this instant.
    Paused(Instant),
}
