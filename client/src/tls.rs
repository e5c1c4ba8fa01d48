//! `chat-client --tls`: the client side of the TLS door (SPEC section 8.1).
//!
//! The client has two threads on one connection (the reader and the main
//! thread, see the crate documentation), and a rustls connection is one
//! state machine. So the state sits behind a mutex that is never held while
//! waiting: the reader blocks on the raw socket without it, then takes it to
//! decrypt what came; the main thread takes it to encrypt and write a line.
//! The handshake is finished before either thread starts, so a certificate
//! that cannot be verified is one error line and a non-zero exit.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore};

/// The roots a server certificate is checked against: the system's, plus
/// the PEM certificates in `ca` (a private CA, or a self-signed server).
pub fn roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: `--ca` may be all there is.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read --ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in --ca {}", ca.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("cannot use --ca {}: {e}", ca.display()))?;
        }
    }
    Ok(roots)
}

/// The one line that says why a handshake failed; a certificate that cannot
/// be verified says so plainly and how to trust it.
fn handshake_error(e: &io::Error) -> String {
    let cert = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cert)) => cert,
        // The chat server's refusal, sent before any handshake: it is full,
        // or this address has too many connections (SERVER_FULL,
        // TOO_MANY_CONNS have no other way through TLS).
        Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied)) => {
            return "the server refused the connection (it is full, or this address has too many connections); try again later".to_owned();
        }
        _ => return format!("TLS handshake failed: {e}"),
    };
    let why = match cert {
        CertificateError::UnknownIssuer
        | CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "not signed by a trusted certificate"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "not issued for this host name"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet"
        }
        CertificateError::Revoked => "revoked",
        _ => "rejected",
    };
    format!("cannot verify the server's TLS certificate ({why}); to trust it, add --ca FILE")
}

/// One TLS connection shared by the two threads.
pub struct TlsLink {
    conn: Mutex<ClientConnection>,
    /// The socket, written by whoever holds `conn`.
    socket: TcpStream,
}

impl TlsLink {
    /// Runs the handshake on `socket`, verifying the server as `host`.
    pub fn connect(
        socket: TcpStream,
        host: &str,
        roots: RootCertStore,
    ) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("TLS: {host} is not a server name: {e}"))?;
        let mut conn =
            ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
        let mut stream = &socket;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut stream) {
                return Err(handshake_error(&e));
            }
        }
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
            socket,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        // A panic elsewhere does not make the state unusable for a goodbye.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what rustls has to send.
    fn flush(&self, conn: &mut ClientConnection) -> io::Result<()> {
        let mut socket = &self.socket;
        while conn.wants_write() {
            conn.write_tls(&mut socket)?;
        }
        Ok(())
    }

    /// Encrypts and sends `bytes` (one record per call).
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut conn = self.lock();
        conn.writer().write_all(bytes)?;
        self.flush(&mut conn)
    }

    /// The end of input: `close_notify`, then a half-close, so the server
    /// still answers what was sent.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let mut conn = self.lock();
        conn.send_close_notify();
        let flushed = self.flush(&mut conn);
        self.socket.shutdown(std::net::Shutdown::Write)?;
        flushed
    }

    /// The reader thread's side.
    pub fn reader(self: &Arc<Self>) -> io::Result<TlsReader> {
        Ok(TlsReader {
            link: Arc::clone(self),
            socket: self.socket.try_clone()?,
            raw: Vec::new(),
            eof: false,
        })
    }
}

/// Decrypted bytes from the server, for the reader thread.
pub struct TlsReader {
    link: Arc<TlsLink>,
    socket: TcpStream,
    /// Ciphertext read but not yet taken by rustls.
    raw: Vec<u8>,
    /// The socket reached its end.
    eof: bool,
}

impl Read for TlsReader {
    /// `Ok(0)` after the server's `close_notify`; a close without it is an
    /// `UnexpectedEof` error (the connection may have been cut).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = self.link.lock();
                while !self.raw.is_empty() && conn.wants_read() {
                    let taken = conn.read_tls(&mut &self.raw[..])?;
                    self.raw.drain(..taken);
                    if let Err(e) = conn.process_new_packets() {
                        let _ = self.link.flush(&mut conn);
                        return Err(io::Error::new(ErrorKind::InvalidData, e));
                    }
                    if taken == 0 {
                        break;
                    }
                }
                // Answers rustls makes by itself (a key update).
                let _ = self.link.flush(&mut conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.eof {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
            }
            let mut chunk = [0u8; 16384];
            match self.socket.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    let mut conn = self.link.lock();
                    let _ = conn.read_tls(&mut &[][..]);
                    if let Err(e) = conn.process_new_packets() {
                        return Err(io::Error::new(ErrorKind::InvalidData, e));
                    }
                }
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
