//! Where the core's words go: the [`Outbox`] the loop hands the core, the
//! per-turn [`Batch`] of broadcasts, and the output accounting (the 1 MiB
//! rule per reader, `--max-output-mb` for all).

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use log::{error, warn};
use slab::Slab;

use super::MAX_OUTPUT;
use super::connection::{Connection, Phase};
use crate::core::chat::{Audience, AuthJob, ConnId, Event, HistoryDone, HistoryJob, Outbox};
use crate::store::accounts::AuthWorker;
use crate::store::history::HistoryWriter;
use crate::transport::{Transport, web};
use crate::wire::dialect::Dialect;
use crate::wire::protocol::Lang;

/// Lists of connections the turn must come back to, and the output totals.
#[derive(Debug, Default)]
pub(super) struct Queues {
    /// Connections with output to flush at the end of this turn: replies,
    /// private lines, closes.
    pub(super) flush: Vec<usize>,
    /// Connections with broadcast output only, flushed a slice per turn
    /// ([`FANOUT_SLICE`]) so that one broadcast to thousands of
    /// readers does not hold up everyone else's replies for its whole
    /// length: the loop reads and answers between slices.
    pub(super) fanout: VecDeque<usize>,
    /// How many connections were ever put on `fanout`, and taken off it: a
    /// broadcaster waits until everyone queued up to its broadcast is taken.
    pub(super) fanout_pushed: u64,
    pub(super) fanout_popped: u64,
    /// Connections over an output limit, to drop at the end of this turn.
    pub(super) doomed: Vec<usize>,
    /// Connections that used up their read budget with input left.
    pub(super) unread: Vec<usize>,
    /// Pending output of every connection not doomed.
    pub(super) total_output: usize,
    pub(super) max_total_output: usize,
}

/// The part of the server the core writes into: connections, queues, the auth
/// worker. Split from [`Server`] so the core can borrow it while the server
/// holds the core.
pub(super) struct Io {
    pub(super) conns: Slab<Connection>,
    pub(super) queues: Queues,
    pub(super) lang: Lang,
    /// Connections the core asked to close during the current call; the shell
    /// then calls [`Chat::disconnect`] for each (the call protocol).
    pub(super) close_requests: Vec<ConnId>,
    pub(super) worker: AuthWorker,
    /// The history writer; `None` with `--history none`.
    pub(super) history: Option<HistoryWriter>,
    /// Store jobs the writer could not take, answered as failed at the end
    /// of the turn.
    pub(super) history_failed: Vec<HistoryDone>,
    /// Scratch for rendering one event sent to one connection.
    pub(super) rendered: Vec<u8>,
    /// Open connections of each dialect kind: broadcasts are rendered for
    /// the kinds present.
    pub(super) open_by_kind: [usize; Dialect::KINDS],
    pub(super) batch: Batch,
    /// Broadcasts gathered so far: the loop compares it around a feed to
    /// learn whether the connection broadcast.
    pub(super) broadcasts: u64,
}

/// The broadcasts of a turn to one audience, gathered so that each reader
/// gets them in one piece: a plain-TCP reader that is caught up shares one
/// copy of them (no copy of its own at all) and writes it in one `write`;
/// any other reader gets its own copy. Several senders' lines of one turn go
/// into one batch; each sender's copy leaves out its own lines.
///
/// Delivered before anything else is said to anyone (a reply, a private
/// message, a close), before a broadcast to another audience, and before
/// the turn's output is written, so every reader sees everything in order.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The audience version of what is gathered; `None` when empty.
    pub(super) version: Option<u64>,
    pub(super) audience: Vec<ConnId>,
    /// What is gathered, as each dialect kind says it.
    pub(super) rendered: [Vec<u8>; Dialect::KINDS],
    /// Each message's sender, and where the message lies in each kind's
    /// rendering: the sender's copy leaves it out.
    pub(super) senders: Vec<(ConnId, [Range<usize>; Dialect::KINDS])>,
    /// The shared renderings of the last few batches, newest last: once
    /// every reader has written one, its allocation serves a new batch.
    /// Several, because readers are written a slice per turn and may still
    /// hold the last one or two.
    pub(super) spent: [Vec<Rc<Vec<u8>>>; Dialect::KINDS],
}

/// How many spent renderings per dialect kind are kept for reuse.
const SPENT_KEPT: usize = 4;

/// Past this many bytes, a batch is delivered at once: it bounds the memory
/// a batch holds and how late its first line is.
pub(super) const MAX_BATCH: usize = 64 * 1024;

/// How long a turn writes readers waiting for broadcasts, once a round is
/// sliced. A loopback `write` that wakes a reader costs a few microseconds,
/// so this is a dozen or two readers: that, not a whole broadcast to
/// thousands, is how long a private line can wait behind a broadcast.
pub(super) const FANOUT_SLICE: std::time::Duration = std::time::Duration::from_micros(50);

/// A round of at most this many readers is written in one turn: a few
/// hundred microseconds, and slicing it would cost more polls (about a
/// fifth more CPU per delivery at full rate to 100 readers) than a private
/// line would gain.
pub(super) const FANOUT_WHOLE_ROUND: usize = 128;

/// Queues one rendered message for `conn`, enforcing the per-reader limit,
/// and puts it on this turn's flush list.
#[inline(always)]
pub(super) fn queue(key: usize, conn: &mut Connection, message: &[u8], queues: &mut Queues) {
    if enqueue(key, conn, message, queues) {
        queues.flush_this_turn(key, conn);
    }
}

/// Queues one rendered message for `conn`, enforcing the per-reader limit;
/// false if that doomed the reader. The hot path of every delivery: kept
/// small so it inlines into the loops.
#[inline(always)]
pub(super) fn enqueue(
    key: usize,
    conn: &mut Connection,
    message: &[u8],
    queues: &mut Queues,
) -> bool {
    if conn.pending() + message.len() > MAX_OUTPUT {
        return enqueue_behind(key, conn, message, queues);
    }
    encode(conn, message, queues);
    true
}

/// Encodes `message` into `conn`'s output.
#[inline(always)]
fn encode(conn: &mut Connection, message: &[u8], queues: &mut Queues) {
    // A transport's `encode` adds exactly `message.len()` to what is
    // pending (see `Transport::encode`).
    conn.transport.encode(message, &mut conn.out);
    queues.total_output += message.len();
}

/// One write of what `conn` has pending, outside the turn's flushing (for
/// a reader about to pass its output limit). A write error shows again, and
/// is handled, when the connection is flushed.
#[inline(never)]
fn write_ahead(conn: &mut Connection, queues: &mut Queues) {
    // Sealing can grow what is pending (TLS record headers and tags), so
    // account by the difference, not by the bytes written.
    let before = conn.pending();
    let _ = conn.transport.write(&mut conn.socket, &mut conn.out);
    queues.total_output = queues.total_output - before + conn.pending();
}

impl Queues {
    /// Puts `conn` on the list flushed in full at the end of this turn.
    #[inline(always)]
    pub(super) fn flush_this_turn(&mut self, key: usize, conn: &mut Connection) {
        if !conn.queued_flush {
            conn.queued_flush = true;
            self.flush.push(key);
        }
    }

    /// Puts `conn` on the list of broadcast readers written a slice per
    /// turn.
    #[inline(always)]
    pub(super) fn flush_in_turn(&mut self, key: usize, conn: &mut Connection) {
        if !conn.queued_fanout {
            conn.queued_fanout = true;
            self.fanout.push_back(key);
            self.fanout_pushed += 1;
        }
    }
}

/// [`enqueue`] for a reader with nearly 1 MiB pending: one write attempt,
/// then it is either queued or doomed.
#[cold]
#[inline(never)]
fn enqueue_behind(key: usize, conn: &mut Connection, message: &[u8], queues: &mut Queues) -> bool {
    // Only a reader that cannot take what is already pending is behind; one
    // that reads has had no chance yet this turn. A write error shows again,
    // and is handled, when the turn flushes.
    write_ahead(conn, queues);
    if conn.pending() + message.len() > MAX_OUTPUT {
        warn!(
            "{}: more than {MAX_OUTPUT} bytes of output pending, disconnecting a reader that is too slow",
            conn.peer
        );
        doom(key, conn, queues);
        return false;
    }
    encode(conn, message, queues);
    true
}

/// Marks a connection to be dropped at the end of the turn; its output no
/// longer counts.
pub(super) fn doom(key: usize, conn: &mut Connection, queues: &mut Queues) {
    if conn.phase != Phase::Doomed {
        queues.total_output -= conn.pending();
        conn.phase = Phase::Doomed;
        queues.doomed.push(key);
    }
}

impl Io {
    /// Delivers the gathered broadcasts to each reader of their audience. A
    /// plain-TCP reader with nothing pending shares one copy of them; the
    /// others get their own; a sender gets its own without its lines.
    pub(super) fn deliver_batch(&mut self) {
        if self.batch.version.take().is_none() {
            return;
        }
        // The renderings move into shared buffers, uncopied; the buffers of
        // the last batch come back for this one's successor if every reader
        // has written them.
        let shared: [Option<Rc<Vec<u8>>>; Dialect::KINDS] = std::array::from_fn(|kind| {
            let rendered = &mut self.batch.rendered[kind];
            if rendered.is_empty() {
                return None;
            }
            let spent = &mut self.batch.spent[kind];
            let recycled = match spent.iter().position(|b| Rc::strong_count(b) == 1) {
                Some(i) => {
                    let mut bytes = Rc::try_unwrap(spent.remove(i)).unwrap_or_default();
                    bytes.clear();
                    bytes
                }
                None => Vec::with_capacity(rendered.capacity()),
            };
            Some(Rc::new(std::mem::replace(rendered, recycled)))
        });
        // The batch as WebSocket frames, made once if a browser needs it.
        let mut framed: [Option<Rc<Vec<u8>>>; Dialect::KINDS] = Default::default();
        for &id in &self.batch.audience {
            let Some(conn) = self.conns.get_mut(id.key()) else {
                continue;
            };
            if conn.id != id || conn.phase == Phase::Doomed {
                continue;
            }
            let kind = conn.dialect.kind();
            let Some(bytes) = &shared[kind] else {
                continue;
            };
            let key = id.key();
            let queued = if conn.sent_in_batch {
                conn.sent_in_batch = false;
                let own_run = own_run(kind, id, &self.batch.senders);
                if let Some(run) = own_run
                    && conn.out.is_empty()
                    && matches!(conn.transport, Transport::Plain)
                    && bytes.len() - run.len() <= MAX_OUTPUT
                {
                    // What others said before its lines is shared; only
                    // what came after is copied.
                    conn.out.share_part(bytes, 0..run.start);
                    self.queues.total_output += run.start;
                    if run.end < bytes.len() {
                        encode(conn, &bytes[run.end..], &mut self.queues);
                    }
                    conn.out.pending() > 0
                } else {
                    let own = without_own_lines(bytes, kind, id, &self.batch.senders);
                    !own.is_empty() && enqueue(key, conn, &own, &mut self.queues)
                }
            } else if conn.out.can_share() && matches!(conn.transport, Transport::Plain) {
                conn.out.share(bytes);
                self.queues.total_output += bytes.len();
                true
            } else if conn.out.is_empty() && conn.transport.share(bytes) {
                // A TLS reader that is caught up: rustls reads the shared
                // batch when sealing.
                self.queues.total_output += bytes.len();
                true
            } else if conn.out.can_share() && conn.transport.takes_framed() {
                // Browsers share one framing of the batch, made for the
                // first of them: a caught-up one, and (as a plain reader
                // does) one still holding earlier shared batches, which a
                // round written a slice per turn leaves behind.
                let framed = framed[kind].get_or_insert_with(|| {
                    let mut wire = Vec::new();
                    web::frame_lines(bytes, &mut wire);
                    Rc::new(wire)
                });
                conn.out.share(framed);
                self.queues.total_output += framed.len();
                true
            } else {
                enqueue(key, conn, bytes, &mut self.queues)
            };
            if queued {
                self.queues.flush_in_turn(key, conn);
            }
            if self.queues.total_output > self.queues.max_total_output {
                shed(&mut self.conns, &mut self.queues);
            }
        }
        for (kind, bytes) in shared.into_iter().enumerate() {
            if let Some(bytes) = bytes {
                let spent = &mut self.batch.spent[kind];
                if spent.len() == SPENT_KEPT {
                    spent.remove(0);
                }
                spent.push(bytes);
            }
        }
        // Senders outside the audience (one that just went offline).
        for (id, _) in &self.batch.senders {
            if let Some(conn) = self.conns.get_mut(id.key()) {
                conn.sent_in_batch = false;
            }
        }
        self.batch.audience.clear();
        self.batch.senders.clear();
        for rendered in &mut self.batch.rendered {
            rendered.clear();
        }
    }
}

/// Where a sender's messages lie in a batch, if they form one unbroken run
/// (the usual case: one read's lines are fed in one go).
pub(super) fn own_run(
    kind: usize,
    sender: ConnId,
    senders: &[(ConnId, [Range<usize>; Dialect::KINDS])],
) -> Option<Range<usize>> {
    let mut run: Option<Range<usize>> = None;
    for (id, ranges) in senders {
        if *id == sender {
            let range = ranges[kind].clone();
            run = match run {
                None => Some(range),
                Some(r) if r.end == range.start => Some(r.start..range.end),
                Some(_) => return None,
            };
        }
    }
    run
}

/// A sender's copy of a batch: everything but the messages it sent.
#[cold]
pub(super) fn without_own_lines(
    bytes: &[u8],
    kind: usize,
    sender: ConnId,
    senders: &[(ConnId, [Range<usize>; Dialect::KINDS])],
) -> Vec<u8> {
    let mut own = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for (id, ranges) in senders {
        if *id == sender {
            let range = &ranges[kind];
            own.extend_from_slice(&bytes[from..range.start]);
            from = range.end;
        }
    }
    own.extend_from_slice(&bytes[from..]);
    own
}

/// Keeps all output under `--max-output-mb`: dooms the readers furthest
/// behind until the total is back under seven eighths of the limit (the
/// headroom saves a scan of every connection on the next message).
#[cold]
pub(super) fn shed(conns: &mut Slab<Connection>, queues: &mut Queues) {
    let target = queues.max_total_output / 8 * 7;
    while queues.total_output > target {
        let Some((key, _)) = conns
            .iter()
            .filter(|(_, c)| c.phase != Phase::Doomed)
            .max_by_key(|(_, c)| c.pending())
        else {
            return;
        };
        let conn = &mut conns[key];
        warn!(
            "{}: all output buffers together over {} bytes, disconnecting the reader furthest behind ({} bytes pending)",
            conn.peer,
            queues.max_total_output,
            conn.pending()
        );
        doom(key, conn, queues);
    }
}

impl Outbox for Io {
    fn send(&mut self, to: ConnId, event: Event<'_>) {
        self.deliver_batch();
        let lang = self.lang;
        let Some(conn) = self
            .conns
            .get_mut(to.key())
            .filter(|c| c.id == to && c.phase != Phase::Doomed)
        else {
            return;
        };
        self.rendered.clear();
        conn.dialect.render(lang, &event, &mut self.rendered);
        queue(to.key(), conn, &self.rendered, &mut self.queues);
        if self.queues.total_output > self.queues.max_total_output {
            shed(&mut self.conns, &mut self.queues);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.deliver_batch();
        self.close_requests.push(conn);
    }

    fn submit(&mut self, job: AuthJob) {
        self.worker.submit(job);
    }

    /// No output is involved, so gathered broadcasts stay gathered: a
    /// broadcast kept for `--replay` costs no extra copy per reader.
    fn store(&mut self, job: HistoryJob) {
        match &self.history {
            Some(writer) => {
                if let Some(failed) = writer.submit(job) {
                    self.history_failed.push(failed);
                }
            }
            None => error!("a history job without a history writer"),
        }
    }

    fn deliver_gathered(&mut self) {
        self.deliver_batch();
    }

    fn broadcast(&mut self, to: Audience<'_>, except: ConnId, event: Event<'_>) {
        if !(0..Dialect::KINDS)
            .any(|kind| self.open_by_kind[kind] > 0 && Dialect::says_broadcast(kind, &event))
        {
            // Nobody present says anything for it (a login, with no IRC
            // reader): not even a pass over the audience.
            return;
        }
        if self.batch.version != Some(to.version) {
            self.deliver_batch();
            self.batch.version = Some(to.version);
            self.batch.audience.extend_from_slice(to.conns);
        }
        let mut ranges: [Range<usize>; Dialect::KINDS] = std::array::from_fn(|_| 0..0);
        for (kind, rendered) in self.batch.rendered.iter_mut().enumerate() {
            if self.open_by_kind[kind] > 0 {
                let start = rendered.len();
                Dialect::render_broadcast(kind, self.lang, &event, rendered);
                ranges[kind] = start..rendered.len();
            }
        }
        if let Some(conn) = self.conns.get_mut(except.key())
            && conn.id == except
        {
            conn.sent_in_batch = true;
        }
        self.batch.senders.push((except, ranges));
        self.broadcasts += 1;
        if self.batch.rendered.iter().any(|r| r.len() > MAX_BATCH) {
            self.deliver_batch();
        }
    }
}
