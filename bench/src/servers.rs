//! Starting and stopping the servers under test as plain child processes,
//! each pinned to one core with `taskset` when it is there.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::Proto;

const NGIRCD_CONF: &str = include_str!("../ngircd.conf.in");
/// ngircd with its default flood protection, for the flood scenario.
const NGIRCD_DEFAULT_CONF: &str = include_str!("../ngircd-default.conf.in");
const INSPIRCD_CONF: &str = include_str!("../inspircd.conf.in");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Floor,
    Ours,
    /// Ours, driven through its IRC door: the same IRC workload as ngircd.
    OursIrc,
    /// Ours through the browser door: the same server, WebSocket clients.
    OursWs,
    Ngircd,
    Inspircd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Ours => "ours",
            Kind::OursIrc => "ours-irc",
            Kind::OursWs => "ours-ws",
            Kind::Ngircd => "ngircd",
            Kind::Inspircd => "inspircd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "floor" => Some(Kind::Floor),
            "ours" => Some(Kind::Ours),
            "ours-irc" => Some(Kind::OursIrc),
            "ours-ws" => Some(Kind::OursWs),
            "ngircd" => Some(Kind::Ngircd),
            "inspircd" => Some(Kind::Inspircd),
            _ => None,
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            Kind::Floor => Proto::Floor,
            Kind::Ours => Proto::Chat,
            Kind::OursIrc => Proto::IrcDoor,
            Kind::OursWs => Proto::Ws,
            Kind::Ngircd | Kind::Inspircd => Proto::Irc,
        }
    }
}

/// Where the programs are and how to pin them.
#[derive(Clone, Debug)]
pub struct Launch {
    pub chat_server: PathBuf,
    pub chat_bench: PathBuf,
    pub ngircd: Option<PathBuf>,
    pub inspircd: Option<PathBuf>,
    pub server_cpu: Option<usize>,
    pub taskset: bool,
    pub work_dir: PathBuf,
}

pub struct Running {
    pub kind: Kind,
    pub pid: u32,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// Looks for a program in PATH and the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Options for one start of a server.
pub struct Start<'a> {
    /// `--hash-params` for ours; `None` keeps the default cost.
    pub hash_params: Option<&'a str>,
    pub max_clients: usize,
    /// Flags appended to ours' command line; a later flag overrides an
    /// earlier one (the flood scenario sets `--flood-rate` this way).
    pub ours_flags: &'a [&'a str],
    /// ngircd with its default flood protection instead of the lifted one.
    pub ngircd_default: bool,
}

impl Launch {
    /// How many hashing threads chat-server starts without `--auth-threads`:
    /// one less than the cores it may run on, at least one (its own rule,
    /// mirrored here because the login storm's memory goal is stated per
    /// thread). Pinned with taskset, it sees one core.
    pub fn default_auth_threads(&self) -> usize {
        let cores = if self.taskset && self.server_cpu.is_some() {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        cores.saturating_sub(1).max(1)
    }

    pub fn start(&self, kind: Kind, opts: &Start<'_>) -> Result<Running, String> {
        self.start_with(kind, opts, &[], "")
    }

    /// `start` plus more arguments for ours and more configuration for
    /// ngircd (the TLS door: `crate::tls`).
    pub fn start_with(
        &self,
        kind: Kind,
        opts: &Start<'_>,
        more_args: &[String],
        more_conf: &str,
    ) -> Result<Running, String> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        fs::create_dir_all(&self.work_dir).map_err(|e| e.to_string())?;
        let log = self.work_dir.join(format!("{}.log", kind.name()));
        let (program, args): (PathBuf, Vec<String>) = match kind {
            Kind::Floor => (
                self.chat_bench.clone(),
                vec!["floor".into(), "--port".into(), port.to_string()],
            ),
            Kind::Ours | Kind::OursIrc | Kind::OursWs => {
                let mut args = vec![
                    "--port".into(),
                    if kind == Kind::OursIrc || kind == Kind::OursWs {
                        // The line door on another port; the load goes to
                        // the IRC or the web door, on `addr`.
                        free_port()?.to_string()
                    } else {
                        port.to_string()
                    },
                    "--accounts".into(),
                    ":memory:".into(),
                    "--history".into(),
                    ":memory:".into(),
                    "--log-level".into(),
                    "warn".into(),
                    "--max-clients".into(),
                    opts.max_clients.to_string(),
                    // Fan-out at full speed, as ngircd's config lifts its
                    // flood limits too; the flood scenario turns it back on.
                    "--flood-rate".into(),
                    "0".into(),
                ];
                if let Some(h) = opts.hash_params {
                    args.push("--hash-params".into());
                    args.push(h.into());
                }
                if kind == Kind::OursWs {
                    args.push("--web-port".into());
                    args.push(port.to_string());
                }
                args.extend(opts.ours_flags.iter().map(|f| f.to_string()));
                if kind == Kind::OursIrc {
                    args.push("--irc-port".into());
                    args.push(port.to_string());
                }
                args.extend_from_slice(more_args);
                (self.chat_server.clone(), args)
            }
            Kind::Ngircd => {
                let program = self
                    .ngircd
                    .clone()
                    .ok_or("ngircd is not installed (make bench installs it)")?;
                let dir = self.work_dir.join("ngircd");
                fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let template = if opts.ngircd_default {
                    NGIRCD_DEFAULT_CONF
                } else {
                    NGIRCD_CONF
                };
                let conf = template
                    .replace("@PORT@", &port.to_string())
                    .replace("@DIR@", &dir.display().to_string())
                    + more_conf;
                let path = dir.join("ngircd.conf");
                fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
                (
                    program,
                    vec!["-n".into(), "-f".into(), path.display().to_string()],
                )
            }
            Kind::Inspircd => {
                let program = self
                    .inspircd
                    .clone()
                    .ok_or("inspircd is not installed (make bench installs it)")?;
                let dir = self.work_dir.join("inspircd");
                fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let conf = INSPIRCD_CONF
                    .replace("@PORT@", &port.to_string())
                    .replace("@DIR@", &dir.display().to_string());
                let path = dir.join("inspircd.conf");
                fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
                (
                    program,
                    vec![
                        "--runasroot".into(),
                        "--nofork".into(),
                        format!("--config={}", path.display()),
                    ],
                )
            }
        };
        let mut cmd = match (self.taskset, self.server_cpu) {
            (true, Some(cpu)) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&program);
                c
            }
            _ => Command::new(&program),
        };
        let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut running = Running {
            kind,
            pid: child.id(),
            addr,
            child,
            log,
        };
        running.wait_listening(Duration::from_secs(10))?;
        Ok(running)
    }
}

impl Running {
    fn wait_listening(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}): {}",
                    self.kind.name(),
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                // Let the server see that probe close before the run starts.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{} does not listen on {}: {}",
                    self.kind.name(),
                    self.addr,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
