//! chat-bench: measures how well chat-server moves lines from one socket to
//! many, side by side with ngircd (a real IRC server) and a floor (the
//! smallest possible mio fan-out server), in the same run.
//!
//! `chat-bench run [--quick]` starts each server as a child process pinned to
//! one core, drives it from this one-threaded mio load generator pinned to the
//! other, interleaves the servers over several repetitions, and prints medians
//! and ratios; `chat-bench floor --port P` is the floor server itself;
//! `chat-bench drive` runs a fixed workload against a running server (for
//! `bench/callgrind.sh`).

mod drive;
mod floor;
mod load;
mod report;
mod scenarios;
mod servers;
mod sys;
mod tls;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use scenarios::{FloodCase, Plan};
use servers::{Kind, Launch, find_program};

#[derive(Debug, Parser)]
#[command(
    about = "Load generator and benchmark of chat-server (line protocol and IRC door) vs ngircd and InspIRCd vs a floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the benchmark.
    Run(RunArgs),
    /// Redraw the chart of a run from its JSON lines.
    Chart {
        /// A `bench/results/<date>.jsonl` file.
        jsonl: PathBuf,
        /// The SVG to write.
        svg: PathBuf,
        /// Also write the table of medians (without the targets) here.
        #[arg(long)]
        md: Option<PathBuf>,
    },
    /// Run the floor server (reads lines, writes each to every other connection).
    Floor {
        #[arg(long, default_value_t = 10001)]
        port: u16,
    },
    /// A fixed fan-out workload against a running server (for callgrind).
    Drive(drive::DriveArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The quick everyday mode (well under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Repetitions (default: 3, quick: 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Scenarios, comma-separated: fanout, connections, storm, flood, and tls
    /// (all of tls-fanout, tls-storm, tls-connections).
    #[arg(long, default_value = "fanout,connections,storm,flood,tls")]
    scenarios: String,
    /// Servers, comma-separated: floor, ours, ours-irc (ours through its
    /// IRC door, on ngircd's workload), ours-ws (ours through the browser
    /// door's WebSocket), ngircd, inspircd.
    #[arg(long, default_value = "floor,ours,ours-irc,ours-ws,ngircd,inspircd")]
    servers: String,
    /// Where JSON lines, the table and the chart go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// chat-server binary (default: beside this program).
    #[arg(long)]
    chat_server: Option<PathBuf>,
    /// Seconds per fan-out phase (default: 3, quick: 1).
    #[arg(long)]
    phase_secs: Option<f64>,
    /// Clients in the connections scenario.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds the connections scenario's IRC servers get to have all
    /// clients in one channel (every JOIN goes to everyone there; default:
    /// 240, quick: 120); a server that is not done by then is reported with
    /// how many it had in.
    #[arg(long)]
    join_limit: Option<f64>,
    /// Clients of the connections scenario's one-channel IRC case
    /// (default: --connections; quick: 1000).
    #[arg(long)]
    channel_connections: Option<usize>,
    /// Connections in the login storm (default: 1000, quick: 100).
    #[arg(long)]
    storm: Option<usize>,
    /// Honest users in the flood scenario (default: 1000, quick: 200).
    #[arg(long)]
    flood_users: Option<usize>,
    /// Seconds between one honest user's lines in the flood scenario.
    #[arg(long, default_value_t = 2.0)]
    flood_interval: f64,
    /// Seconds the flooder floods (default: 10, quick: 5).
    #[arg(long)]
    flood_secs: Option<f64>,
    /// Fan-out client counts, comma-separated.
    #[arg(long, default_value = "100,1000")]
    clients: String,
    /// Closed loop: messages each sender keeps not yet fully delivered.
    #[arg(long, default_value_t = 64)]
    window: u32,
    /// CPU for the servers and CPU for the generator.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    #[arg(long, default_value_t = 1)]
    gen_cpu: usize,
    /// Do not pin to CPUs.
    #[arg(long)]
    no_pin: bool,
}

/// Every scenario, in the order a run takes them.
const ALL_SCENARIOS: [&str; 4] = ["fanout", "connections", "storm", "flood"];

/// What one step of a repetition runs against: a server (fan-out,
/// connections, storm) or one case of the flood scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Server(Kind),
    Flood(FloodCase),
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Server(k) => k.name(),
            Case::Flood(c) => c.name(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Floor { port } => floor::run(SocketAddr::from(([127, 0, 0, 1], port))),
        Cmd::Run(args) => run(args),
        Cmd::Chart { jsonl, svg, md } => redraw(&jsonl, &svg, md.as_deref()),
        Cmd::Drive(args) => drive::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn redraw(
    jsonl: &std::path::Path,
    svg: &std::path::Path,
    md: Option<&std::path::Path>,
) -> Result<(), String> {
    let text = fs::read_to_string(jsonl).map_err(|e| format!("{}: {e}", jsonl.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let run = lines.iter().find(|v| v["run"] == true).cloned();
    let title = run.as_ref().map_or_else(String::new, |r| {
        format!(
            "chat-server (line, IRC) vs ngircd, InspIRCd vs floor, {} ({})",
            r["date"].as_str().unwrap_or_default(),
            r["machine"].as_str().unwrap_or_default()
        )
    });
    let records: Vec<Value> = lines
        .into_iter()
        .filter(|v| v["scenario"].is_string() && v["summary"].is_null())
        .collect();
    let rows = report::summarize(&records);
    let flood_rows = report::flood_rows(&records);
    if let Some(md) = md {
        let header = format!(
            "Redrawn from `{}`: {title}; {} mode, {} repetition(s). \
             The run's own table says what each scenario ran.",
            jsonl.display(),
            run.as_ref().and_then(|r| r["mode"].as_str()).unwrap_or("?"),
            run.as_ref().and_then(|r| r["reps"].as_u64()).unwrap_or(0),
        );
        let text = report::markdown(&rows, &flood_rows, &[], &header);
        fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))?;
    }
    report::chart(&rows, &flood_rows, svg, &title)
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| f(x.trim()).ok_or_else(|| format!("unknown item {x:?}")))
        .collect()
}

fn run(args: RunArgs) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Before pinning: afterwards this process sees one core.
    let machine = sys::machine();
    let taskset = find_program("taskset").is_some();
    let pin = !args.no_pin && cores >= 2;
    if pin && !sys::pin_self(args.gen_cpu) {
        eprintln!(
            "chat-bench: cannot pin the generator to CPU {}",
            args.gen_cpu
        );
    }
    let fds = sys::raise_fd_limit();
    let quick = args.quick;
    let reps = args.reps.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let phase = Duration::from_secs_f64(args.phase_secs.unwrap_or(if quick { 1.0 } else { 3.0 }));
    let plan = Plan {
        clients: parse_list(&args.clients, |x| {
            x.parse().ok().filter(|&c: &usize| c >= 2)
        })?,
        rates: vec![20_000.0, 100_000.0],
        window: args.window.max(1),
        phase,
        drain: Duration::from_secs(2),
        connections: args.connections,
        conns_limit: Duration::from_secs(300),
        settle: Duration::from_secs(if quick { 0 } else { 11 }),
        channel_connections: args.channel_connections.unwrap_or(if quick {
            1000
        } else {
            args.connections
        }),
        join_limit: Duration::from_secs_f64(args.join_limit.unwrap_or(if quick {
            120.0
        } else {
            240.0
        })),
        broadcasts: 5,
        storm: args.storm.unwrap_or(if quick { 100 } else { 1000 }),
        storm_limit: Duration::from_secs(if quick { 60 } else { 150 }),
        ping_before: Duration::from_secs(if quick { 1 } else { 2 }),
        flood_users: args.flood_users.unwrap_or(if quick { 200 } else { 1000 }),
        flood_interval: Duration::from_secs_f64(args.flood_interval.max(0.01)),
        flood_phase: Duration::from_secs_f64(args.flood_secs.unwrap_or(if quick {
            5.0
        } else {
            10.0
        })),
    };
    if (fds as usize) < plan.connections + 100 {
        return Err(format!(
            "descriptor limit {fds} is too low for {} connections (raise the hard limit: ulimit -Hn)",
            plan.connections
        ));
    }
    let scenarios: Vec<String> = parse_list(&args.scenarios, |x| {
        tls::scenario_names(x).or_else(|| ALL_SCENARIOS.contains(&x).then(|| vec![x.to_string()]))
    })?
    .into_iter()
    .flatten()
    .collect();
    let mut kinds = parse_list(&args.servers, Kind::parse)?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let chat_server = args.chat_server.clone().unwrap_or_else(|| {
        exe.parent()
            .map_or_else(|| PathBuf::from("chat-server"), |d| d.join("chat-server"))
    });
    if !chat_server.is_file()
        && (kinds.contains(&Kind::Ours)
            || kinds.contains(&Kind::OursIrc)
            || kinds.contains(&Kind::OursWs))
    {
        return Err(format!(
            "{} not found: build it first (cargo build --release --bins)",
            chat_server.display()
        ));
    }
    let ngircd = find_program("ngircd");
    if ngircd.is_none() && kinds.contains(&Kind::Ngircd) {
        eprintln!(
            "chat-bench: ngircd is not installed; running without it (make bench installs it)"
        );
        kinds.retain(|&k| k != Kind::Ngircd);
    }
    let inspircd = find_program("inspircd");
    if inspircd.is_none() && kinds.contains(&Kind::Inspircd) {
        eprintln!(
            "chat-bench: inspircd is not installed; running without it (make bench installs it)"
        );
        kinds.retain(|&k| k != Kind::Inspircd);
    }
    let launch = Launch {
        chat_server,
        chat_bench: exe,
        ngircd,
        inspircd,
        server_cpu: pin.then_some(args.server_cpu),
        taskset,
        work_dir: std::env::temp_dir().join(format!("chat-bench-{}", std::process::id())),
    };
    let date = sys::utc_now();
    let ngircd_version = launch.ngircd.as_ref().and_then(|p| {
        let out = std::process::Command::new(p)
            .arg("--version")
            .output()
            .ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .to_string(),
        )
    });
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let stamp = date.replace(':', "");
    let jsonl_path = args.out.join(format!(
        "{stamp}{}.jsonl",
        if quick { "-quick" } else { "" }
    ));
    let mut jsonl = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl_path)
        .map_err(|e| format!("{}: {e}", jsonl_path.display()))?;
    let pinning = if pin && taskset {
        format!(
            "server on CPU {}, generator on CPU {}",
            args.server_cpu, args.gen_cpu
        )
    } else if pin {
        format!(
            "generator on CPU {} (no taskset: server not pinned)",
            args.gen_cpu
        )
    } else {
        "not pinned".into()
    };
    let run_info = json!({
        "run": true,
        "date": date,
        "machine": machine,
        "mode": if quick { "quick" } else { "full" },
        "reps": reps,
        "pinning": pinning,
        "ngircd": ngircd_version,
        "phase_s": phase.as_secs_f64(),
        "closed_loop_window_per_sender": plan.window,
        "senders": scenarios::SENDERS,
        "connections_hash_params": scenarios::LOW_HASH,
        "connections_join_limit_s": plan.join_limit.as_secs_f64(),
        "channel_connections": plan.channel_connections,
        "connections_settle_s": plan.settle.as_secs_f64(),
        "fanout_hash_params": scenarios::LOW_HASH,
        "storm_hash_params": "default (m=19456,t=2,p=1)",
        "storm": plan.storm,
        "flood_users": plan.flood_users,
        "flood_interval_s": plan.flood_interval.as_secs_f64(),
        "flood_phase_s": plan.flood_phase.as_secs_f64(),
    });
    writeln!(jsonl, "{run_info}").map_err(|e| e.to_string())?;
    eprintln!(
        "chat-bench: {} mode, {reps} repetition(s), {date}, {machine}; {pinning}; servers {:?}",
        if quick { "quick" } else { "full" },
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let started = Instant::now();
    let mut records: Vec<Value> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for rep in 0..reps {
        for scenario in &scenarios {
            // Interleave: each repetition starts with a different server
            // (in the flood scenario, a different case).
            let mut order: Vec<Case> = if scenario == "flood" {
                FloodCase::ALL
                    .into_iter()
                    .filter(|c| kinds.contains(&c.kind()))
                    .map(Case::Flood)
                    .collect()
            } else {
                kinds.iter().map(|&k| Case::Server(k)).collect()
            };
            let n = order.len().max(1);
            order.rotate_left(rep % n);
            for &case in &order {
                if scenario == "storm" && case == Case::Server(Kind::Floor) {
                    continue; // the floor has no logins
                }
                if let Case::Server(kind) = case
                    && scenario.starts_with("tls")
                    && !tls::runs_on(kind)
                {
                    continue;
                }
                let result = match (scenario.as_str(), case) {
                    (_, Case::Flood(c)) => scenarios::flood(&launch, c, &plan),
                    ("fanout", Case::Server(kind)) => scenarios::fanout(&launch, kind, &plan),
                    ("connections", Case::Server(kind)) => {
                        scenarios::connections(&launch, kind, &plan)
                    }
                    (s, Case::Server(kind)) if s.starts_with("tls") => {
                        tls::run(&launch, kind, &plan, s)
                    }
                    (_, Case::Server(kind)) => scenarios::storm(&launch, kind, &plan),
                };
                match result {
                    Ok(recs) => {
                        for mut r in recs {
                            r["rep"] = json!(rep);
                            r["date"] = json!(date);
                            writeln!(jsonl, "{r}").map_err(|e| e.to_string())?;
                            records.push(r);
                        }
                    }
                    Err(e) => {
                        let msg = format!("rep {rep} {scenario} {}: {e}", case.name());
                        eprintln!("chat-bench: ERROR {msg}");
                        writeln!(jsonl, "{}", json!({"error": msg, "date": date}))
                            .map_err(|e| e.to_string())?;
                        errors.push(msg);
                    }
                }
            }
        }
    }
    let _ = fs::remove_dir_all(&launch.work_dir);
    let rows = report::summarize(&records);
    let flood_rows = report::flood_rows(&records);
    let targets = report::targets(
        &rows,
        &flood_rows,
        &plan.clients,
        plan.connections,
        plan.storm,
    );
    for r in &rows {
        let line = json!({
            "summary": true, "date": date, "scenario": r.scenario, "case": r.case,
            "metric": r.metric, "medians": r.values, "reps": r.reps,
        });
        writeln!(jsonl, "{line}").map_err(|e| e.to_string())?;
    }
    for r in &flood_rows {
        let line = json!({
            "summary": true, "date": date, "scenario": "flood", "case": r.case,
            "medians": r.values, "reps": r.reps,
        });
        writeln!(jsonl, "{line}").map_err(|e| e.to_string())?;
    }
    for t in &targets {
        writeln!(jsonl, "{}", json!({"target": t, "date": date})).map_err(|e| e.to_string())?;
    }
    let header = format!(
        "Run {date} ({} mode, median of {reps}; {:.0} s) on {machine}; {pinning}; {}.\n\
         Fan-out: 10 senders, ~64-byte messages, {:.0} s per phase, closed loop with {} messages in flight per sender; \
         logins in fan-out and connections use `--hash-params {}`, the storm the default cost. \
         IRC (ours-irc, ngircd, InspIRCd): channel `{}` (ours-irc: its one channel `#chat`) for fan-out. \
         Connections, `N={n}`: no channel; ours and the floor get a plain line, ngircd and InspIRCd an operator's PRIVMSG to `{}`. \
         Connections, `N={nc} in one IRC channel`, the same IRC workload on all three IRC servers: every client registers and is in one channel \
         (ours-irc: NICK/USER then NickServ REGISTER and IDENTIFY, whose login joins `#chat`; ngircd and InspIRCd: NICK/USER then `JOIN {}`), \
         each JOIN sent to everyone already there (N(N+1)/2 JOIN lines, read and dropped by the generator) within {:.0} s, \
         then PRIVMSGs to the channel. RSS per connection: the server's growth 0.5 s after all are in, and again after the broadcasts and {settle:.0} s idle (ours releases idle connections' output buffers every 5 s). \
         Limits equally lifted: ngircd no penalties or per-IP limit; InspIRCd sendq 64 MiB soft, 1 GiB hard, no fake lag; \
         ours 1 MiB output per reader, flood control off; ngircd's write buffer per client is compiled in (its own limit). \
         Storm: IRC clients (the two pingers too) join the channel as well, as a login through our door does. \
         Flood: {} honest users, each sending one private line every {} s (one-way latency), beside one connection \
         broadcasting as fast as its socket takes lines for {} s; ngircd there with its default flood protection.",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        ngircd_version.as_deref().unwrap_or("ngircd not run"),
        phase.as_secs_f64(),
        plan.window,
        scenarios::LOW_HASH,
        load::CHANNEL,
        load::SERVER_MASK,
        load::CHANNEL,
        plan.join_limit.as_secs_f64(),
        plan.flood_users,
        plan.flood_interval.as_secs_f64(),
        plan.flood_phase.as_secs_f64(),
        n = plan.connections,
        nc = plan.channel_connections,
        settle = plan.settle.as_secs_f64(),
    );
    let md = report::markdown(&rows, &flood_rows, &targets, &header);
    println!("\n{md}");
    if !errors.is_empty() {
        println!("Errors:");
        for e in &errors {
            println!("- {e}");
        }
    }
    // A run of some scenarios only does not replace the table of a run of
    // them all: `--scenarios flood` writes latest-flood.md.
    let mut suffix = String::from(if quick { "-quick" } else { "" });
    if scenarios.len() < ALL_SCENARIOS.len() + tls::SCENARIOS.len() {
        suffix.push('-');
        suffix.push_str(&scenarios.join("-"));
    }
    let md_path = args.out.join(format!("latest{suffix}.md"));
    let mut md_file = md;
    for e in &errors {
        md_file.push_str(&format!("\nerror: {e}\n"));
    }
    fs::write(&md_path, md_file).map_err(|e| format!("{}: {e}", md_path.display()))?;
    let svg_path = args.out.join(format!("chart{suffix}.svg"));
    if let Err(e) = report::chart(
        &rows,
        &flood_rows,
        &svg_path,
        &format!("chat-server (line, IRC) vs ngircd, InspIRCd vs floor, {date} ({machine})"),
    ) {
        eprintln!("chat-bench: chart: {e}");
    }
    eprintln!(
        "chat-bench: wrote {}, {} and {}",
        jsonl_path.display(),
        md_path.display(),
        svg_path.display()
    );
    Ok(())
}
