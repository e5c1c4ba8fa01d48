//! The TLS door under load (issue 12's benchmark): the client side of TLS
//! for the generator, and three scenarios run against ours and ngircd, each
//! with its TLS port open, in the same run as the plaintext figures.
//!
//! - `tls-fanout`: the fan-out workload of `scenarios::fanout` (10 senders,
//!   C clients) on one server, once through the plain port and once through
//!   the TLS port, the order alternating between calls, so that the ratio
//!   TLS/plain is measured side by side on the same process.
//! - `tls-storm`: two logged-in TLS users ping-pong while S new connections
//!   do a TLS handshake and log in (low hash cost: the handshakes are the
//!   load, not argon2).
//! - `tls-connections`: N logged-in idle TLS connections; server RSS growth
//!   per connection.
//!
//! The client is rustls, sans-IO, driven by the generator's own mio loop
//! (`load.rs` calls [`flush`] and [`read`] for a client that has a TLS
//! connection), so one thread still drives every socket. It offers only TLS
//! 1.3 with AES-128-GCM: ours prefers that suite anyway, and ngircd (GnuTLS)
//! would otherwise follow the client's order; with one suite both servers do
//! the same cryptographic work per byte. The certificate is a fresh P-256
//! self-signed one for localhost made with rcgen per scenario call (no
//! openssl needed), trusted by the client and nothing else.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, ClientConnection, RootCertStore};
use serde_json::{Value, json};

use crate::load::{Dest, Gen, Offer, Proto, percentile};
use crate::report::Row;
use crate::scenarios::{LOW_HASH, Plan, SENDERS};
use crate::servers::{Kind, Launch, Running, Start};

/// The scenarios this module runs; `tls` on the command line means all.
pub const SCENARIOS: [&str; 3] = ["tls-fanout", "tls-storm", "tls-connections"];

/// Parses one `--scenarios` item of this module's; `tls` expands to all
/// three TLS scenarios. Other items are `None` (main knows the rest).
pub fn scenario_names(item: &str) -> Option<Vec<String>> {
    match item {
        "tls" => Some(SCENARIOS.iter().map(|s| s.to_string()).collect()),
        s if SCENARIOS.contains(&s) => Some(vec![s.to_string()]),
        _ => None,
    }
}

/// The figures shown per TLS scenario (see `report::metrics`).
pub fn metrics(scenario: &str) -> &'static [(&'static str, &'static str)] {
    match scenario {
        "tls-fanout" => &[
            ("deliveries_per_s", "deliveries/s"),
            ("p99_ms", "p99 latency, ms"),
            ("lost", "lost messages"),
            ("cpu_ms_per_1000", "server CPU ms / 1000 deliveries"),
            ("gen_cpu_util", "generator CPU share"),
        ],
        "tls-storm" => &[
            ("rtt_p99_before_ms", "chat RTT p99 before, ms"),
            ("rtt_p99_during_ms", "chat RTT p99 during, ms"),
            ("rtt_max_during_ms", "chat RTT max during, ms"),
            ("handshakes_per_s", "handshakes + logins / s"),
            (
                "server_cpu_ms_per_handshake",
                "server CPU ms / handshake + login",
            ),
        ],
        "tls-connections" => &[
            (
                "rss_per_conn_bytes",
                "server RSS / idle TLS connection, bytes",
            ),
            ("broadcast_ms", "one broadcast reaches all, ms"),
            ("setup_s", "connect + handshake + log in all, s"),
        ],
        _ => &[],
    }
}

/// A fresh client connection to the TLS door, named `localhost` as the
/// certificate says.
pub fn connection(config: &Arc<ClientConfig>) -> Result<Box<ClientConnection>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| format!("server name: {e}"))?;
    ClientConnection::new(config.clone(), name)
        .map(Box::new)
        .map_err(|e| format!("TLS client: {e}"))
}

/// Moves queued plaintext into rustls and its records into the socket, until
/// the socket would block or nothing is left. Plaintext given before the
/// handshake finished waits inside rustls (up to its 64 KiB limit; the rest
/// stays in `wbuf`) and goes out when [`read`] completes the handshake.
/// Bounded: 64 rounds of at most 64 KiB each per call; what is left waits
/// for the next writable event or the next call.
pub fn flush(conn: &mut ClientConnection, sock: &mut TcpStream, wbuf: &mut Vec<u8>) {
    for _ in 0..64 {
        let mut moved = 0;
        if !wbuf.is_empty() {
            match conn.writer().write(wbuf) {
                Ok(n) => {
                    wbuf.drain(..n);
                    moved = n;
                }
                Err(_) => return,
            }
        }
        while conn.wants_write() {
            match conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: the writable event brings us back; any other
                // error shows up as a close on the read side.
                Err(_) => return,
            }
        }
        // Done, or rustls takes no more plaintext before the handshake.
        if wbuf.is_empty() || moved == 0 {
            return;
        }
    }
}

/// Reads every record the socket has, decrypts, and appends the plaintext to
/// `rbuf`. Returns true when the connection is over: the server closed it,
/// sent `close_notify`, or TLS failed (said on stderr with the client's name,
/// since a failed handshake is a finding, not noise).
///
/// The socket is read in chunks as large as `scratch` allows (half of it),
/// like the plain generator's reads, and rustls is fed from memory: its own
/// `read_tls` reads at most 4 KiB per system call, which made the TLS
/// generator pay two or three reads for every one of the plain generator's
/// and so slowed it down, with fewer lines per server round as the result.
pub fn read(
    conn: &mut ClientConnection,
    sock: &mut TcpStream,
    scratch: &mut [u8],
    rbuf: &mut Vec<u8>,
    name: &str,
) -> bool {
    let (wire, plain) = scratch.split_at_mut(scratch.len() / 2);
    loop {
        let n = match sock.read(wire) {
            Ok(0) => return true,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::NotConnected => return false,
            Err(_) => return true,
        };
        let mut fed = &wire[..n];
        while !fed.is_empty() {
            match conn.read_tls(&mut fed) {
                // close_notify came: nothing more is read.
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return true,
            }
            if let Err(e) = conn.process_new_packets() {
                eprintln!("chat-bench: {name}: TLS: {e}");
                // Let rustls's alert go out before the close.
                let _ = conn.write_tls(sock);
                return true;
            }
            loop {
                match conn.reader().read(plain) {
                    Ok(0) => return true, // close_notify
                    Ok(n) => rbuf.extend_from_slice(&plain[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return true,
                }
            }
        }
    }
}

/// The certificate and key the server is started with, and the client
/// configuration that trusts exactly that certificate.
pub struct Door {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ClientConfig>,
}

impl Door {
    /// Makes a self-signed P-256 pair for localhost in `dir`.
    pub fn new(dir: &Path) -> Result<Door, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| format!("rcgen: {e}"))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&cert, pair.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
        fs::write(&key, pair.signing_key.serialize_pem())
            .map_err(|e| format!("{}: {e}", key.display()))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(pair.cert.der().clone())
            .map_err(|e| format!("trusting the dev certificate: {e}"))?;
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .retain(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256);
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Door {
            cert,
            key,
            config: Arc::new(config),
        })
    }

    /// A generator whose clients all go through the TLS door at `addr`.
    fn gen_for(&self, proto: Proto, addr: SocketAddr) -> Result<Gen, String> {
        let mut g = Gen::new(proto, addr)?;
        g.tls = Some(self.config.clone());
        Ok(g)
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Starts ours or ngircd with its TLS port open beside the plain one;
/// returns the server and the TLS address once both listen.
fn start(
    launch: &Launch,
    kind: Kind,
    opts: &Start<'_>,
    door: &Door,
) -> Result<(Running, SocketAddr), String> {
    let port = free_port()?;
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = match kind {
        Kind::Ours => launch.start_with(
            kind,
            opts,
            &[
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert".into(),
                door.cert.display().to_string(),
                "--tls-key".into(),
                door.key.display().to_string(),
            ],
            "",
        )?,
        // GnuTLS; ngircd reads the pair as root, before dropping to nobody.
        Kind::Ngircd => launch.start_with(
            kind,
            opts,
            &[],
            &format!(
                "\n[SSL]\n\tCertFile = {}\n\tKeyFile = {}\n\tPorts = {port}\n",
                door.cert.display(),
                door.key.display()
            ),
        )?,
        other => return Err(format!("{} is not run with a TLS door", other.name())),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&tls_addr, Duration::from_millis(200)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            let tail = server.log_tail();
            server.stop();
            return Err(format!(
                "{} does not listen for TLS on {tls_addr}: {tail}",
                kind.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, tls_addr))
}

/// Whether the TLS scenarios run against this server: ours and ngircd (the
/// floor has no TLS; ours-irc and InspIRCd are not measured with TLS yet).
pub fn runs_on(kind: Kind) -> bool {
    matches!(kind, Kind::Ours | Kind::Ngircd)
}

/// Runs one TLS scenario against one server.
pub fn run(launch: &Launch, kind: Kind, plan: &Plan, scenario: &str) -> Result<Vec<Value>, String> {
    let door = Door::new(&launch.work_dir.join("tls"))?;
    match scenario {
        "tls-fanout" => fanout(launch, kind, plan, &door),
        "tls-storm" => storm(launch, kind, plan, &door),
        "tls-connections" => connections(launch, kind, plan, &door),
        _ => Err(format!("unknown TLS scenario {scenario:?}")),
    }
}

/// Which door goes first in the next fan-out: alternates, so that neither
/// always meets a fresh process.
static TURN: AtomicUsize = AtomicUsize::new(0);

/// The case that holds what [`seal_ns_per_byte`] costs per 1000 deliveries.
const SEALING_ALONE: &str = "sealing alone";

/// What sealing costs by itself on this machine, in ns per byte of
/// plaintext: copying lines into 16 KiB records and encrypting them with
/// AES-128-GCM, as the server's rustls does with ring (a header and a tag
/// per record besides; the copy is there because ring seals in place). Each
/// reader has its own key, so a TLS server pays this once per delivery on top
/// of what the same delivery costs in plaintext, however well it batches: it
/// is the floor under the TLS/plain ratio. Measured on the generator's CPU,
/// the same model as the server's, for 300 ms.
fn seal_ns_per_byte() -> Result<f64, String> {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    const RECORD: usize = 16 * 1024;
    let key = UnboundKey::new(&AES_128_GCM, &[7; 16]).map_err(|e| format!("AES key: {e}"))?;
    let key = LessSafeKey::new(key);
    let lines = vec![b'x'; RECORD];
    let mut record = Vec::with_capacity(RECORD + 32);
    let mut sealed: u64 = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        for _ in 0..16 {
            record.clear();
            record.extend_from_slice(&[0x17, 0x03, 0x03, 0x40, 0x11]);
            record.extend_from_slice(&lines);
            let mut nonce = [0; 12];
            nonce[4..].copy_from_slice(&sealed.to_be_bytes());
            let (header, body) = record.split_at_mut(5);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&*header),
                    body,
                )
                .map_err(|e| format!("AES-GCM: {e}"))?;
            record.extend_from_slice(tag.as_ref());
            std::hint::black_box(&record);
            sealed += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64;
    Ok(ns / (sealed as f64 * RECORD as f64))
}

fn fanout(launch: &Launch, kind: Kind, plan: &Plan, door: &Door) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    // Before the server starts, so nothing else runs; reported with the
    // size of the lines delivered, once known.
    let seal_per_byte = if kind == Kind::Ours {
        Some(seal_ns_per_byte()?)
    } else {
        None
    };
    let mut line_bytes = 0;
    for &c in &plan.clients {
        let (server, tls_addr) = start(
            launch,
            kind,
            &Start {
                hash_params: Some(LOW_HASH),
                max_clients: c + 100,
                ours_flags: &[],
                ngircd_default: false,
            },
            door,
        )?;
        let tls_first = TURN.fetch_add(1, Ordering::Relaxed) % 2 == 1;
        let result = (|| -> Result<(), String> {
            for tls in [tls_first, !tls_first] {
                let label = if tls { "TLS" } else { "plain" };
                let mut g = if tls {
                    door.gen_for(kind.proto(), tls_addr)?
                } else {
                    Gen::new(kind.proto(), server.addr)?
                };
                let setup = g.open_all(
                    if tls { "t" } else { "u" },
                    c,
                    SENDERS,
                    true,
                    Duration::from_secs(120),
                )?;
                g.broadcast_time(0, Dest::All, c - 1, Duration::from_secs(30))?;
                g.idle(Duration::from_millis(200))?;
                let suite = g.tls_suite();
                let mut offers: Vec<(String, Offer)> = plan
                    .rates
                    .iter()
                    .map(|&r| (format!("{}k/s", (r / 1000.0).round()), Offer::Rate(r)))
                    .collect();
                offers.push(("max".into(), Offer::Closed(plan.window)));
                for (rate, offer) in offers {
                    let r = g.fanout(
                        SENDERS,
                        (c - 1) as u32,
                        offer,
                        plan.phase,
                        plan.drain,
                        server.pid,
                    )?;
                    let per_1000 = |ns: u64| {
                        if r.received == 0 {
                            f64::NAN
                        } else {
                            ns as f64 / 1e6 / r.received as f64 * 1000.0
                        }
                    };
                    line_bytes = line_bytes.max(r.line_bytes);
                    let (unsent_clients, unsent_bytes) = g.unsent();
                    if r.lost > 0 {
                        eprintln!(
                            "  tls-fanout {} C={c} {rate} {label}: {} lost; the generator still holds output for {unsent_clients} clients ({unsent_bytes} bytes queued)",
                            kind.name(),
                            r.lost
                        );
                    }
                    out.push(json!({
                        "scenario": "tls-fanout",
                        "gen_unsent_clients": unsent_clients,
                        "case": format!("C={c} {rate} {label}"),
                        "server": kind.name(),
                        "clients": c,
                        "offer": rate,
                        "door": label,
                        "tls_suite": suite,
                        "sent": r.sent,
                        "received": r.received,
                        "lost": r.lost,
                        "deliveries_per_s": r.deliveries_per_s,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "max_ms": r.max_ms,
                        "cpu_ms_per_1000": per_1000(r.server_cpu_ns),
                        "cpu_ms_per_1000_ticks": per_1000(r.server_ticks_ns),
                        "server_cpu_util": r.server_cpu_ns as f64 / r.wall_ns as f64,
                        "gen_cpu_util": r.gen_cpu_ns as f64 / r.wall_ns as f64,
                        "setup_s": setup.as_secs_f64(),
                        "line_bytes": r.line_bytes,
                    }));
                    eprintln!(
                        "  tls-fanout {:<6} C={c:<5} {rate:<7} {label:<5} {:>9.0} deliv/s  p99 {:>7.3} ms  lost {:>6}  cpu/1000 {:.4} ms  (server {:.0}%, gen {:.0}%)",
                        kind.name(),
                        r.deliveries_per_s,
                        r.p99_ms,
                        r.lost,
                        per_1000(r.server_cpu_ns),
                        100.0 * r.server_cpu_ns as f64 / r.wall_ns as f64,
                        100.0 * r.gen_cpu_ns as f64 / r.wall_ns as f64,
                    );
                }
                // The clients close here; let the server see them all leave
                // (and tell whoever is left) before the other door's group.
                drop(g);
                std::thread::sleep(Duration::from_millis(if c > 100 { 1500 } else { 300 }));
            }
            Ok(())
        })();
        let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
        server.stop();
        result?;
    }
    if let Some(per_byte) = seal_per_byte.filter(|_| line_bytes > 0) {
        let seal = per_byte * line_bytes as f64 / 1000.0;
        eprintln!(
            "  tls-fanout sealing alone ({line_bytes}-byte lines in 16 KiB records, AES-128-GCM): cpu/1000 {seal:.4} ms"
        );
        out.push(json!({
            "scenario": "tls-fanout",
            "case": SEALING_ALONE,
            "server": kind.name(),
            "cpu_ms_per_1000": seal,
            "line_bytes": line_bytes,
        }));
    }
    Ok(out)
}

fn storm(launch: &Launch, kind: Kind, plan: &Plan, door: &Door) -> Result<Vec<Value>, String> {
    let s = plan.storm;
    let (server, tls_addr) = start(
        launch,
        kind,
        &Start {
            hash_params: Some(LOW_HASH),
            max_clients: s + 100,
            ours_flags: &[],
            ngircd_default: false,
        },
        door,
    )?;
    let mut holder: Option<Gen> = None;
    let result = (|| -> Result<Value, String> {
        let g = holder.insert(door.gen_for(kind.proto(), tls_addr)?);
        g.open_all("p", 2, 0, false, Duration::from_secs(30))?;
        let ping = |g: &mut Gen, until: &mut dyn FnMut(&mut Gen) -> Result<bool, String>| {
            g.ping_start();
            loop {
                if until(g)? {
                    break;
                }
                g.ping_step(0, 1);
                g.pump(Some(Duration::from_millis(1)))?;
            }
            Ok::<Vec<u64>, String>(g.ping_rtts())
        };
        let before_end = Instant::now() + plan.ping_before;
        let before = ping(g, &mut |_| Ok(Instant::now() >= before_end))?;
        let mut op = g.opener("s", s, 0, false);
        // Every handshake at once (ngircd: 8 at a time, its listen backlog
        // is 10).
        if g.proto() != Proto::Irc {
            op.window = s;
        }
        let limit = plan.storm_limit;
        let mut timed_out = false;
        let cpu0 = crate::sys::process_cpu_ns(server.pid);
        let during = ping(g, &mut |g| {
            if op.started.elapsed() > limit {
                timed_out = true;
                return Ok(true);
            }
            g.open_step(&mut op)
        })?;
        let cpu = crate::sys::process_cpu_ns(server.pid).saturating_sub(cpu0);
        let storm_time = op.started.elapsed();
        let p = |v: &[u64], q| percentile(v, q) as f64 / 1e6;
        let per_s = s as f64 / storm_time.as_secs_f64();
        let cpu_per = cpu as f64 / 1e6 / s as f64;
        eprintln!(
            "  tls-storm {:<6} S={s}: chat RTT p99 before {:.3} ms, during {:.3} ms (p50 {:.3}, max {:.3}, {} samples); {per_s:.0} handshakes+logins/s, server {cpu_per:.3} ms CPU each{}",
            kind.name(),
            p(&before, 99.0),
            p(&during, 99.0),
            p(&during, 50.0),
            p(&during, 100.0),
            during.len(),
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        Ok(json!({
            "scenario": "tls-storm",
            "case": format!("S={s}"),
            "server": kind.name(),
            "storm": s,
            "completed": !timed_out,
            "tls_suite": g.tls_suite(),
            "rtt_p50_before_ms": p(&before, 50.0),
            "rtt_p99_before_ms": p(&before, 99.0),
            "rtt_p50_during_ms": p(&during, 50.0),
            "rtt_p99_during_ms": p(&during, 99.0),
            "rtt_max_during_ms": p(&during, 100.0),
            "rtt_samples_during": during.len(),
            "handshakes_per_s": per_s,
            "server_cpu_ms_per_handshake": cpu_per,
            "storm_s": storm_time.as_secs_f64(),
        }))
    })();
    let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
    server.stop();
    drop(holder);
    Ok(vec![result?])
}

fn connections(
    launch: &Launch,
    kind: Kind,
    plan: &Plan,
    door: &Door,
) -> Result<Vec<Value>, String> {
    let n = plan.connections;
    let (mut server, tls_addr) = start(
        launch,
        kind,
        &Start {
            hash_params: Some(LOW_HASH),
            max_clients: n + 100,
            ours_flags: &[],
            ngircd_default: false,
        },
        door,
    )?;
    let mut holder: Option<Gen> = None;
    let result = (|| -> Result<Value, String> {
        std::thread::sleep(Duration::from_millis(200));
        let rss0 = crate::sys::process_rss(server.pid);
        let g = holder.insert(door.gen_for(kind.proto(), tls_addr)?);
        let setup = g.open_all("u", n, 1, false, Duration::from_secs(300))?;
        let dest = if kind == Kind::Ngircd {
            Dest::Everyone
        } else {
            Dest::All
        };
        // A barrier: every handshake done and every login through.
        g.broadcast_time(0, dest, n - 1, Duration::from_secs(30))?;
        g.idle(Duration::from_millis(500))?;
        let rss1 = crate::sys::process_rss(server.pid);
        let mut times = Vec::new();
        for _ in 0..plan.broadcasts.min(3) {
            let t = g.broadcast_time(0, dest, n - 1, Duration::from_secs(30))?;
            times.push(t.as_nanos() as u64);
            g.idle(Duration::from_millis(100))?;
        }
        times.sort_unstable();
        let per_conn = rss1.saturating_sub(rss0) as f64 / n as f64;
        let bcast = percentile(&times, 50.0) as f64 / 1e6;
        eprintln!(
            "  tls-connections {:<6} N={n}: RSS {:.1} -> {:.1} MiB, {per_conn:.0} B/conn; broadcast to all {bcast:.2} ms; setup {:.1} s",
            kind.name(),
            rss0 as f64 / 1048576.0,
            rss1 as f64 / 1048576.0,
            setup.as_secs_f64()
        );
        Ok(json!({
            "scenario": "tls-connections",
            "case": format!("N={n}"),
            "server": kind.name(),
            "clients": n,
            "tls_suite": g.tls_suite(),
            "rss_start_bytes": rss0,
            "rss_bytes": rss1,
            "rss_per_conn_bytes": per_conn,
            "broadcast_ms": bcast,
            "setup_s": setup.as_secs_f64(),
        }))
    })();
    let alive = server.alive();
    let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
    server.stop();
    drop(holder);
    let v = result?;
    if !alive {
        return Err(format!("{} died during the run", kind.name()));
    }
    Ok(vec![v])
}

fn value(rows: &[Row], scenario: &str, case: &str, metric: &str, server: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.case == case && r.metric == metric)?
        .values
        .get(server)
        .copied()
}

/// Issue 12's goals, in the shape of `report::targets`.
pub fn targets(rows: &[Row], plan_clients: &[usize], storm: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut add = |text: String, measured: String, met: Option<bool>| {
        out.push(json!({"target": text, "measured": measured, "met": met}));
    };
    let cpu = |case: String, server| value(rows, "tls-fanout", &case, "cpu_ms_per_1000", server);
    let seal = cpu(SEALING_ALONE.to_owned(), "ours");
    let ratio =
        |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    for &c in plan_clients {
        for rate in ["max", "100k/s"] {
            let (tls, plain) = (
                cpu(format!("C={c} {rate} TLS"), "ours"),
                cpu(format!("C={c} {rate} plain"), "ours"),
            );
            let r = ratio(tls, plain);
            // The floor: plaintext plus sealing alone, nothing else.
            let floor = plain
                .zip(seal)
                .filter(|(p, _)| *p > 0.0)
                .map(|(p, s)| format!("; sealing alone {s:.4} would make it {:.2}x", (p + s) / p))
                .unwrap_or_default();
            add(
                format!(
                    "TLS fan-out, C={c}, {rate}: server CPU per delivery, ours TLS <= 1.5x ours plain"
                ),
                r.map_or("-".into(), |r| {
                    format!(
                        "{:.4} / {:.4} ms per 1000 = {r:.2}x{floor}",
                        tls.unwrap_or_default(),
                        plain.unwrap_or_default()
                    )
                }),
                r.map(|r| r <= 1.5),
            );
            if rate != "max" {
                // As for the plaintext goal against ngircd: at the maximum
                // rate, where batching shows; at a fixed low rate both pay
                // mostly one write per message and reader.
                continue;
            }
            let (ours, ng) = (
                cpu(format!("C={c} {rate} TLS"), "ours"),
                cpu(format!("C={c} {rate} TLS"), "ngircd"),
            );
            let r = ratio(ours, ng);
            add(
                format!(
                    "TLS fan-out, C={c}, {rate}: server CPU per delivery, ours <= 0.3x ngircd (both TLS)"
                ),
                r.map_or("-".into(), |r| format!("ours/ngircd = {r:.3}")),
                r.map(|r| r <= 0.3),
            );
        }
    }
    let v = value(
        rows,
        "tls-storm",
        &format!("S={storm}"),
        "rtt_p99_during_ms",
        "ours",
    );
    add(
        format!("chat round-trip p99 during a storm of {storm} TLS handshakes <= 10 ms"),
        v.map_or("-".into(), |v| format!("{v:.3} ms")),
        v.map(|v| v <= 10.0),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    #[test]
    fn tls_expands_to_the_three_scenarios() {
        assert_eq!(scenario_names("tls").map(|v| v.len()), Some(3));
        assert_eq!(
            scenario_names("tls-storm"),
            Some(vec!["tls-storm".to_string()])
        );
        assert_eq!(scenario_names("fanout"), None);
        assert_eq!(scenario_names("tlsx"), None);
    }

    /// The generator's sans-IO client against a blocking rustls server that
    /// echoes one line: the handshake, a line queued before it finished, and
    /// the reply, through `flush` and `read` on a non-blocking mio socket.
    #[test]
    fn the_generator_client_speaks_tls_with_the_dev_certificate() {
        let dir = std::env::temp_dir().join(format!("chat-bench-tls-test-{}", std::process::id()));
        let door = Door::new(&dir).unwrap();
        let cert = CertificateDer::from_pem_slice(&fs::read(&door.cert).unwrap()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(&fs::read(&door.key).unwrap()).unwrap();
        let server_config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = ServerConnection::new(server_config).unwrap();
            let mut tls = StreamOwned::new(conn, sock);
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while b[0] != b'\n' && line.len() < 100 {
                tls.read_exact(&mut b).unwrap();
                line.push(b[0]);
            }
            tls.write_all(b"echo ").unwrap();
            tls.write_all(&line).unwrap();
            tls.flush().unwrap();
            // Until the client closes.
            let _ = tls.read(&mut b);
        });
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        let mut sock = TcpStream::connect(addr).unwrap();
        poll.registry()
            .register(
                &mut sock,
                mio::Token(0),
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
            .unwrap();
        let mut conn = connection(&door.config).unwrap();
        let (mut wbuf, mut rbuf) = (b"hello\n".to_vec(), Vec::new());
        let mut scratch = vec![0; 16 * 1024];
        let start = Instant::now();
        while !rbuf.ends_with(b"\n") && start.elapsed() < Duration::from_secs(10) {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            flush(&mut conn, &mut sock, &mut wbuf);
            let closed = read(&mut conn, &mut sock, &mut scratch, &mut rbuf, "test");
            flush(&mut conn, &mut sock, &mut wbuf);
            assert!(!closed || rbuf.ends_with(b"\n"), "closed early");
        }
        assert_eq!(rbuf, b"echo hello\n");
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        drop(sock);
        server.join().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
