//! A connection's output: what the server has said and the peer has not read.
//!
//! Redis keeps a reply buffer per client and cuts off clients that fall too far
//! behind; so do we. Appends are plain `extend_from_slice` (a broadcast to a
//! thousand readers is a thousand appends and, at the end of the turn, one
//! `write` each). The allocation is kept while the connection is busy (growing
//! it back every turn would cost a `realloc` and page faults) and released by a
//! periodic sweep once the connection has been idle for a whole sweep period.

use std::io::{self, ErrorKind, Write};
use std::rc::Rc;

/// Behind other pending output, a shared rendering smaller than this is
/// copied rather than held (see `OutputBuffer::share_behind`).
const SHARE_AT_LEAST: usize = 160;

/// How many shared renderings a reader holds at most; the next is copied.
/// TLS's stage holds as many ([`crate::transport::tls`]).
pub const MAX_SHARED: usize = 8;

/// Bytes queued for one peer, with what was already written cut off the front.
///
/// A reader that is caught up (nothing pending) does not copy a broadcast at
/// all: it holds the turn's shared rendering ([`share`](Self::share)) and
/// writes from it; only what comes after, or a reader already behind, is
/// copied into its own bytes. That is most of the cost of a fan-out to many
/// readers that keep up.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    /// Written before `buf`: a rendering shared with other readers, and the
    /// part of it still to write (`start..end`).
    shared: Option<(Rc<Vec<u8>>, usize, usize)>,
    /// Whole renderings shared after `shared`, for a reader not yet written
    /// when the next batch came (readers are written a slice per turn).
    /// Empty, and unallocated, for most readers.
    more: Vec<Rc<Vec<u8>>>,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are already written.
    start: usize,
    /// Something was appended since the last [`sweep`](Self::sweep).
    used: bool,
}

impl OutputBuffer {
    /// Bytes waiting to be written.
    #[inline]
    pub fn pending(&self) -> usize {
        let shared = match &self.shared {
            Some((_, start, end)) => end - start,
            None => 0,
        };
        let more: usize = self.more.iter().map(|b| b.len()).sum();
        shared + more + self.buf.len() - self.start
    }

    /// Nothing waits to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.shared.is_none() && self.start == self.buf.len()
    }

    /// No bytes of its own wait, and there is room for one more shared
    /// rendering: [`share`](Self::share) will not copy.
    #[inline]
    pub fn can_share(&self) -> bool {
        self.start == self.buf.len() && self.more.len() < MAX_SHARED - 1
    }

    /// Queues a rendering shared with other readers, without copying it if
    /// no bytes of its own wait (behind other shared renderings is fine);
    /// otherwise the bytes are appended like any others.
    #[inline(always)]
    pub fn share(&mut self, bytes: &Rc<Vec<u8>>) {
        if self.is_empty() {
            self.share_part(bytes, 0..bytes.len());
        } else {
            self.share_behind(bytes);
        }
    }

    /// [`share`](Self::share) behind what is already pending. A small
    /// rendering is copied all the same: a copy of a line or two costs less
    /// than holding, writing and letting go of one more shared piece.
    #[inline(never)]
    fn share_behind(&mut self, bytes: &Rc<Vec<u8>>) {
        if bytes.len() >= SHARE_AT_LEAST && self.can_share() {
            self.more.push(Rc::clone(bytes));
            self.used = true;
        } else {
            self.push(bytes);
        }
    }

    /// [`share`](Self::share) for the `part` of a shared rendering (a
    /// sender's copy of a batch: what others said before its own lines).
    #[inline(always)]
    pub fn share_part(&mut self, bytes: &Rc<Vec<u8>>, part: std::ops::Range<usize>) {
        if part.is_empty() {
            return;
        }
        if self.is_empty() {
            self.shared = Some((Rc::clone(bytes), part.start, part.end));
            self.used = true;
        } else {
            self.push(&bytes[part]);
        }
    }

    /// Queues bytes. Limits are the caller's business: it knows the reader
    /// and the server-wide total.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.used = true;
    }

    /// The buffer itself, for a transport that encodes straight into it.
    #[inline]
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        self.used = true;
        &mut self.buf
    }

    /// Writes as much as `sink` takes now. Returns the bytes written; stops
    /// without error when the sink would block or everything is written.
    pub fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        if !self.more.is_empty() {
            match self.write_pieces(sink) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.more.is_empty() {
                // The socket took only part: the rest waits for WRITABLE.
                return Ok(written);
            }
        }
        if let Some((bytes, done, end)) = &mut self.shared
            && self.start < self.buf.len()
        {
            // Both parts in one system call, as one buffer would be.
            let parts = [
                io::IoSlice::new(&bytes[*done..*end]),
                io::IoSlice::new(&self.buf[self.start..]),
            ];
            match sink.write_vectored(&parts) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let in_shared = n.min(*end - *done);
                    *done += in_shared;
                    self.start += n - in_shared;
                    written += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        if let Some((bytes, done, end)) = &mut self.shared {
            while *done < *end {
                match sink.write(&bytes[*done..*end]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        *done += n;
                        written += n;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(written),
                    Err(e) => return Err(e),
                }
            }
            self.shared = None;
        }
        while self.start < self.buf.len() {
            match sink.write(&self.buf[self.start..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    written += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.start == self.buf.len() {
            // Keep the allocation for the next turn; the sweep frees it.
            self.buf.clear();
            self.start = 0;
        }
        Ok(written)
    }

    /// One `writev` of every shared rendering and the own bytes; what was
    /// written is cut off the front, the next rendering becoming `shared`.
    fn write_pieces(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut parts: [io::IoSlice<'_>; MAX_SHARED + 1] = [io::IoSlice::new(&[]); MAX_SHARED + 1];
        let mut count = 0;
        if let Some((bytes, done, end)) = &self.shared {
            parts[count] = io::IoSlice::new(&bytes[*done..*end]);
            count += 1;
        }
        for bytes in &self.more {
            parts[count] = io::IoSlice::new(bytes);
            count += 1;
        }
        parts[count] = io::IoSlice::new(&self.buf[self.start..]);
        count += 1;
        let mut n = loop {
            match sink.write_vectored(&parts[..count]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        let written = n;
        loop {
            if let Some((_, done, end)) = &mut self.shared {
                let taken = n.min(*end - *done);
                *done += taken;
                n -= taken;
                if *done < *end {
                    break;
                }
                self.shared = None;
            }
            if self.more.is_empty() {
                self.start += n;
                break;
            }
            let next = self.more.remove(0);
            let len = next.len();
            self.shared = Some((next, 0, len));
        }
        Ok(written)
    }

    /// Called every sweep period: frees the allocation of a buffer that is
    /// empty and received nothing since the last sweep. Returns the bytes
    /// freed.
    pub fn sweep(&mut self) -> usize {
        let idle = !self.used;
        self.used = false;
        if idle && self.pending() == 0 && self.buf.capacity() + self.more.capacity() > 0 {
            let freed = self.buf.capacity() + self.more.capacity() * size_of::<Rc<Vec<u8>>>();
            self.buf = Vec::new();
            self.more = Vec::new();
            self.start = 0;
            freed
        } else {
            0
        }
    }

    /// Bytes of memory held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then would block.
    struct Pipe {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.room).min(3);
            self.taken.extend_from_slice(&bytes[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_pending_counts_down() {
        let mut out = OutputBuffer::default();
        out.push(b"hello ");
        out.push(b"world\n");
        assert_eq!(out.pending(), 12);
        let mut pipe = Pipe {
            taken: Vec::new(),
            room: 7,
        };
        assert_eq!(out.write_to(&mut pipe).unwrap(), 7);
        assert_eq!(out.pending(), 5);
        out.push(b"more\n");
        pipe.room = 100;
        assert_eq!(out.write_to(&mut pipe).unwrap(), 10);
        assert_eq!(pipe.taken, b"hello world\nmore\n");
        assert_eq!(out.pending(), 0);
    }

    #[test]
    fn write_errors_and_zero_writes_are_reported() {
        struct Broken(Option<io::Error>);
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                self.0.take().map_or(Ok(0), Err)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = OutputBuffer::default();
        out.push(b"x");
        let reset = io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(
            out.write_to(&mut Broken(Some(reset))).unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
        assert_eq!(
            out.write_to(&mut Broken(None)).unwrap_err().kind(),
            ErrorKind::WriteZero
        );
        assert_eq!(out.pending(), 1);
    }

    #[test]
    fn a_shared_rendering_is_written_first_and_never_copied() {
        let shared: Rc<Vec<u8>> = Rc::new(b"[a] hi\n[a] ho\n".to_vec());
        let mut out = OutputBuffer::default();
        out.share(&shared);
        assert_eq!(Rc::strong_count(&shared), 2);
        out.push(b"Login sukses\n");
        assert_eq!(out.pending(), 14 + 13);
        // A buffer with something pending copies instead.
        let mut behind = OutputBuffer::default();
        behind.push(b"x\n");
        behind.share(&shared);
        assert_eq!(Rc::strong_count(&shared), 2);
        assert_eq!(behind.pending(), 16);
        let mut pipe = Pipe {
            taken: Vec::new(),
            room: 5,
        };
        assert_eq!(out.write_to(&mut pipe).unwrap(), 5);
        pipe.room = 100;
        assert_eq!(out.write_to(&mut pipe).unwrap(), 22);
        assert_eq!(pipe.taken, b"[a] hi\n[a] ho\nLogin sukses\n");
        assert!(out.is_empty());
        assert_eq!(Rc::strong_count(&shared), 1);
    }

    /// A sink that takes at most `room` bytes per call, vectored or not.
    struct Slow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[io::IoSlice::new(bytes)])
        }
        fn write_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for part in parts {
                let take = part.len().min(self.room - n);
                self.taken.extend_from_slice(&part[..take]);
                n += take;
            }
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn several_shared_renderings_are_written_in_order_whatever_the_socket_takes() {
        let batches: Vec<Rc<Vec<u8>>> = (0..12)
            .map(|i| {
                Rc::new(format!("[a] batch {i} {}\n", "x".repeat(SHARE_AT_LEAST)).into_bytes())
            })
            .collect();
        let mut expected = Vec::new();
        for room in [1, 5, 13, 40, 1000] {
            let mut out = OutputBuffer::default();
            expected.clear();
            for batch in &batches[..3] {
                assert!(out.can_share());
                out.share(batch);
                expected.extend_from_slice(batch);
            }
            assert_eq!(Rc::strong_count(&batches[0]), 2, "shared, not copied");
            let mut sink = Slow {
                taken: Vec::new(),
                room,
            };
            let _ = out.write_to(&mut sink);
            // More renderings while part is written; then own bytes, after
            // which a rendering is copied to keep the order.
            for batch in &batches[3..10] {
                out.share(batch);
                expected.extend_from_slice(batch);
            }
            out.push(b"Login sukses\n");
            expected.extend_from_slice(b"Login sukses\n");
            assert!(!out.can_share());
            out.share(&batches[10]);
            expected.extend_from_slice(&batches[10]);
            assert_eq!(out.pending(), expected.len() - sink.taken.len());
            for _ in 0..10_000 {
                if out.is_empty() {
                    break;
                }
                let _ = out.write_to(&mut sink);
                assert_eq!(out.pending(), expected.len() - sink.taken.len());
            }
            assert!(out.is_empty(), "room {room}");
            assert_eq!(sink.taken, expected, "room {room}");
        }
        // Nothing is held once written.
        assert!(batches.iter().all(|b| Rc::strong_count(b) == 1));
    }

    #[test]
    fn at_most_max_shared_renderings_are_held_then_they_are_copied() {
        let batch = Rc::new(vec![b'x'; SHARE_AT_LEAST]);
        let mut out = OutputBuffer::default();
        for _ in 0..MAX_SHARED + 3 {
            out.share(&batch);
        }
        assert_eq!(Rc::strong_count(&batch), 1 + MAX_SHARED);
        assert_eq!(out.pending(), SHARE_AT_LEAST * (MAX_SHARED + 3));
        // A small one behind another is copied.
        let small = Rc::new(b"[a] hi\n".to_vec());
        let mut out = OutputBuffer::default();
        out.share(&small);
        out.share(&small);
        assert_eq!(Rc::strong_count(&small), 2);
        assert_eq!(out.pending(), 14);
    }

    #[test]
    fn a_shared_part_then_own_bytes_keep_their_order() {
        let shared: Rc<Vec<u8>> = Rc::new(b"[b] one\n[a] mine\n[c] two\n".to_vec());
        let mut out = OutputBuffer::default();
        out.share_part(&shared, 0..8);
        out.push(&shared[17..]);
        assert_eq!(out.pending(), 16);
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        assert_eq!(sink, b"[b] one\n[c] two\n");
        // An empty part queues nothing.
        out.share_part(&shared, 3..3);
        assert!(out.is_empty());
    }

    #[test]
    fn sweep_frees_only_idle_empty_buffers() {
        let mut out = OutputBuffer::default();
        out.push(&[0; 1000]);
        let mut sink = Vec::new();
        out.write_to(&mut sink).unwrap();
        // Used since the last sweep: kept.
        assert_eq!(out.sweep(), 0);
        assert!(out.capacity() >= 1000);
        // Idle for a whole period: freed.
        assert!(out.sweep() >= 1000);
        assert_eq!(out.capacity(), 0);
        // Pending output is never freed.
        out.push(b"waiting");
        out.sweep();
        assert_eq!(out.sweep(), 0);
        assert_eq!(out.pending(), 7);
    }
}
