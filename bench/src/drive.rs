//! `chat-bench drive`: a fixed, known fan-out workload against a server that
//! is already running (for instance under `valgrind --tool=callgrind`), so
//! that a count of the server's instructions can be divided by the
//! deliveries. Logs in C clients, waits until a barrier broadcast reached
//! everyone, sends `--warmup` messages (not counted), runs `--on-ready`,
//! sends exactly `--messages` lines from the senders in a closed window,
//! waits for every copy, runs `--on-done`, and prints one `key=value` line
//! on stdout.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::{Dest, Gen, Proto};

#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// The server's address; or give --server-pid.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Find the port the process PID listens on (for `--port 0`), on 127.0.0.1.
    #[arg(long)]
    server_pid: Option<u32>,
    /// chat (ours), floor or irc.
    #[arg(long, default_value = "chat")]
    protocol: String,
    /// Clients, all logged in; the first --senders of them send.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages in all, sent by the senders in turn.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// Closed loop: messages each sender keeps not yet delivered to everyone.
    #[arg(long, default_value_t = 16)]
    window: u32,
    /// Messages sent the same way before --on-ready and not counted, so that
    /// buffers have grown to their working size (steady state).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Shell command run once all are logged in, before the first message.
    #[arg(long)]
    on_ready: Option<String>,
    /// Shell command run after the last delivery, before the clients close.
    #[arg(long)]
    on_done: Option<String>,
    /// Seconds for the port to appear and the clients to log in.
    #[arg(long, default_value_t = 300.0)]
    setup_secs: f64,
    /// Seconds for the workload itself.
    #[arg(long, default_value_t = 600.0)]
    limit_secs: f64,
    /// Pin the generator to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn hook(what: &str, cmd: &str) -> Result<(), String> {
    // The hook's output goes to our stderr: stdout carries only the result.
    let err = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(err))
        .status()
        .map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} `{cmd}` failed: {status}"))
    }
}

pub fn run(args: DriveArgs) -> Result<(), String> {
    let proto = match args.protocol.as_str() {
        "chat" | "ours" => Proto::Chat,
        "floor" => Proto::Floor,
        "irc" | "ngircd" => Proto::Irc,
        "irc-door" | "ours-irc" => Proto::IrcDoor,
        p => return Err(format!("unknown protocol {p:?} (chat, floor, irc)")),
    };
    if args.clients < 2 || args.senders == 0 || args.senders > args.clients {
        return Err("need 2 or more clients and 1..=clients senders".into());
    }
    if let Some(cpu) = args.cpu
        && !crate::sys::pin_self(cpu)
    {
        eprintln!("chat-bench drive: cannot pin to CPU {cpu}");
    }
    crate::sys::raise_fd_limit();
    let setup_limit = Duration::from_secs_f64(args.setup_secs);
    let started = Instant::now();
    let addr = match (args.addr, args.server_pid) {
        (Some(a), _) => a,
        (None, Some(pid)) => loop {
            if let Some(port) = crate::sys::listening_port(pid) {
                break SocketAddr::from(([127, 0, 0, 1], port));
            }
            if started.elapsed() > setup_limit {
                return Err(format!(
                    "process {pid} does not listen within {setup_limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        },
        (None, None) => return Err("give --addr or --server-pid".into()),
    };
    eprintln!("chat-bench drive: server at {addr}");
    let mut g = Gen::new(proto, addr)?;
    let c = args.clients;
    let setup = g.open_all("u", c, args.senders, true, setup_limit)?;
    // Everyone is in before the load starts.
    g.broadcast_time(0, Dest::All, c - 1, setup_limit)?;
    g.idle(Duration::from_millis(200))?;
    eprintln!(
        "chat-bench drive: {c} clients ready in {:.1} s",
        setup.as_secs_f64()
    );
    let limit = Duration::from_secs_f64(args.limit_secs);
    let window = args.window.max(1);
    if args.warmup > 0 {
        let w = g.fanout_count(args.senders, (c - 1) as u32, args.warmup, window, limit)?;
        if w.received != w.expected {
            return Err(format!(
                "warm-up: received {} of {} deliveries",
                w.received, w.expected
            ));
        }
        g.idle(Duration::from_millis(200))?;
    }
    if let Some(cmd) = &args.on_ready {
        hook("--on-ready", cmd)?;
    }
    let r = g.fanout_count(args.senders, (c - 1) as u32, args.messages, window, limit)?;
    // Nothing more is on its way; let the server finish its turn.
    g.idle(Duration::from_millis(100))?;
    if let Some(cmd) = &args.on_done {
        hook("--on-done", cmd)?;
    }
    println!(
        "sent={} expected={} received={} lost={} stray={} wall_s={:.3}",
        r.sent,
        r.expected,
        r.received,
        r.lost,
        r.stray,
        r.wall.as_secs_f64()
    );
    if r.received != r.expected || r.lost != 0 {
        return Err(format!(
            "received {} of {} deliveries ({} lost)",
            r.received, r.expected, r.lost
        ));
    }
    Ok(())
}
