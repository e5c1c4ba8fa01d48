//! The browser door's transport (SPEC section 8.2): an HTTP/1.1 request head,
//! then either one response (the chat page, or an error) or a WebSocket that
//! carries the line protocol.
//!
//! Everything happens on the loop, without blocking and without a runtime:
//! bytes read from the socket are parsed here (the head with `httparse`, the
//! frames with tungstenite's [`WebSocketContext`], which is handed an
//! in-memory stream per call), decoded lines go into the connection's
//! [`LineBuffer`], and whatever the server sends is framed into the
//! connection's [`OutputBuffer`]. So the line limit, flood control, the order
//! of replies and the 1 MiB slow-reader rule hold exactly as for `nc`.
//!
//! Output is staged, as TLS does: [`WebTransport::encode`] copies the
//! dialect's bytes (adding exactly their length to what is pending), and
//! [`WebTransport::write`] frames them at the end of the poll turn: each
//! `\n`-terminated line becomes one text message without its `\n`, and a
//! prompt (no `\n`) one message of its own. Before the upgrade, staged
//! output waits for it (the core may greet a connection before the browser
//! has asked for the WebSocket); a connection closed before any upgrade gets
//! an HTTP answer instead.
//!
//! The layer is split in two: [`WebSession`] is sans-IO (bytes in, lines
//! and bytes out) so it can sit on plain TCP here and on TLS's plaintext for
//! HTTPS/WSS; [`WebTransport`] joins it to a socket.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use super::output::OutputBuffer;
use super::tls::TlsTransport;
use crate::wire::framing::{LineBuffer, READ_CHUNK};
use crate::wire::protocol::{self, Lang, Reply};

/// A request head longer than this gets `431` (SPEC section 8.2).
pub const MAX_HEAD: usize = 8 * 1024;

/// A WebSocket message longer than this closes the connection with code
/// 1009 (SPEC section 8.2). Shorter ones over the line limit get `TOO_LONG`
/// from the line buffer, as any other line.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Headers parsed in a request head; more is a malformed request.
const MAX_HEADERS: usize = 48;

/// tungstenite's read buffer per WebSocket. Small, because it is held by
/// every idle browser; a larger message grows it only while it arrives.
const WS_READ_BUFFER: usize = 256;

/// The chat page, compiled in: one self-contained document, with
/// `{{LANG}}` and `{{STRINGS}}` filled in at start-up (see [`Site::new`]).
const PAGE: &str = include_str!("page.html");

/// What the browser door serves, shared by all its connections: built once
/// when the server starts.
#[derive(Debug)]
pub struct Site {
    /// The whole `200` answer to `GET /`: head and page.
    page_response: Vec<u8>,
    /// `https` when the door speaks TLS, else `http`: the scheme of this
    /// page's own origin.
    scheme: &'static str,
    /// Other origins allowed to open the WebSocket (`--web-origin`),
    /// normalised by [`normalise_origin`].
    allowed: Vec<String>,
}

impl Site {
    /// The page in `lang`, and the origins allowed besides the page's own.
    pub fn new(lang: Lang, https: bool, allowed_origins: &[String]) -> Self {
        let page = render_page(lang);
        let mut page_response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\n{SECURITY_HEADERS}\
             Connection: close\r\n\r\n",
            page.len()
        )
        .into_bytes();
        page_response.extend_from_slice(page.as_bytes());
        Self {
            page_response,
            scheme: if https { "https" } else { "http" },
            allowed: allowed_origins
                .iter()
                .map(|o| normalise_origin(o))
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }
}

/// Headers sent with every answer: the page loads nothing from elsewhere, so
/// the policy can say so, and no other site may frame it.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'none'; \
     style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
     X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

/// The page with the server's language and the catalogue's texts the page
/// needs to tell replies apart. Texts go in as JSON inside a
/// `type="application/json"` script, with `<` escaped so no text can end
/// that element.
fn render_page(lang: Lang) -> String {
    let mut strings = String::from("{");
    let mut field = |key: &str, value: &str| {
        if strings.len() > 1 {
            strings.push(',');
        }
        let _ = write!(strings, "\"{key}\":");
        push_json_string(&mut strings, value);
    };
    field("lang", lang_code(lang));
    field("loginOk", Reply::LoginOk.text(lang));
    field("registOk", Reply::RegistOk.text(lang));
    field("logoutOk", Reply::LogoutOk.text(lang));
    field("bye", Reply::Bye.text(lang));
    field("alreadySelf", Reply::AlreadySelf.text(lang));
    let list = protocol::user_list(lang, std::iter::empty());
    field("listPrefix", list.trim_end_matches(".\n"));
    let private = match lang {
        Lang::Id => "Pesan pribadi dari [",
        Lang::En => "Private message from [",
    };
    field("privatePrefix", private);
    // OFFLINE around a name that cannot occur in a real one.
    let offline = protocol::offline(lang, "\u{1}");
    let (before, after) = offline.trim_end().split_once('\u{1}').unwrap_or(("", ""));
    field("offlineBefore", before);
    field("offlineAfter", after);
    strings.push('}');
    PAGE.replace("{{LANG}}", lang_code(lang))
        .replace("{{STRINGS}}", &strings)
}

fn lang_code(lang: Lang) -> &'static str {
    match lang {
        Lang::Id => "id",
        Lang::En => "en",
    }
}

/// Appends `value` as a JSON string, escaping `<` too (see [`render_page`]).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An origin as compared: ASCII lower case, no trailing `/`, and no port
/// when it is the scheme's default (browsers omit it, a `Host` may not).
pub fn normalise_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme)
            && let Some(stripped) = origin.strip_suffix(port)
        {
            return stripped.to_owned();
        }
    }
    origin
}

/// Where a browser connection is.
enum State {
    /// Reading the request head: the bytes so far.
    Head(Vec<u8>),
    /// Upgraded: tungstenite's state. Boxed: it is large, and a connection
    /// still reading its head (or done) must not carry it.
    Socket(Box<WebSocketContext>),
    /// An answer was given, or the WebSocket is closing: nothing more is
    /// read as chat, nothing more is framed.
    Done,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Head(head) => write!(f, "Head({} bytes)", head.len()),
            State::Socket(_) => f.write_str("Socket"),
            State::Done => f.write_str("Done"),
        }
    }
}

/// What a call into the session says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Carry on.
    Open,
    /// The peer closed the WebSocket (a Close frame): like end of stream.
    PeerClosed,
    /// An answer was queued that ends the connection (the page, an error
    /// status, a close frame): flush it, then close.
    Finished,
}

/// The sans-IO browser connection: bytes from the peer in, lines and bytes
/// for the peer out.
#[derive(Debug)]
pub struct WebSession {
    site: Arc<Site>,
    state: State,
    /// Output accepted by [`encode`](Self::encode), not yet framed.
    staged: Vec<u8>,
    /// Ends of staged messages that have no `\n` of their own (prompts), so
    /// that two prompts in one turn stay two messages. Rarely non-empty.
    cuts: Vec<usize>,
    /// Something was staged since the last [`sweep`](Self::sweep).
    used: bool,
}

impl WebSession {
    /// A connection that has sent nothing yet.
    pub fn new(site: Arc<Site>) -> Self {
        Self {
            site,
            state: State::Head(Vec::new()),
            staged: Vec::new(),
            cuts: Vec::new(),
            used: false,
        }
    }

    /// True until the request head has been answered: the connection
    /// cannot carry chat yet.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    /// True once the WebSocket is open (and not closing).
    pub fn is_websocket(&self) -> bool {
        matches!(self.state, State::Socket(_))
    }

    /// Output staged and not yet framed.
    #[inline]
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Stages one message of the dialect: exactly `message.len()` more is
    /// pending. After the end it is discarded at the next frame instead.
    #[inline]
    pub fn encode(&mut self, message: &[u8]) {
        self.staged.extend_from_slice(message);
        if message.last() != Some(&b'\n') && !message.is_empty() {
            self.cuts.push(self.staged.len());
        }
        self.used = true;
    }

    /// Takes bytes from the peer: decoded lines go into `lines`, what must
    /// be sent (an HTTP answer, a pong, a close frame, and after the
    /// upgrade what was staged) into `wire`.
    pub fn receive(&mut self, input: &[u8], lines: &mut LineBuffer, wire: &mut Vec<u8>) -> Status {
        match &mut self.state {
            State::Done => Status::Finished,
            State::Head(head) => {
                head.extend_from_slice(input);
                match self.answer_head(wire) {
                    None => Status::Open,
                    Some(Answer::Status(status)) => status,
                    // Bytes right behind the request are the first frames.
                    Some(Answer::Upgraded(rest)) if rest.is_empty() => Status::Open,
                    Some(Answer::Upgraded(rest)) => self.receive_frames(&rest, lines, wire),
                }
            }
            State::Socket(_) => self.receive_frames(input, lines, wire),
        }
    }

    /// Frames what is staged into `wire` once the WebSocket is open;
    /// discards it once the connection is done; keeps it while the head is
    /// still coming.
    pub fn frame(&mut self, wire: &mut Vec<u8>) {
        match self.state {
            State::Socket(_) => {}
            State::Done => {
                self.staged.clear();
                self.cuts.clear();
                return;
            }
            State::Head(_) => return,
        }
        if self.staged.is_empty() {
            return;
        }
        wire.reserve(self.staged.len() + 16);
        let mut start = 0;
        let mut cuts = self.cuts.iter().copied().peekable();
        while start < self.staged.len() {
            let rest = &self.staged[start..];
            let newline = rest.iter().position(|&b| b == b'\n');
            let cut = cuts.peek().map(|&c| c - start);
            let (len, skip) = match (newline, cut) {
                (Some(n), Some(c)) if c <= n => (c, 0),
                (Some(n), _) => (n, 1),
                (None, Some(c)) => (c, 0),
                (None, None) => (rest.len(), 0),
            };
            while cuts.peek().is_some_and(|&c| c <= start + len) {
                cuts.next();
            }
            push_text_frame(wire, &rest[..len]);
            start += len + skip;
        }
        self.staged.clear();
        self.cuts.clear();
    }

    /// The server is closing the connection: frames what is staged, then a
    /// close frame (after an upgrade), or answers a head that was never
    /// answered: `503` with what the server said (`SERVER_FULL`,
    /// `TOO_MANY_CONNS`, `LOGIN_TIMEOUT`).
    pub fn start_close(&mut self, wire: &mut Vec<u8>) {
        match &self.state {
            State::Socket(_) => {
                self.frame(wire);
                self.close(CloseCode::Normal, wire);
            }
            State::Head(_) => {
                let said = String::from_utf8_lossy(&self.staged).into_owned();
                let body = if said.trim().is_empty() {
                    "Service Unavailable\n".to_owned()
                } else {
                    said
                };
                push_response(wire, "503 Service Unavailable", &body);
                self.state = State::Done;
            }
            State::Done => {}
        }
        self.staged.clear();
        self.cuts.clear();
    }

    /// Frees the stage's allocation after a whole sweep period with nothing
    /// staged. Returns the bytes freed.
    pub fn sweep(&mut self) -> usize {
        let idle = !self.used;
        self.used = false;
        if idle && self.staged.is_empty() && self.staged.capacity() > 0 {
            let freed = self.staged.capacity() + self.cuts.capacity() * size_of::<usize>();
            self.staged = Vec::new();
            self.cuts = Vec::new();
            freed
        } else {
            0
        }
    }

    /// Answers the head gathered so far, if it is complete (or too long).
    fn answer_head(&mut self, wire: &mut Vec<u8>) -> Option<Answer> {
        let State::Head(head) = &self.state else {
            return None;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let parsed = request.parse(head);
        let head_len = match parsed {
            Ok(httparse::Status::Partial) if head.len() > MAX_HEAD => {
                return Some(Answer::Status(
                    self.refuse("431 Request Header Fields Too Large", wire),
                ));
            }
            Ok(httparse::Status::Partial) => return None,
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Some(Answer::Status(
                    self.refuse("431 Request Header Fields Too Large", wire),
                ));
            }
            Ok(httparse::Status::Complete(len)) => len,
            Err(httparse::Error::TooManyHeaders) if head.len() > MAX_HEAD => {
                return Some(Answer::Status(
                    self.refuse("431 Request Header Fields Too Large", wire),
                ));
            }
            Err(_) => return Some(Answer::Status(self.refuse("400 Bad Request", wire))),
        };
        let method = request.method.unwrap_or("");
        let target = request.path.unwrap_or("");
        let path = target.split(['?', '#']).next().unwrap_or("");
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        let http11 = request.version == Some(1);
        let host = header("host");
        if http11 && host.as_deref().is_none_or(str::is_empty) {
            // RFC 9112: a 1.1 request without Host is malformed.
            return Some(Answer::Status(self.refuse("400 Bad Request", wire)));
        }
        if !target.starts_with('/') {
            return Some(Answer::Status(self.refuse("400 Bad Request", wire)));
        }
        if path != "/" && path != "/ws" {
            return Some(Answer::Status(self.refuse("404 Not Found", wire)));
        }
        if method != "GET" {
            return Some(Answer::Status(self.refuse("405 Method Not Allowed", wire)));
        }
        if path == "/" {
            wire.extend_from_slice(&self.site.page_response);
            self.state = State::Done;
            return Some(Answer::Status(Status::Finished));
        }
        // GET /ws: a WebSocket upgrade (RFC 6455 section 4.2.1), or nothing.
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let key = header("sec-websocket-key").unwrap_or_default();
        if !http11
            || !has_token("upgrade", "websocket")
            || !has_token("connection", "upgrade")
            || header("sec-websocket-version").as_deref() != Some("13")
            || key.is_empty()
        {
            return Some(Answer::Status(self.refuse("400 Bad Request", wire)));
        }
        if let Some(origin) = header("origin")
            && !self.origin_allowed(&origin, host.as_deref().unwrap_or(""))
        {
            return Some(Answer::Status(self.refuse("403 Forbidden", wire)));
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let _ = write!(
            Wire(wire),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let rest = head[head_len..].to_vec();
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        self.state = State::Socket(Box::new(WebSocketContext::new(Role::Server, Some(config))));
        // What the core said before the upgrade goes first.
        self.frame(wire);
        Some(Answer::Upgraded(rest))
    }

    /// Whether a browser page from `origin` may open the WebSocket: its own
    /// origin (as `Host` names it), or one listed in `--web-origin`. `null`
    /// (a sandboxed or local page) is never the page's own.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = normalise_origin(origin);
        if self.site.allowed.contains(&origin) {
            return true;
        }
        origin != "null"
            && !host.is_empty()
            && origin == normalise_origin(&format!("{}://{host}", self.site.scheme))
    }

    /// Answers with an error status and ends the connection.
    fn refuse(&mut self, status: &str, wire: &mut Vec<u8>) -> Status {
        let reason = status.split_once(' ').map_or(status, |(_, r)| r);
        push_response(wire, status, &format!("{reason}\n"));
        self.state = State::Done;
        Status::Finished
    }

    /// Decodes the frames in `input`: each text or binary message is one or
    /// more lines; pings are answered; a close frame ends the chat.
    fn receive_frames(
        &mut self,
        input: &[u8],
        lines: &mut LineBuffer,
        wire: &mut Vec<u8>,
    ) -> Status {
        let State::Socket(ws) = &mut self.state else {
            return Status::Finished;
        };
        let mut stream = Duplex { input, wire };
        let ended = loop {
            match ws.read(&mut stream) {
                Ok(Message::Text(text)) => push_lines(lines, text.as_bytes()),
                // Decoded lossily, like any bytes (SPEC section 8.2).
                Ok(Message::Binary(bytes)) => push_lines(lines, &bytes),
                Ok(Message::Close(_)) => break Some(None),
                // Pongs are queued by tungstenite and flushed below.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break Some(None),
                Err(WsError::Capacity(_)) => break Some(Some(CloseCode::Size)),
                Err(WsError::Utf8(_)) => break Some(Some(CloseCode::Invalid)),
                Err(_) => break Some(Some(CloseCode::Protocol)),
            }
        };
        // Control frames tungstenite queued (pongs, the reply to a close).
        let _ = ws.flush(&mut stream);
        match ended {
            None => Status::Open,
            Some(None) => {
                self.state = State::Done;
                Status::PeerClosed
            }
            Some(Some(code)) => {
                self.close(code, wire);
                Status::Finished
            }
        }
    }

    /// Frames staged output first, then sends a close frame with `code`;
    /// nothing is framed after it.
    fn close(&mut self, code: CloseCode, wire: &mut Vec<u8>) {
        if let State::Socket(ws) = &mut self.state {
            let reason = match code {
                CloseCode::Size => "message too big",
                CloseCode::Invalid => "text is not UTF-8",
                CloseCode::Protocol => "protocol error",
                _ => "",
            };
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let mut stream = Duplex { input: &[], wire };
            let _ = ws.close(&mut stream, Some(frame));
        }
        self.state = State::Done;
    }
}

/// What answering a head came to.
enum Answer {
    Status(Status),
    /// The WebSocket is open; these bytes followed the head.
    Upgraded(Vec<u8>),
}

/// One WebSocket message as lines: a `\n` ends it, so a message without
/// one is one line, and one with `\n` in it several (SPEC section 8.2).
fn push_lines(lines: &mut LineBuffer, message: &[u8]) {
    lines.extend(message);
    lines.extend(b"\n");
    // Telnet option requests mean nothing inside a WebSocket: no answer
    // (the bytes themselves are still removed from the text).
    lines.clear_telnet_replies();
}

/// Appends `lines` (each ending in `\n`, as a batch of broadcasts does) as one
/// text message per line. A broadcast to many browsers is framed once with
/// this and shared, as plain readers share the rendering itself.
pub fn frame_lines(lines: &[u8], wire: &mut Vec<u8>) {
    wire.reserve(lines.len() + lines.len() / 16 + 8);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        push_text_frame(wire, line.strip_suffix(b"\n").unwrap_or(line));
    }
}

/// Appends one text frame (server frames are not masked) holding `payload`,
/// which the server always makes UTF-8; anything else is sent lossily, so a
/// browser never fails the connection over it.
fn push_text_frame(wire: &mut Vec<u8>, payload: &[u8]) {
    let text = String::from_utf8_lossy(payload);
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(text.len() as u64, wire);
    wire.extend_from_slice(text.as_bytes());
}

/// Appends a whole HTTP answer with a plain-text body; the connection closes
/// after it.
fn push_response(wire: &mut Vec<u8>, status: &str, body: &str) {
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let _ = write!(
        Wire(wire),
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{allow}{SECURITY_HEADERS}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `fmt::Write` into a byte vector.
struct Wire<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Wire<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The stream tungstenite is handed for one call: it reads what the socket
/// gave this turn (then would block) and writes into the connection's wire
/// bytes.
struct Duplex<'a> {
    input: &'a [u8],
    wire: &'a mut Vec<u8>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // Not end of stream: tungstenite would take that for a reset.
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.wire.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The browser door on a socket: a [`WebSession`] over plain TCP, or over
/// TLS (HTTPS and WSS with the TLS door's certificate, SPEC 8.2).
#[derive(Debug)]
pub struct WebTransport {
    session: WebSession,
    /// TLS under the session, when the server has a certificate. Boxed:
    /// rustls's state is over a kilobyte, and a browser over plain HTTP
    /// must not carry it unused.
    tls: Option<Box<TlsTransport>>,
    /// Scratch for TLS: plaintext read, bytes the session says.
    scratch: Vec<u8>,
    /// The peer's WebSocket is closed, or an answer ended the connection:
    /// the next read reports end of stream.
    ended: bool,
}

impl WebTransport {
    /// A new browser connection, inside TLS when `tls` is given.
    pub fn new(site: Arc<Site>, tls: Option<TlsTransport>) -> Self {
        Self {
            session: WebSession::new(site),
            tls: tls.map(Box::new),
            scratch: Vec::new(),
            ended: false,
        }
    }

    /// The TLS handshake or the request head is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking() || self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Output accepted and not yet in the output buffer: the session's
    /// unframed lines and TLS's unsealed plaintext.
    #[inline]
    pub fn staged(&self) -> usize {
        self.session.staged() + self.tls.as_ref().map_or(0, |t| t.staged())
    }

    /// See [`WebSession::encode`].
    #[inline]
    pub fn encode(&mut self, message: &[u8]) {
        self.session.encode(message);
    }

    /// Reads one chunk from the socket and passes it through the session.
    /// `Ok(0)`: the peer closed (TCP end of stream, `close_notify` or a
    /// close frame). `InvalidData`: an answer that ends the connection is
    /// queued (the page, an error status, a close frame, a TLS alert):
    /// flush it, then close.
    pub fn read(
        &mut self,
        socket: &mut impl Read,
        lines: &mut LineBuffer,
        out: &mut OutputBuffer,
    ) -> io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let status = match &mut self.tls {
            None => {
                let mut chunk = [0u8; READ_CHUNK];
                let n = loop {
                    match socket.read(&mut chunk) {
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        other => break other?,
                    }
                };
                if n == 0 {
                    return Ok(0);
                }
                (n, self.session.receive(&chunk[..n], lines, out.buf_mut()))
            }
            Some(tls) => {
                let mut plain = std::mem::take(&mut self.scratch);
                plain.clear();
                let n = tls.read_plain(socket, &mut plain, out)?;
                if n == 0 {
                    return Ok(0);
                }
                let mut wire = Vec::new();
                let status = self.session.receive(&plain, lines, &mut wire);
                // Sealed at the next write, counted as staged until then.
                tls.encode(&wire);
                if plain.capacity() <= 2 * READ_CHUNK {
                    plain.clear();
                    self.scratch = plain;
                }
                (n, status)
            }
        };
        match status {
            (n, Status::Open) => Ok(n),
            (n, Status::PeerClosed) => {
                self.ended = true;
                Ok(n)
            }
            (_, Status::Finished) => {
                self.ended = true;
                Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "browser connection answered and finished",
                ))
            }
        }
    }

    /// Frames what is staged (and seals it, inside TLS) and writes as far as
    /// the socket takes it.
    pub fn write(&mut self, socket: &mut impl Write, out: &mut OutputBuffer) -> io::Result<usize> {
        match &mut self.tls {
            None => {
                if self.session.staged() > 0 {
                    self.session.frame(out.buf_mut());
                }
                out.write_to(socket)
            }
            Some(tls) => {
                if self.session.staged() > 0 {
                    let mut wire = std::mem::take(&mut self.scratch);
                    wire.clear();
                    self.session.frame(&mut wire);
                    tls.encode(&wire);
                    wire.clear();
                    self.scratch = wire;
                }
                tls.write(socket, out)
            }
        }
    }

    /// True when a broadcast framed once for every reader may be queued
    /// as it is: the WebSocket is open, not inside TLS (which seals each
    /// reader's bytes apart), and nothing staged would have to go before it.
    #[inline]
    pub fn takes_framed(&self) -> bool {
        self.tls.is_none() && self.session.is_websocket() && self.session.staged() == 0
    }

    /// See [`WebSession::start_close`]; inside TLS, then `close_notify`.
    pub fn start_close(&mut self, out: &mut OutputBuffer) {
        match &mut self.tls {
            None => self.session.start_close(out.buf_mut()),
            Some(tls) => {
                let mut wire = Vec::new();
                self.session.start_close(&mut wire);
                tls.encode(&wire);
                tls.start_close(out);
            }
        }
    }

    /// Frees what is held for an idle connection; returns the bytes freed.
    pub fn sweep(&mut self) -> usize {
        let scratch = self.scratch.capacity();
        self.scratch = Vec::new();
        scratch + self.session.sweep() + self.tls.as_mut().map_or(0, |t| t.sweep())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::Frame;
    use proptest::prelude::*;

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn session() -> WebSession {
        WebSession::new(Arc::new(Site::new(Lang::En, false, &[])))
    }

    /// A masked client frame.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// Server frames back as (opcode, payload).
    fn server_frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while wire.len() >= 2 {
            let opcode = wire[0] & 0x0f;
            let (len, at) = match wire[1] {
                126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(wire[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                n => (usize::from(n), 2),
            };
            frames.push((opcode, wire[at..at + len].to_vec()));
            wire = &wire[at + len..];
        }
        frames
    }

    /// A browser over plain HTTP carries no TLS state: rustls's is over a
    /// kilobyte, and 10 000 idle browsers paid it unused (3.2 KB of RSS each
    /// instead of 1.9 KB, chat-bench connections).
    #[test]
    fn a_plain_browser_does_not_carry_tls_state() {
        let web = size_of::<WebTransport>();
        let tls = size_of::<TlsTransport>();
        assert!(tls > 512, "the bound below must tell them apart: {tls}");
        assert!(web <= 256, "{web} bytes per browser before any buffer");
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        let mut s = session();
        let (mut lines, mut wire) = (LineBuffer::new(), Vec::new());
        assert_eq!(s.receive(UPGRADE, &mut lines, &mut wire), Status::Open);
        let answer = String::from_utf8(wire).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(s.is_websocket() && !s.is_handshaking());
    }

    #[test]
    fn lines_and_prompts_become_one_message_each() {
        let mut s = session();
        let (mut lines, mut wire) = (LineBuffer::new(), Vec::new());
        // Said before the upgrade: waits for it, counted as staged.
        s.encode(b"early\n");
        assert_eq!(s.staged(), 6);
        s.frame(&mut wire);
        assert!(wire.is_empty());
        // Frames right behind the head are read too.
        let mut input = UPGRADE.to_vec();
        input.extend(client_frame(1, b"login\nbob"));
        s.receive(&input, &mut lines, &mut wire);
        assert_eq!(lines.next_frame(), Some(Frame::Line(b"login")));
        assert_eq!(lines.next_frame(), Some(Frame::Line(b"bob")));
        let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(server_frames(&wire[head_end..]), [(1, b"early".to_vec())]);
        wire.clear();
        s.encode(b"Username : ");
        s.encode(b"Password : ");
        s.encode(b"[a] x\n[b] y\n");
        s.encode(b"\n");
        assert_eq!(s.staged(), 35);
        s.frame(&mut wire);
        assert_eq!(s.staged(), 0);
        let texts: Vec<Vec<u8>> = server_frames(&wire).into_iter().map(|f| f.1).collect();
        let expected: [&[u8]; 5] = [b"Username : ", b"Password : ", b"[a] x", b"[b] y", b""];
        assert_eq!(texts, expected);
        // Not UTF-8 (never made by the server): sent lossily, never invalid.
        wire.clear();
        s.encode(b"\xff\n");
        s.frame(&mut wire);
        assert_eq!(server_frames(&wire), [(1, "\u{fffd}".as_bytes().to_vec())]);
        // Closing: what is staged, then a close frame; nothing after.
        wire.clear();
        s.encode(b"Goodbye\n");
        s.start_close(&mut wire);
        s.encode(b"late\n");
        s.frame(&mut wire);
        assert_eq!(s.staged(), 0);
        let frames = server_frames(&wire);
        assert_eq!(frames[0], (1, b"Goodbye".to_vec()));
        assert_eq!(frames[1].0, 8);
        assert_eq!(&frames[1].1[..2], &1000u16.to_be_bytes());
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn a_connection_closed_before_its_head_gets_503_with_what_was_said() {
        let mut s = session();
        let mut wire = Vec::new();
        s.encode(b"Too many connections from your address\n");
        s.start_close(&mut wire);
        let answer = String::from_utf8(wire).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(answer.ends_with("\r\n\r\nToo many connections from your address\n"));
        assert_eq!(s.staged(), 0);
    }

    #[test]
    fn origins_compare_whole_and_normalised() {
        assert_eq!(normalise_origin("HTTP://Host:80/"), "http://host");
        assert_eq!(normalise_origin("https://h:443"), "https://h");
        assert_eq!(normalise_origin("https://h:8443"), "https://h:8443");
        let site = Arc::new(Site::new(Lang::Id, true, &["http://a.test".to_owned()]));
        let s = WebSession::new(site);
        assert!(s.origin_allowed("https://chat.test", "chat.test:443"));
        assert!(s.origin_allowed("http://a.test", "chat.test"));
        assert!(!s.origin_allowed("http://chat.test", "chat.test"));
        assert!(!s.origin_allowed("null", "null"));
        assert!(!s.origin_allowed("https://chat.test.evil", "chat.test"));
    }

    #[test]
    fn the_page_carries_the_language_and_texts_safely() {
        let page = render_page(Lang::Id);
        assert!(page.contains("<html lang=\"id\">"));
        assert!(page.contains("\"loginOk\":\"Login sukses\""));
        assert!(page.contains("\"offlineBefore\":\"Teman anda [\""));
        assert!(page.contains("\"offlineAfter\":\"] telah offline\""));
        assert!(!page.contains("{{"));
        let mut json = String::new();
        push_json_string(&mut json, "</script>\"\\\n");
        assert_eq!(json, "\"\\u003c/script>\\\"\\\\\\u000a\"");
    }

    proptest! {
        /// No head, however malformed or split, panics; every connection
        /// ends answered or still reading, and a finished one ignores more.
        #[test]
        fn any_head_in_any_pieces_is_answered_or_awaited(
            bytes in proptest::collection::vec(any::<u8>(), 0..10_000),
            cuts in proptest::collection::vec(0usize..10_000, 0..8),
        ) {
            let mut s = session();
            let (mut lines, mut wire) = (LineBuffer::new(), Vec::new());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for end in cuts.into_iter().chain([bytes.len()]) {
                let _ = s.receive(&bytes[start..end], &mut lines, &mut wire);
                start = end;
            }
            if s.is_handshaking() {
                prop_assert!(wire.is_empty());
            }
        }

        /// After the upgrade, no byte sequence panics, and what was decoded
        /// is bounded by what came in plus a `\n` per message.
        #[test]
        fn any_frames_after_the_upgrade_are_safe(
            messages in proptest::collection::vec(
                (0u8..16, proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()),
                0..20,
            ),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut s = session();
            let (mut lines, mut wire) = (LineBuffer::new(), Vec::new());
            s.receive(UPGRADE, &mut lines, &mut wire);
            let mut input = Vec::new();
            for (opcode, payload, masked) in &messages {
                let mut frame = client_frame(*opcode, payload);
                if !masked {
                    frame[1] &= 0x7f;
                }
                input.extend(frame);
            }
            input.extend(noise);
            for chunk in input.chunks(97) {
                if s.receive(chunk, &mut lines, &mut wire) != Status::Open {
                    break;
                }
            }
            s.encode(b"reply\n");
            s.start_close(&mut wire);
            prop_assert_eq!(s.staged(), 0);
        }
    }
}
