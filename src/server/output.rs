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
        shared + self.buf.len() - self.start
    }

    /// Nothing waits to be written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.shared.is_none() && self.start == self.buf.len()
    }

    /// Queues a rendering shared with other readers, without copying it if
    /// nothing else waits; otherwise the bytes are appended like any others.
    #[inline]
    pub fn share(&mut self, bytes: &Rc<Vec<u8>>) {
        self.share_part(bytes, 0..bytes.len());
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

    /// Called every sweep period: frees the allocation of a buffer that is
    /// empty and received nothing since the last sweep. Returns the bytes
    /// freed.
    pub fn sweep(&mut self) -> usize {
        let idle = !self.used;
        self.used = false;
        if idle && self.pending() == 0 && self.buf.capacity() > 0 {
            let freed = self.buf.capacity();
            self.buf = Vec::new();
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
