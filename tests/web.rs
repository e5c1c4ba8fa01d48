//! The browser door (SPEC 8.2) against the real binary: the page, every
//! status code, and the WebSocket with tungstenite's blocking client, chatting
//! with plain-socket (nc-style) users.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{REPLY_TIMEOUT, Server};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// Starts a server with the browser door on a free port; returns it and the
/// door's address (from its "web listening on" line).
fn start(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--web-port", "0", "--flood-rate", "0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let log = server.log_text();
        if let Some(rest) = log.split("web listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            return (server, addr.parse().expect("bad web address"));
        }
        assert!(Instant::now() < deadline, "no web door in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends raw bytes as an HTTP client and reads the whole answer (the server
/// closes after it).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    // The server may answer (and close) before it has read everything of an
    // over-long head: a failed write is fine then.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split("\r\n").next().unwrap_or("")
}

/// Opens the WebSocket, with an `Origin` header when given.
fn try_ws(addr: SocketAddr, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    tungstenite::client::client(request, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

fn ws(addr: SocketAddr) -> Ws {
    try_ws(addr, None).expect("WebSocket handshake failed")
}

/// The next text message (pongs and pings are skipped).
fn recv(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("no message") {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Binary(b) => panic!("binary message {b:?}"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

fn expect(ws: &mut Ws, expected: &str) {
    assert_eq!(recv(ws), expected);
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).unwrap();
}

/// A browser user registered and logged in as `name`.
fn ws_login(addr: SocketAddr, name: &str) -> Ws {
    let mut w = ws(addr);
    send(&mut w, &format!("regist {name} pw"));
    expect(&mut w, "Anda berhasil terdaftar");
    send(&mut w, &format!("login {name} pw"));
    expect(&mut w, "Login sukses");
    w
}

#[test]
fn the_page_is_served_whole_and_self_contained() {
    let (server, addr) = start(&["--lang", "en"]);
    let answer = http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert!(body.starts_with("<!doctype html>"));
    assert!(body.trim_end().ends_with("</html>"));
    // The server's language, for the page to speak.
    assert!(body.contains("<html lang=\"en\">"));
    assert!(body.contains("\"loginOk\":\"Login successful\""));
    // Nothing loaded from elsewhere: no URL with a scheme, no imported
    // style or font, no external script.
    for needle in [
        "http://",
        "https://",
        "//fonts",
        "@import",
        "@font-face",
        "<script src",
        "url(",
    ] {
        assert!(!body.contains(needle), "page contains {needle:?}");
    }
    assert!(body.contains("type=\"password\""), "no password field");
    // Received text goes in as text only.
    assert!(!body.contains("innerHTML") && !body.contains("insertAdjacentHTML"));
    assert!(!body.contains("document.write"));
    drop(server);
}

#[test]
fn each_status_code_and_then_close() {
    let (_server, addr) = start(&[]);
    let cases: [(&[u8], &str); 8] = [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "200 OK"),
        (b"GET /?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "200 OK"),
        (b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n", "404 Not Found"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "405 Method Not Allowed",
        ),
        (
            b"DELETE /ws HTTP/1.1\r\nHost: a\r\n\r\n",
            "405 Method Not Allowed",
        ),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", "400 Bad Request"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "400 Bad Request",
        ),
        // GET /ws that is not an upgrade.
        (b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"),
    ];
    for (request, expected) in cases {
        let answer = http(addr, request);
        assert_eq!(
            status(&answer),
            format!("HTTP/1.1 {expected}"),
            "for {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // A head over 8 KiB: 431, whether or not it ever ends.
    let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    assert_eq!(
        status(&http(addr, &long)),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        status(&http(addr, &long)),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Just under it: fine.
    let mut fits = b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: ".to_vec();
    fits.extend(std::iter::repeat_n(b'a', 8000));
    fits.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status(&http(addr, &fits)), "HTTP/1.1 200 OK");
    // A foreign origin: 403 (see also the origin test).
    let answer = http(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Origin: http://evil.example\r\n\r\n",
    );
    assert_eq!(status(&answer), "HTTP/1.1 403 Forbidden");
    // A head split in many reads is still one request.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    for byte in b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n" {
        s.write_all(&[*byte]).unwrap();
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert_eq!(status(&answer), "HTTP/1.1 404 Not Found");
}

#[test]
fn browser_and_nc_users_chat_both_ways() {
    let (server, addr) = start(&[]);
    let mut nc = server.login("nina");
    let mut web = ws_login(addr, "wati");
    // Broadcasts both ways.
    send(&mut web, "halo dari browser");
    nc.expect("[wati] halo dari browser");
    nc.send("halo dari nc");
    expect(&mut web, "[nina] halo dari nc");
    // Private messages both ways.
    send(&mut web, "send-to nina rahasia");
    nc.expect("Pesan pribadi dari [wati] rahasia");
    nc.send("send-to wati juga rahasia");
    expect(&mut web, "Pesan pribadi dari [nina] juga rahasia");
    // Who is online crosses doors; so does one login per name.
    send(&mut web, "list-user");
    expect(&mut web, "list user : nina, wati.");
    let mut again = ws(addr);
    send(&mut again, "login nina pw");
    expect(
        &mut again,
        "Username tersebut telah melakukan login sebelumnya.",
    );
    // A message with `\n` in it is several lines.
    send(&mut web, "satu\ndua\r\ntiga\n");
    nc.expect("[wati] satu");
    nc.expect("[wati] dua");
    nc.expect("[wati] tiga");
    // Lines the nc user sends in one write (a batched broadcast) arrive as
    // one message each, without their `\n`.
    nc.send_raw(b"a\nb\nc\n");
    expect(&mut web, "[nina] a");
    expect(&mut web, "[nina] b");
    expect(&mut web, "[nina] c");
    // Binary messages are lossily decoded text; control characters go.
    web.send(Message::binary(b"bin\xfeary\x1b[2J".to_vec()))
        .unwrap();
    nc.expect("[wati] bin\u{fffd}ary[2J");
    // Leaving through the browser: OFFLINE for the others.
    web.close(None).unwrap();
    nc.expect("Teman anda [wati] telah offline");
}

#[test]
fn prompts_too_long_and_ping_are_messages() {
    let (_server, addr) = start(&[]);
    let mut w = ws(addr);
    // A prompt is a message of its own, without a newline.
    send(&mut w, "regist");
    expect(&mut w, "Username : ");
    send(&mut w, "budi");
    expect(&mut w, "Password : ");
    send(&mut w, "rahasia");
    expect(&mut w, "Anda berhasil terdaftar");
    // Two prompts in one turn stay two messages.
    send(&mut w, "login\nbudi");
    expect(&mut w, "Username : ");
    expect(&mut w, "Password : ");
    send(&mut w, "rahasia");
    expect(&mut w, "Login sukses");
    // Over 4096 bytes: TOO_LONG, and the connection stays open.
    send(&mut w, &"x".repeat(5000));
    expect(&mut w, "Pesan terlalu panjang (maksimal 4096 byte)");
    // Exactly 4096 is a line.
    send(&mut w, &format!("send-to budi {}", "y".repeat(4096 - 13)));
    let got = recv(&mut w);
    assert!(got.starts_with("Pesan pribadi dari [budi] yyy") && got.len() > 4000);
    // Help is several lines: several messages.
    send(&mut w, "help");
    let first = recv(&mut w);
    let second = recv(&mut w);
    assert!(!first.is_empty() && !second.is_empty() && first != second);
    // Pings get pongs with the same payload.
    w.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match w.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Text(_) => {} // the rest of help
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_message_over_64_kib_closes_with_1009() {
    let (_server, addr) = start(&[]);
    let mut w = ws(addr);
    // 64 KiB exactly is still a message (TOO_LONG: over the line limit).
    send(&mut w, &"z".repeat(64 * 1024));
    expect(&mut w, "Pesan terlalu panjang (maksimal 4096 byte)");
    let _ = w.send(Message::text("q".repeat(64 * 1024 + 1)));
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no close frame");
        match w.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Size);
                break;
            }
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn origins_foreign_refused_own_and_listed_accepted() {
    let (_server, addr) = start(&[
        "--web-origin",
        "https://chat.example.org,http://friend.test:8080",
    ]);
    let refused = |origin: &str| match try_ws(addr, Some(origin)) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("{origin} was let in"),
        Err(e) => panic!("{origin}: {e}"),
    };
    assert_eq!(refused("http://evil.example"), 403);
    assert_eq!(refused("null"), 403);
    assert_eq!(refused("https://chat.example.org.evil.example"), 403);
    // Same host, other scheme or port: another origin.
    assert_eq!(refused(&format!("https://{addr}")), 403);
    assert_eq!(
        refused(&format!("http://127.0.0.1:{}", addr.port() + 1)),
        403
    );
    // The page's own origin, those listed, and no Origin at all (not a
    // browser) are let in.
    for origin in [
        Some(format!("http://{addr}")),
        Some("https://chat.example.org".to_owned()),
        Some("HTTP://Friend.test:8080".to_owned()),
        None,
    ] {
        let mut w = try_ws(addr, origin.as_deref()).expect("refused");
        send(&mut w, "list-user");
        expect(&mut w, "Anda harus login terlebih dahulu");
    }
}

#[test]
fn the_door_is_off_by_default_and_a_busy_port_stops_the_start() {
    let server = Server::start(&[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!server.log_text().contains("web listening"));
    drop(server);
    // A door that cannot listen stops the start, naming the door.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--accounts", ":memory:", "--history", ":memory:"])
        .args(["--port", "0", "--web-port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("web door") && stderr.contains(&port),
        "{stderr}"
    );
}

#[test]
fn a_slow_browser_is_cut_off_like_any_reader() {
    let (server, addr) = start(&[]);
    // A browser that reads nothing, with a small receive window so the
    // kernel's buffers do not hide how far behind it is.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let (mut w, _) = tungstenite::client::client(request, stream).unwrap();
    send(&mut w, "regist lambat pw");
    expect(&mut w, "Anda berhasil terdaftar");
    send(&mut w, "login lambat pw");
    expect(&mut w, "Login sukses");
    let mut nc = server.login("cepat");
    // About 8 MB of chat is sent to it: the kernel holds up to about 4 MB
    // (the server's send buffer), then the server's own 1 MiB fills.
    let line = format!("{}\n", "m".repeat(1000));
    for _ in 0..8000 {
        nc.send_raw(line.as_bytes());
    }
    nc.expect("Teman anda [lambat] telah offline");
    assert!(
        common::wait_for(REPLY_TIMEOUT, || server.log_text().contains("too slow")),
        "not cut off as a slow reader:\n{}",
        common::tail(&server.log_text())
    );
    drop(w);
}

#[test]
fn passwords_and_message_text_are_never_logged_even_at_trace() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--accounts", ":memory:", "--history", ":memory:"])
        .args(["--hash-params", common::FAST_HASH])
        .args(["--port", "0", "--web-port", "0", "--log-level", "trace"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("web listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    /// Kills the server if the test fails half-way.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.0 as i32, libc::SIGKILL);
            }
        }
    }
    let guard = Kill(child.id());
    let addr: SocketAddr = rx.recv_timeout(REPLY_TIMEOUT).unwrap().parse().unwrap();
    let mut w = ws(addr);
    send(&mut w, "regist rahasiawan Pw-s3cr3t-xyz");
    expect(&mut w, "Anda berhasil terdaftar");
    send(&mut w, "login rahasiawan Pw-s3cr3t-xyz");
    expect(&mut w, "Login sukses");
    send(&mut w, "a-very-private-message-text");
    send(&mut w, "list-user");
    expect(&mut w, "list user : rahasiawan.");
    drop(w);
    // Stopped the ordinary way; once it is reaped its pid is not ours.
    std::mem::forget(guard);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let log = reader.join().unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "not a verbose log:\n{log}"
    );
    assert!(!log.contains("s3cr3t"), "a password was logged:\n{log}");
    assert!(
        !log.contains("a-very-private"),
        "message text was logged:\n{log}"
    );
}

#[test]
fn max_clients_counts_every_door_and_a_browser_over_it_gets_503() {
    let (server, addr) = start(&["--max-clients", "1"]);
    let mut nc = server.connect();
    nc.send("help");
    let _ = nc.line();
    let answer = http(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&answer), "HTTP/1.1 503 Service Unavailable");
    assert!(
        answer.ends_with("Server penuh, coba lagi nanti\n"),
        "{answer}"
    );
    drop(nc);
    // Once the plain user has gone, the browser gets in (and counts).
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let answer = http(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        if status(&answer) == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "never let in: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The page's connection may take a moment to be seen closed.
    let _w = loop {
        match try_ws(addr, None) {
            Ok(w) => break w,
            Err(e) => assert!(Instant::now() < deadline, "never let in: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut refused = server.connect();
    refused.expect("Server penuh, coba lagi nanti");
}

/// With a certificate (the TLS door's flags), the browser door serves HTTPS
/// and WSS with it: the page, and the WebSocket chatting with a plain user.
#[test]
fn with_a_certificate_the_door_is_https_and_wss() {
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!("chat-web-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let (server, addr) = start(&[
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--tls-port",
        "0",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let mut roots = RootCertStore::empty();
    roots.add(pair.cert.der().clone()).unwrap();
    let config = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tls = |config: &Arc<ClientConfig>| {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        StreamOwned::new(
            ClientConnection::new(Arc::clone(config), name).unwrap(),
            tcp,
        )
    };
    // HTTPS: the page.
    let mut s = tls(&config);
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), "HTTP/1.1 200 OK");
    assert!(answer.contains("<html lang=\"id\">"));
    // Plain HTTP on it is not served.
    let plain = http(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(!plain.contains("200 OK"), "{plain}");
    // WSS: the page's own origin is https://, so http:// is another site.
    let port = addr.port();
    #[allow(clippy::result_large_err)] // tungstenite's handshake error, in a test
    let upgrade = |origin: &str| {
        let mut request = format!("ws://localhost:{port}/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        tungstenite::client::client(request, tls(&config))
    };
    match upgrade(&format!("http://localhost:{port}")) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status().as_u16(), 403)
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a page of another origin was let in"),
    }
    let (mut w, _) = upgrade(&format!("https://localhost:{port}")).expect("WSS refused");
    let mut nc = server.login("nina");
    w.send(Message::text("regist wati pw")).unwrap();
    assert_eq!(
        w.read().unwrap().into_text().unwrap().as_str(),
        "Anda berhasil terdaftar"
    );
    w.send(Message::text("login wati pw")).unwrap();
    assert_eq!(
        w.read().unwrap().into_text().unwrap().as_str(),
        "Login sukses"
    );
    w.send(Message::text("halo lewat wss")).unwrap();
    nc.expect("[wati] halo lewat wss");
    nc.send("halo juga");
    assert_eq!(
        w.read().unwrap().into_text().unwrap().as_str(),
        "[nina] halo juga"
    );
    w.close(None).unwrap();
    nc.expect("Teman anda [wati] telah offline");
}

/// Browsers in an audience too large to be written in one go (the round is
/// written a slice per turn) while two users broadcast at once, so a browser
/// still holding one batch is handed the next: every browser hears every
/// line once, each sender's in order, all in the same order, with the
/// private lines where they were sent.
#[test]
fn browsers_in_a_large_audience_hear_every_broadcast_in_order_with_private_lines_between() {
    const READERS: usize = 140;
    const LINES: usize = 40;
    let (server, addr) = start(&[]);
    let mut senders = [server.login("ana"), server.login("budi")];
    let mut readers: Vec<Ws> = (0..READERS)
        .map(|i| ws_login(addr, &format!("reader{i}")))
        .collect();
    let picked = [0, READERS / 2, READERS - 1];
    for (s, sender) in senders.iter_mut().enumerate() {
        let mut script = String::new();
        for i in 0..LINES {
            script.push_str(&format!("line {s}.{i}\n"));
            if s == 0 && i % 10 == 3 {
                for &r in &picked {
                    script.push_str(&format!("send-to reader{r} psst {i}\n"));
                }
            }
        }
        sender.send_raw(script.as_bytes());
    }
    let mut first_order: Option<Vec<String>> = None;
    for (r, reader) in readers.iter_mut().enumerate() {
        let mut heard = Vec::new();
        let mut next = [0; 2];
        let mut private = 0;
        while heard.len() < 2 * LINES {
            let text = recv(reader);
            if let Some(psst) = text.strip_prefix("Pesan pribadi dari [ana] psst ") {
                // After ana's line it follows, before her next one.
                assert!(picked.contains(&r), "reader{r}: {text}");
                assert_eq!(psst, format!("{}", next[0] - 1), "reader{r}");
                private += 1;
                continue;
            }
            let (name, s) = if text.starts_with("[ana] ") {
                ("ana", 0)
            } else {
                ("budi", 1)
            };
            assert_eq!(text, format!("[{name}] line {s}.{}", next[s]), "reader{r}");
            next[s] += 1;
            heard.push(text);
        }
        assert_eq!(private, if picked.contains(&r) { LINES / 10 } else { 0 });
        match &first_order {
            None => first_order = Some(heard),
            Some(order) => assert_eq!(&heard, order, "reader{r} heard another order"),
        }
    }
    for &r in &picked {
        let reader = &mut readers[r];
        reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(reader.read().is_err(), "reader{r} heard more");
    }
}
