//! The TLS door's transport (SPEC section 8.1): rustls, sans-IO, on the loop.
//!
//! rustls never touches the socket here. Ciphertext read from the socket goes
//! into rustls's [`read_tls`](rustls::ConnectionCommon::read_tls), the
//! plaintext it yields into the connection's [`LineBuffer`], and every byte
//! rustls wants to send (handshake messages, alerts, records, `close_notify`)
//! goes to the socket, or, as far as the socket does not take it, into the
//! connection's [`OutputBuffer`] at once, before the loop looks. So the 1 MiB
//! slow-reader rule, the server-wide output total and the order of replies
//! hold for TLS exactly as for plain TCP, and no thread or async runtime is
//! involved.
//!
//! What costs CPU in TLS is the record, not the byte: sealing every chat line
//! in its own record would cost an AEAD setup, a header, a tag and an
//! allocation per delivery. So [`TlsTransport::encode`] only stages plaintext
//! (one copy, like the plain path), and the stage is sealed when the
//! connection is flushed at the end of the poll turn: a turn's output to one
//! reader becomes one record (or a few, at 16 KiB each) and one `write`.
//! A reader that is caught up does not even copy a turn's broadcasts: it
//! holds the batch shared with every other reader ([`TlsTransport::share`])
//! and rustls reads it from there when sealing.
//! Staged bytes count as pending output for every limit.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::ServerConfig;
use rustls::{CipherSuite, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::output::{MAX_SHARED, OutputBuffer};
use crate::wire::framing::LineBuffer;

/// A handshake not finished this long after the connection was accepted
/// closes the connection (SPEC section 8.1).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TLS connection refused before its handshake began is sent
/// (`SERVER_FULL`, `TOO_MANY_CONNS`): a fatal `access_denied` alert record,
/// in plaintext as every record before the ServerHello is. The reply itself
/// cannot be said without a handshake, and a handshake costs a few hundred
/// microseconds that an unwanted connection (often a flood of them) should
/// not get; the alert costs seven bytes and every client names it
/// ("tlsv1 alert access denied", rustls's `AlertReceived(AccessDenied)`).
pub const REFUSAL_ALERT: [u8; 7] = [
    0x15, // content type: alert
    0x03, 0x03, // record version, TLS 1.2 as TLS 1.3 writes it
    0x00, 0x02, // length
    0x02, // level: fatal
    49,   // access_denied
];

/// Loads a certificate chain and its private key (PEM; a PKCS#8, SEC1 or
/// PKCS#1 key) into a TLS 1.2/1.3 server configuration using the ring
/// provider. The error names the file and what is wrong with it, for the
/// start-up error and the SIGHUP reload log.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first: as safe for chat as AES-256 and about a quarter
    // cheaper per byte (10 rounds, not 14), and the bulk of a fan-out's TLS
    // cost is encrypting the same lines for every reader. The stable sort
    // keeps ring's order otherwise (AES-256-GCM, then ChaCha20-Poly1305).
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not make a pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    // Our preference, not the client's (most clients put AES-256 first).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// One TLS connection's state: rustls's, and this turn's staged plaintext.
pub struct TlsTransport {
    tls: ServerConnection,
    /// Batches of broadcasts shared with other readers, not yet sealed, in
    /// order; they come before `staged`. Several when the reader was not
    /// written between batches (a round of readers is written a slice per
    /// turn).
    shared: Vec<Rc<Vec<u8>>>,
    /// Plaintext queued since the last flush, sealed into records by
    /// [`write`](Self::write) (or when the handshake completes).
    staged: Vec<u8>,
    /// Something was staged since the last [`sweep`](Self::sweep).
    used: bool,
    /// The server said goodbye (`close_notify`) or TLS failed: nothing more
    /// is sealed.
    done: bool,
    /// Nothing has been read from the peer yet: no handshake has begun.
    fresh: bool,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("handshaking", &self.tls.is_handshaking())
            .field("staged", &self.staged())
            .field("done", &self.done)
            .finish()
    }
}

impl TlsTransport {
    /// A server-side TLS connection with the configuration now in service
    /// (an open connection keeps its configuration across a reload).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        // Every record rustls makes is moved into our own output buffer at
        // once, where the limits apply; rustls's own limit would only make
        // writes short.
        tls.set_buffer_limit(None);
        Ok(Self {
            tls,
            shared: Vec::new(),
            staged: Vec::new(),
            used: false,
            done: false,
            fresh: true,
        })
    }

    /// True until the handshake has completed.
    #[inline]
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Plaintext staged and not yet sealed.
    #[inline]
    pub fn staged(&self) -> usize {
        self.staged.len() + self.shared.iter().map(|b| b.len()).sum::<usize>()
    }

    /// Takes a batch of broadcasts shared with other readers instead of a
    /// copy, when nothing of its own is staged (so the order holds), it
    /// holds fewer than [`MAX_SHARED`] and the connection carries chat.
    /// Adds exactly `batch.len()` to [`staged`](Self::staged); false if it
    /// did not take it.
    #[inline]
    pub fn share(&mut self, batch: &Rc<Vec<u8>>) -> bool {
        if self.shared.len() >= MAX_SHARED
            || !self.staged.is_empty()
            || self.done
            || self.tls.is_handshaking()
        {
            return false;
        }
        self.shared.push(Rc::clone(batch));
        self.used = true;
        true
    }

    /// Reads one chunk of ciphertext, decrypts what it completes into
    /// `lines`, and moves what rustls must answer (handshake, alerts) into
    /// `out`. `Ok(0)`: the peer closed (TCP end of stream or `close_notify`).
    /// A TLS error queues rustls's alert and returns `InvalidData`: the
    /// caller closes the connection, flushing the alert first.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        lines: &mut LineBuffer,
        out: &mut OutputBuffer,
    ) -> io::Result<usize> {
        // Straight from rustls's buffer into the line buffer. Ends at
        // WouldBlock (all taken), Ok(0) (close_notify) or an unexpected end
        // of stream, which read_tls reports as Ok(0) to the caller.
        self.read_with(
            socket,
            out,
            |reader| {
                while let Ok(1..) = lines.read_from(reader) {}
            },
        )
    }

    /// [`read`](Self::read) for a layer above TLS (the browser door's HTTPS
    /// and WSS): the plaintext is appended to `plain` instead of a line
    /// buffer.
    pub fn read_plain(
        &mut self,
        socket: &mut impl Read,
        plain: &mut Vec<u8>,
        out: &mut OutputBuffer,
    ) -> io::Result<usize> {
        // What was read stays in `plain` when the reader would block.
        self.read_with(socket, out, |reader| {
            let _ = reader.read_to_end(plain);
        })
    }

    /// Reads one chunk of ciphertext and hands the plaintext it completes
    /// to `take`; see [`read`](Self::read).
    fn read_with(
        &mut self,
        socket: &mut impl Read,
        out: &mut OutputBuffer,
        take: impl FnOnce(&mut rustls::Reader<'_>),
    ) -> io::Result<usize> {
        let n = self.tls.read_tls(socket)?;
        if n > 0 {
            self.fresh = false;
        }
        let state = match self.tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                self.done = true;
                self.staged.clear();
                self.shared.clear();
                // The alert rustls queued for this error.
                self.drain(out);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        };
        if state.plaintext_bytes_to_read() > 0 {
            take(&mut self.tls.reader());
        }
        // The handshake may have just completed with replies waiting.
        self.seal(out);
        self.drain(out);
        Ok(n)
    }

    /// Stages one message; it is sealed when the connection is flushed.
    /// Always adds exactly `message.len()` to [`staged`](Self::staged), as
    /// the loop's accounting expects; after goodbye the stage is discarded at
    /// the next write instead of sealed.
    #[inline]
    pub fn encode(&mut self, message: &[u8]) {
        self.staged.extend_from_slice(message);
        self.used = true;
    }

    /// Seals what is staged and writes it as far as the socket takes it;
    /// what the socket does not take waits in `out`. Returns the bytes
    /// written to the socket.
    pub fn write(&mut self, socket: &mut impl Write, out: &mut OutputBuffer) -> io::Result<usize> {
        if out.pending() > 0 || self.staged() == 0 || self.done || self.tls.is_handshaking() {
            self.seal(out);
            return out.write_to(socket);
        }
        // The usual case, a reader that keeps up: nothing is waiting, so the
        // records go from rustls straight to the socket, sparing a copy of
        // every byte into `out`. Whatever the socket does not take is moved
        // into `out` before returning, where the limits see it.
        self.hand_over();
        let mut written = 0;
        let result = loop {
            if !self.tls.wants_write() {
                break Ok(written);
            }
            match self.tls.write_tls(socket) {
                Ok(0) => break Err(ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(written),
                Err(e) => break Err(e),
            }
        };
        self.drain(out);
        result
    }

    /// Seals what is staged, then queues `close_notify` (unless TLS failed:
    /// rustls has then queued its alert instead). A connection the server
    /// spoke to before its handshake began was refused (see
    /// [`REFUSAL_ALERT`]): it gets that alert instead of the words.
    pub fn start_close(&mut self, out: &mut OutputBuffer) {
        if self.done {
            return;
        }
        if self.fresh && self.staged() > 0 {
            self.done = true;
            self.staged.clear();
            self.shared.clear();
            out.push(&REFUSAL_ALERT);
            return;
        }
        self.seal(out);
        self.done = true;
        self.staged.clear();
        self.shared.clear();
        self.tls.send_close_notify();
        self.drain(out);
    }

    /// Frees the stage's allocation when nothing was staged for a whole
    /// sweep period. Returns the bytes freed.
    pub fn sweep(&mut self) -> usize {
        let idle = !self.used;
        self.used = false;
        let held = self.staged.capacity() + self.shared.capacity();
        if idle && self.staged() == 0 && held > 0 {
            let freed = self.staged.capacity() + self.shared.capacity() * size_of::<Rc<Vec<u8>>>();
            self.staged = Vec::new();
            self.shared = Vec::new();
            freed
        } else {
            0
        }
    }

    /// Turns the staged plaintext into records in `out`, once the handshake
    /// allows application data.
    fn seal(&mut self, out: &mut OutputBuffer) {
        if self.done {
            // Nothing may follow close_notify or a fatal alert.
            self.staged.clear();
            self.shared.clear();
            return;
        }
        if self.staged() == 0 || self.tls.is_handshaking() {
            return;
        }
        self.hand_over();
        self.drain(out);
    }

    /// Hands everything staged, shared part first, to rustls, which seals
    /// it into records (as few as 16 KiB records allow).
    fn hand_over(&mut self) {
        let mut parts = [IoSlice::new(&[]); MAX_SHARED + 1];
        let mut count = 0;
        for batch in &self.shared {
            parts[count] = IoSlice::new(batch);
            count += 1;
        }
        if !self.staged.is_empty() {
            parts[count] = IoSlice::new(&self.staged);
            count += 1;
        }
        // Cannot fail or fall short: with no buffer limit the writer takes
        // everything. One part is borrowed as it is; several are sealed
        // together, uncopied.
        let _ = self.tls.writer().write_vectored(&parts[..count]);
        self.shared.clear();
        self.staged.clear();
    }

    /// Moves every byte rustls wants to send into `out`.
    fn drain(&mut self, out: &mut OutputBuffer) {
        while self.tls.wants_write() {
            match self.tls.write_tls(out.buf_mut()) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::Frame;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// A server transport and a rustls client joined in memory.
    fn pair() -> (TlsTransport, ClientConnection) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("chat-tls-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let config = load_config(&cert_path, &key_path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client_config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        (TlsTransport::new(config).unwrap(), client)
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(
        server: &mut TlsTransport,
        client: &mut ClientConnection,
        lines: &mut LineBuffer,
        out: &mut OutputBuffer,
    ) {
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if !wire.is_empty() {
                server.read(&mut &wire[..], lines, out).unwrap();
            }
            let mut back = Vec::new();
            out.write_to(&mut back).unwrap();
            if !back.is_empty() {
                client.read_tls(&mut &back[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            if wire.is_empty() && back.is_empty() {
                return;
            }
        }
    }

    #[test]
    fn a_turn_of_messages_becomes_one_record_and_close_sends_close_notify() {
        let (mut server, mut client) = pair();
        let (mut lines, mut out) = (LineBuffer::new(), OutputBuffer::default());
        assert!(server.is_handshaking());
        // Output before the handshake waits, staged and counted.
        server.encode(b"early\n");
        assert_eq!(server.staged(), 6);
        pump(&mut server, &mut client, &mut lines, &mut out);
        assert!(!server.is_handshaking() && !client.is_handshaking());
        // Ours is AES-128-GCM, though the client lists AES-256 first.
        assert_eq!(
            client.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(server.staged(), 0);
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, b"early\n");

        client.writer().write_all(b"login a b\nhalo").unwrap();
        pump(&mut server, &mut client, &mut lines, &mut out);
        assert_eq!(lines.next_frame(), Some(Frame::Line(b"login a b")));

        for i in 0..100 {
            server.encode(format!("line {i}\n").as_bytes());
        }
        assert!(server.staged() > 600);
        let mut wire = Vec::new();
        server.write(&mut wire, &mut out).unwrap();
        assert_eq!(server.staged(), 0);
        // One application-data record: a 5-byte header, then the rest.
        assert_eq!(wire[0], 0x17);
        let record_len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        assert_eq!(wire.len(), 5 + record_len);
        client.read_tls(&mut &wire[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert!(got.starts_with(b"line 0\nline 1\n") && got.ends_with(b"line 99\n"));

        server.encode(b"Sampai jumpa\n");
        server.start_close(&mut out);
        // What comes after goodbye is counted, then discarded, never sent.
        server.encode(b"late\n");
        assert_eq!(server.staged(), 5);
        let mut wire = Vec::new();
        server.write(&mut wire, &mut out).unwrap();
        assert_eq!(server.staged(), 0);
        client.read_tls(&mut &wire[..]).unwrap();
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, b"Sampai jumpa\n");
    }

    #[test]
    fn a_shared_batch_and_what_follows_it_become_one_record_in_order() {
        let (mut server, mut client) = pair();
        let (mut lines, mut out) = (LineBuffer::new(), OutputBuffer::default());
        let batch = Rc::new(b"[a] one\n[b] two\n".to_vec());
        // Not while the handshake is under way: nothing may be sealed yet.
        assert!(!server.share(&batch));
        pump(&mut server, &mut client, &mut lines, &mut out);
        assert!(!server.is_handshaking());
        assert!(server.share(&batch));
        assert_eq!(server.staged(), batch.len());
        // Another batch is shared too, but none behind staged bytes.
        assert!(server.share(&batch));
        assert_eq!(Rc::strong_count(&batch), 3);
        server.encode(b"Pesan pribadi\n");
        assert!(!server.share(&batch));
        assert_eq!(server.staged(), 2 * batch.len() + 14);
        let mut wire = Vec::new();
        server.write(&mut wire, &mut out).unwrap();
        assert_eq!(server.staged(), 0);
        assert_eq!(
            Rc::strong_count(&batch),
            1,
            "the batch is let go once sealed"
        );
        assert_eq!(wire[0], 0x17);
        let record_len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        assert_eq!(wire.len(), 5 + record_len, "one record");
        client.read_tls(&mut &wire[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, b"[a] one\n[b] two\n[a] one\n[b] two\nPesan pribadi\n");
        // Staged bytes first: a batch may not jump ahead of them.
        server.encode(b"reply\n");
        assert!(!server.share(&batch));
        // After goodbye a shared batch is refused, and one held is dropped.
        let mut wire = Vec::new();
        server.write(&mut wire, &mut out).unwrap();
        assert!(server.share(&batch));
        server.start_close(&mut out);
        assert_eq!(server.staged(), 0);
        assert!(!server.share(&batch));
        client.read_tls(&mut &wire[..]).unwrap();
        let mut rest = Vec::new();
        out.write_to(&mut rest).unwrap();
        client.read_tls(&mut &rest[..]).unwrap();
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, b"reply\n[a] one\n[b] two\n");
    }

    #[test]
    fn a_refusal_before_the_handshake_is_the_access_denied_alert() {
        let (mut server, mut client) = pair();
        let mut out = OutputBuffer::default();
        // TOO_MANY_CONNS, staged at accept, before anything was read.
        server.encode(b"Terlalu banyak koneksi dari alamat anda\n");
        server.start_close(&mut out);
        assert_eq!(server.staged(), 0);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        assert_eq!(wire, REFUSAL_ALERT);
        // What a client makes of it.
        client.read_tls(&mut &wire[..]).unwrap();
        let err = client.process_new_packets().unwrap_err();
        assert_eq!(
            err,
            rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)
        );
        // A connection closed before the handshake with nothing said (the
        // handshake timeout) gets no such alert.
        let (mut quiet, _) = pair();
        let mut out = OutputBuffer::default();
        quiet.start_close(&mut out);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        assert_ne!(wire, REFUSAL_ALERT);
    }

    #[test]
    fn garbage_gets_an_alert_and_invalid_data() {
        let (mut server, _) = pair();
        let (mut lines, mut out) = (LineBuffer::new(), OutputBuffer::default());
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        let err = server.read(&mut garbage, &mut lines, &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let mut wire = Vec::new();
        out.write_to(&mut wire).unwrap();
        assert_eq!(wire.first(), Some(&0x15), "no alert record: {wire:?}");
        // No close_notify after a fatal alert.
        server.start_close(&mut out);
        assert_eq!(out.pending(), 0);
    }

    #[test]
    fn a_missing_or_mismatched_pair_is_an_error_naming_the_file() {
        let missing = Path::new("/nonexistent/cert.pem");
        let err = load_config(missing, missing).unwrap_err();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
