//! The four scenarios, each against one freshly started server; each returns
//! one JSON record per case.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{Dest, Gen, Offer, percentile};
use crate::servers::{Kind, Launch, Start};

/// Low argon2 cost for the fan-out and connection scenarios' logins.
pub const LOW_HASH: &str = "m=256,t=1,p=1";
pub const SENDERS: usize = 10;

/// The sizes and durations of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: Vec<usize>,
    pub rates: Vec<f64>,
    pub window: u32,
    pub phase: Duration,
    pub drain: Duration,
    pub connections: usize,
    /// Bounds on getting all N in: without a channel, and in one IRC
    /// channel (every JOIN announced to everyone there: O(N²) lines).
    pub conns_limit: Duration,
    pub join_limit: Duration,
    /// Clients in the one-channel IRC case.
    pub channel_connections: usize,
    /// Idle time after the broadcasts before the connections scenario's
    /// second RSS reading (zero: none).
    pub settle: Duration,
    pub broadcasts: usize,
    pub storm: usize,
    pub storm_limit: Duration,
    pub ping_before: Duration,
    /// Flood scenario: honest users, how often each sends a line, how long
    /// the flooder floods.
    pub flood_users: usize,
    pub flood_interval: Duration,
    pub flood_phase: Duration,
}

/// One case of the flood scenario: a server, its flood setting, and whether
/// a flooder runs beside the honest users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodCase {
    /// Ours with SPEC 7's defaults: `--flood-burst 20 --flood-rate 5`.
    OursOn,
    /// Ours with flood control off (`--flood-rate 0`).
    OursOff,
    /// Ours with the defaults and no flooder: the baseline of the 2x goal.
    OursNoFlooder,
    /// Ours with the defaults, and instead of the flooder one user who
    /// broadcasts a steady 5 lines a second: exactly what flood control
    /// lets a flooder through, so the cost of that traffic itself.
    OursSteady,
    /// ngircd with its default flood protection (`ngircd-default.conf.in`).
    NgircdDefault,
}

impl FloodCase {
    pub const ALL: [FloodCase; 5] = [
        FloodCase::OursNoFlooder,
        FloodCase::OursOn,
        FloodCase::OursOff,
        FloodCase::OursSteady,
        FloodCase::NgircdDefault,
    ];

    /// The label in the JSON lines and the table.
    pub fn name(self) -> &'static str {
        match self {
            FloodCase::OursOn => "ours, flood control on",
            FloodCase::OursOff => "ours, flood control off",
            FloodCase::OursNoFlooder => "ours, no flooder",
            FloodCase::OursSteady => "ours, a user broadcasting 5 lines/s, no flooder",
            FloodCase::NgircdDefault => "ngircd, default flood protection",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            FloodCase::NgircdDefault => Kind::Ngircd,
            _ => Kind::Ours,
        }
    }

    fn flooder(self) -> bool {
        self != FloodCase::OursNoFlooder
    }

    /// Ours' flood flags, spelled out so the case does not depend on the
    /// server's defaults staying what SPEC 7 says today.
    fn ours_flags(self) -> &'static [&'static str] {
        match self {
            FloodCase::OursOn | FloodCase::OursNoFlooder | FloodCase::OursSteady => {
                &["--flood-burst", "20", "--flood-rate", "5"]
            }
            FloodCase::OursOff => &["--flood-rate", "0"],
            FloodCase::NgircdDefault => &[],
        }
    }
}

fn fmt_rate(r: f64) -> String {
    format!("{}k/s", (r / 1000.0).round())
}

/// Fan-out: C clients, 10 senders, fixed rates then a closed-loop maximum.
/// A generator for `kind`'s protocol, with its login window.
fn gen_for(kind: Kind, addr: std::net::SocketAddr) -> Result<Gen, String> {
    let mut g = Gen::new(kind.proto(), addr)?;
    if kind == Kind::Inspircd {
        g.set_open_window(500);
    }
    Ok(g)
}

pub fn fanout(launch: &Launch, kind: Kind, plan: &Plan) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for &c in &plan.clients {
        let server = launch.start(
            kind,
            &Start {
                hash_params: Some(LOW_HASH),
                max_clients: c + 100,
                ours_flags: &[],
                ngircd_default: false,
            },
        )?;
        let mut holder: Option<Gen> = None;
        let result = (|| -> Result<(), String> {
            let g = holder.insert(gen_for(kind, server.addr)?);
            let setup = g.open_all("u", c, SENDERS, true, Duration::from_secs(120))?;
            // A barrier: everyone is in before the load starts.
            g.broadcast_time(0, Dest::All, c - 1, Duration::from_secs(30))?;
            g.idle(Duration::from_millis(200))?;
            let mut offers: Vec<(String, Offer)> = plan
                .rates
                .iter()
                .map(|&r| (fmt_rate(r), Offer::Rate(r)))
                .collect();
            offers.push(("max".into(), Offer::Closed(plan.window)));
            for (label, offer) in offers {
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
                out.push(json!({
                    "scenario": "fanout",
                    "case": format!("C={c} {label}"),
                    "server": kind.name(),
                    "clients": c,
                    "offer": label,
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
                }));
                eprintln!(
                    "  fanout {:<6} C={c:<5} {:<7} {:>9.0} deliv/s  p50 {:>7.3} p99 {:>7.3} max {:>8.3} ms  lost {:>6}  cpu/1000 {:.4} ms  (server {:.0}%, gen {:.0}%)",
                    kind.name(),
                    label,
                    r.deliveries_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.lost,
                    per_1000(r.server_cpu_ns),
                    100.0 * r.server_cpu_ns as f64 / r.wall_ns as f64,
                    100.0 * r.gen_cpu_ns as f64 / r.wall_ns as f64,
                );
            }
            // Stop the server before the clients close, so that no one is
            // told about 1000 others leaving.
            Ok(())
        })();
        let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
        server.stop();
        drop(holder);
        result?;
    }
    Ok(out)
}

/// The connections scenario's two workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conns {
    /// N logged-in clients and no channel: the line protocol (a login
    /// announces nothing to the others), and ngircd and InspIRCd with no
    /// JOIN, the broadcast an operator's PRIVMSG to the server mask.
    Plain,
    /// The IRC workload, the same on every IRC server: N clients register
    /// and are in one channel (ours: `#chat`, joined by the NickServ login;
    /// ngircd, InspIRCd: `JOIN #bench` after the welcome), each JOIN
    /// announced to everyone already there (N(N+1)/2 JOIN lines), then
    /// PRIVMSGs to the channel.
    Channel,
}

impl Conns {
    /// The workloads `kind` runs: ours through its IRC door only the
    /// channel one (a login through it is a JOIN to `#chat`), the line
    /// protocol's servers only the plain one, ngircd and InspIRCd both.
    pub fn for_kind(kind: Kind) -> &'static [Conns] {
        match kind {
            Kind::OursIrc => &[Conns::Channel],
            Kind::Ngircd | Kind::Inspircd => &[Conns::Plain, Conns::Channel],
            Kind::Floor | Kind::Ours | Kind::OursWs => &[Conns::Plain],
        }
    }

    pub fn case(self, n: usize) -> String {
        match self {
            Conns::Plain => format!("N={n}"),
            Conns::Channel => format!("N={n} in one IRC channel"),
        }
    }
}

/// Connections: N logged-in clients (see [`Conns`]); RSS per connection;
/// server CPU to get them all in; one broadcast to all, timed.
pub fn connections(launch: &Launch, kind: Kind, plan: &Plan) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for &w in Conns::for_kind(kind) {
        out.push(connections_case(launch, kind, plan, w)?);
    }
    Ok(out)
}

fn connections_case(
    launch: &Launch,
    kind: Kind,
    plan: &Plan,
    workload: Conns,
) -> Result<Value, String> {
    let n = match workload {
        Conns::Plain => plan.connections,
        Conns::Channel => plan.channel_connections,
    };
    let case = workload.case(n);
    let mut server = launch.start(
        kind,
        &Start {
            hash_params: Some(LOW_HASH),
            max_clients: n + 100,
            ours_flags: &[],
            ngircd_default: false,
        },
    )?;
    let mut holder: Option<Gen> = None;
    let result = (|| -> Result<Value, String> {
        std::thread::sleep(Duration::from_millis(200));
        let rss0 = crate::sys::process_rss(server.pid);
        let g = holder.insert(gen_for(kind, server.addr)?);
        let channel = workload == Conns::Channel;
        // Plain IRC: no channel; the broadcast is an operator's PRIVMSG to
        // the server mask, so client 0 OPERs up.
        let (opers, dest, limit) = match (workload, kind.proto()) {
            (Conns::Plain, crate::load::Proto::Irc) => (1, Dest::Everyone, plan.conns_limit),
            (Conns::Channel, _) => (0, Dest::All, plan.join_limit),
            _ => (0, Dest::All, plan.conns_limit),
        };
        let cpu0 = crate::sys::process_cpu_ns(server.pid);
        let opened = g.open_bounded("u", n, opers, channel, limit);
        let stopped = opened.stopped.as_ref().map(|s| match s {
            crate::load::Stop::TimeLimit => format!("time limit of {limit:?} passed"),
            crate::load::Stop::Error(e) => e.clone(),
        });
        if stopped.is_none() {
            // A barrier: once it reached everyone, so did every JOIN line
            // sent before it. Getting all in ends there.
            g.broadcast_time(0, dest, n - 1, Duration::from_secs(60))?;
        }
        let setup = opened.started.elapsed();
        let setup_cpu_s = crate::sys::process_cpu_ns(server.pid).saturating_sub(cpu0) as f64 / 1e9;
        let joins = g.joins_seen();
        let mut times = Vec::new();
        let mut bcast_cpu_ns = 0;
        let rss1;
        let mut rss_settled = None;
        if stopped.is_none() {
            g.idle(Duration::from_millis(500))?;
            rss1 = crate::sys::process_rss(server.pid);
            for _ in 0..plan.broadcasts {
                let c0 = crate::sys::process_cpu_ns(server.pid);
                let t = g.broadcast_time(0, dest, n - 1, Duration::from_secs(30))?;
                bcast_cpu_ns += crate::sys::process_cpu_ns(server.pid).saturating_sub(c0);
                times.push(t.as_nanos() as u64);
                g.idle(Duration::from_millis(100))?;
            }
            if !plan.settle.is_zero() {
                // Idle long enough for ours to release the output buffers
                // of connections that received nothing for a sweep (it
                // sweeps every 5 s); the others get the same time.
                g.idle(plan.settle)?;
                rss_settled = Some(crate::sys::process_rss(server.pid));
            }
        } else {
            rss1 = crate::sys::process_rss(server.pid);
        }
        times.sort_unstable();
        let ready = g.ready_count();
        let per_conn = rss1.saturating_sub(rss0) as f64 / ready.max(1) as f64;
        let settled_per_conn =
            rss_settled.map(|r| r.saturating_sub(rss0) as f64 / ready.max(1) as f64);
        let bcast = (!times.is_empty()).then(|| percentile(&times, 50.0) as f64 / 1e6);
        let bcast_cpu = (!times.is_empty())
            .then(|| bcast_cpu_ns as f64 / 1e6 / (times.len() * (n - 1)) as f64 * 1000.0);
        eprintln!(
            "  connections {:<8} {case}: {ready} in after {:.1} s (server CPU {setup_cpu_s:.1} s, {joins} JOIN lines read){}; RSS {:.1} -> {:.1} MiB, {per_conn:.0} B/conn ({} after {:.0} s idle); broadcast to all {} (median of {}), server CPU {} ms / 1000 deliveries",
            kind.name(),
            setup.as_secs_f64(),
            stopped
                .as_ref()
                .map_or(String::new(), |s| format!(", STOPPED: {s}")),
            rss0 as f64 / 1048576.0,
            rss1 as f64 / 1048576.0,
            settled_per_conn.map_or("-".into(), |v| format!("{v:.0}")),
            plan.settle.as_secs_f64(),
            bcast.map_or("-".into(), |b| format!("{b:.2} ms")),
            times.len(),
            bcast_cpu.map_or("-".into(), |c| format!("{c:.4}")),
        );
        Ok(json!({
            "scenario": "connections",
            "case": case,
            "server": kind.name(),
            "workload": match workload {
                Conns::Plain => "plain",
                Conns::Channel => "channel",
            },
            "clients": n,
            "completed": stopped.is_none(),
            "stopped": stopped,
            "ready": ready,
            "closed": g.closed_count(),
            "join_lines": joins,
            "hash_params": if matches!(kind, Kind::Ours | Kind::OursIrc | Kind::OursWs) { LOW_HASH } else { "" },
            "rss_start_bytes": rss0,
            "rss_bytes": rss1,
            "rss_per_conn_bytes": per_conn,
            "rss_settled_bytes": rss_settled,
            "rss_settled_per_conn_bytes": settled_per_conn,
            "settle_s": plan.settle.as_secs_f64(),
            "broadcast_ms": bcast,
            "broadcast_max_ms": times.last().map(|&t| t as f64 / 1e6),
            "bcast_cpu_ms_per_1000": bcast_cpu,
            "setup_s": setup.as_secs_f64(),
            "setup_cpu_s": setup_cpu_s,
        }))
    })();
    let alive = server.alive();
    let result = result.map_err(|e| format!("{case}: {e}; server log: {}", server.log_tail()));
    server.stop();
    drop(holder);
    let v = result?;
    if !alive {
        return Err(format!("{} died during the run ({case})", kind.name()));
    }
    Ok(v)
}

/// Login storm: S connections register and log in (default hash cost) while
/// two logged-in users ping-pong private messages.
pub fn storm(launch: &Launch, kind: Kind, plan: &Plan) -> Result<Vec<Value>, String> {
    let s = plan.storm;
    let server = launch.start(
        kind,
        &Start {
            hash_params: None,
            max_clients: s + 100,
            ours_flags: &[],
            ngircd_default: false,
        },
    )?;
    // Idle, before any connection: the baseline the storm's growth is
    // measured from.
    let rss_start = crate::sys::process_rss(server.pid);
    let mut holder: Option<Gen> = None;
    let result = (|| -> Result<Value, String> {
        let g = holder.insert(gen_for(kind, server.addr)?);
        // IRC: everyone joins the channel, the two pingers too, as every
        // login through our IRC door joins `#chat` (the same IRC workload
        // on all three; `join` means nothing to the other protocols).
        g.open_all("p", 2, 0, true, Duration::from_secs(30))?;
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
        let mut op = g.opener("s", s, 0, true);
        // A storm: every connection at once (ngircd: 8 at a time, its
        // listen backlog is 10).
        if g.proto() != crate::load::Proto::Irc {
            op.window = s;
        }
        let limit = plan.storm_limit;
        let mut timed_out = false;
        let during = ping(g, &mut |g| {
            if op.started.elapsed() > limit {
                timed_out = true;
                return Ok(true);
            }
            g.open_step(&mut op)
        })?;
        let storm_time = op.started.elapsed();
        // Right after the last login, every storm connection still open: the
        // hashing threads' argon2 blocks (19 MiB each at the default cost)
        // are what may stay; the goal is a growth within
        // auth threads x 19 MiB.
        let rss_after = crate::sys::process_rss(server.pid);
        let mib = |bytes: u64| (bytes > 0).then(|| bytes as f64 / 1048576.0);
        let (rss_start_mib, rss_after_mib) = (mib(rss_start), mib(rss_after));
        let rss_growth_mib = rss_start_mib.zip(rss_after_mib).map(|(a, b)| b - a);
        let auth_threads =
            matches!(kind, Kind::Ours | Kind::OursIrc).then(|| launch.default_auth_threads());
        let done = if timed_out { g.len() - 2 } else { s };
        let p = |v: &[u64], q| percentile(v, q) as f64 / 1e6;
        let logins_per_s = s as f64 / storm_time.as_secs_f64();
        eprintln!(
            "  storm {:<6} S={s}: chat RTT p99 before {:.3} ms, during {:.3} ms (p50 {:.3}, max {:.3}, {} samples); {logins_per_s:.0} logins/s{}",
            kind.name(),
            p(&before, 99.0),
            p(&during, 99.0),
            p(&during, 50.0),
            p(&during, 100.0),
            during.len(),
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        eprintln!(
            "  storm {:<6} S={s}: RSS {} -> {} MiB{}",
            kind.name(),
            rss_start_mib.map_or("-".into(), |v| format!("{v:.1}")),
            rss_after_mib.map_or("-".into(), |v| format!("{v:.1}")),
            auth_threads.map_or(String::new(), |n| format!(
                " ({n} auth thread(s): goal growth <= {} MiB)",
                n * 19
            )),
        );
        Ok(json!({
            "scenario": "storm",
            "case": format!("S={s}"),
            "server": kind.name(),
            "storm": s,
            "completed": !timed_out,
            "opened": done,
            "rtt_p50_before_ms": p(&before, 50.0),
            "rtt_p99_before_ms": p(&before, 99.0),
            "rtt_p50_during_ms": p(&during, 50.0),
            "rtt_p99_during_ms": p(&during, 99.0),
            "rtt_max_during_ms": p(&during, 100.0),
            "rtt_samples_during": during.len(),
            "logins_per_s": logins_per_s,
            "storm_s": storm_time.as_secs_f64(),
            "rss_start_mib": rss_start_mib,
            "rss_after_mib": rss_after_mib,
            "rss_growth_mib": rss_growth_mib,
            "auth_threads": auth_threads,
        }))
    })();
    let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
    server.stop();
    drop(holder);
    Ok(vec![result?])
}

/// Flood: `flood_users` honest users each send a private line to another one
/// every `flood_interval` (one-way latency measured), while one more
/// connection broadcasts as fast as its socket takes lines for
/// `flood_phase` (no flooder in the baseline case). The honest lines'
/// p50/p99 and how many honest users the server closed are what count.
pub fn flood(launch: &Launch, case: FloodCase, plan: &Plan) -> Result<Vec<Value>, String> {
    let kind = case.kind();
    let users = plan.flood_users.max(2);
    let mut server = launch.start(
        kind,
        &Start {
            hash_params: Some(LOW_HASH),
            max_clients: users + 100,
            ours_flags: case.ours_flags(),
            ngircd_default: true,
        },
    )?;
    let mut holder: Option<Gen> = None;
    let result = (|| -> Result<Value, String> {
        let g = holder.insert(Gen::new(kind.proto(), server.addr)?);
        if kind == Kind::Ngircd {
            // With its default penalties each ngircd login takes about a
            // second of fake lag; 8 at a time (the listen backlog's sake)
            // would take minutes for 1000 users. Accepted connections leave
            // the backlog at once, so more logins may be under way.
            g.set_open_window(64);
        }
        let setup = g.open_all("h", users, 0, true, Duration::from_secs(300))?;
        // The flooder is the last client (index `users`), in the channel too.
        g.open_all("fl", 1, 0, true, Duration::from_secs(30))?;
        // A barrier: everyone is in before the phase starts.
        g.broadcast_time(0, Dest::All, users, Duration::from_secs(60))?;
        g.idle(Duration::from_millis(200))?;
        let r = g.flood(
            users,
            case.flooder().then_some(users),
            (case == FloodCase::OursSteady).then_some(5.0),
            plan.flood_interval,
            plan.flood_phase,
            Duration::from_secs(5),
            server.pid,
        )?;
        let wall_s = r.wall_ns as f64 / 1e9;
        let flood_per_user_s = r.flood_received as f64 / users as f64 / wall_s;
        eprintln!(
            "  flood {:<33} N={users}: honest p50 {:>8.3} p99 {:>8.3} max {:>8.3} ms, {}/{} arrived, {} honest disconnected; flooder sent {} lines{}, {:.1} of them per honest user per s",
            case.name(),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.received,
            r.sent,
            r.disconnected,
            r.flood_sent,
            if r.flooder_closed {
                " and was closed"
            } else {
                ""
            },
            flood_per_user_s,
        );
        Ok(json!({
            "scenario": "flood",
            "case": case.name(),
            "server": kind.name(),
            "users": users,
            "interval_s": plan.flood_interval.as_secs_f64(),
            "phase_s": plan.flood_phase.as_secs_f64(),
            "flood_flags": case.ours_flags().join(" "),
            "sent": r.sent,
            "received": r.received,
            "lost": r.lost,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "max_ms": r.max_ms,
            "disconnected": r.disconnected,
            "flood_sent": r.flood_sent,
            "flood_received": r.flood_received,
            "flood_per_user_s": flood_per_user_s,
            "flooder_closed": r.flooder_closed,
            "server_cpu_util": r.server_cpu_ns as f64 / r.wall_ns as f64,
            "setup_s": setup.as_secs_f64(),
        }))
    })();
    let alive = server.alive();
    let result = result.map_err(|e| format!("{e}; server log: {}", server.log_tail()));
    server.stop();
    drop(holder);
    let v = result?;
    if !alive {
        return Err(format!("{} died during the run", case.name()));
    }
    Ok(vec![v])
}
