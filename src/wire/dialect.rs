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
use crate::wire::framing::{Frame, LineBuffer};
use crate::wire::line;
use crate::wire::protocol::Lang;

/// A connection's dialect.
#[derive(Debug)]
pub enum Dialect {
    /// The seed's protocol: one command per line, replies from the catalogue.
    Line,
}

impl Dialect {
    /// How many kinds there are: the size of a per-kind render cache.
    pub const KINDS: usize = 1;

    /// This dialect's index among [`KINDS`](Self::KINDS).
    #[inline]
    pub fn kind(&self) -> usize {
        match self {
            Dialect::Line => 0,
        }
    }

    /// Appends `event` as this dialect says it.
    #[inline]
    pub fn render(&self, lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
        match self {
            Dialect::Line => line::render(lang, event, out),
        }
    }

    /// Appends a broadcast (an event that reads the same for every reader:
    /// a chat message, an offline notice) as dialect `kind` says it, without
    /// a connection at hand: broadcasts are rendered once per kind.
    #[inline]
    pub fn render_broadcast(kind: usize, lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
        match kind {
            0 => line::render(lang, event, out),
            _ => debug_assert!(false, "no dialect of kind {kind}"),
        }
    }

    /// Hands the buffered lines to the core, in order, until it says to wait
    /// or none are left. `at_eof`: the peer has closed its side, so a last
    /// line without its `\n` counts too.
    pub fn feed(
        &mut self,
        id: ConnId,
        lines: &mut LineBuffer,
        at_eof: bool,
        chat: &mut Chat,
        now: Instant,
        out: &mut impl Outbox,
    ) -> Flow {
        match self {
            Dialect::Line => loop {
                let frame = match lines.next_frame() {
                    Some(frame) => frame,
                    None if at_eof => match lines.take_unterminated() {
                        Some(frame) => frame,
                        None => return Flow::Ready,
                    },
                    None => return Flow::Ready,
                };
                let flow = match frame {
                    Frame::Line(line) => chat.line(id, line, now, out),
                    Frame::TooLong => chat.too_long(id, out),
                };
                if flow != Flow::Ready {
                    return flow;
                }
            },
        }
    }
}
