//! chat-server: parses the flags of SPEC section 6 and runs the event loop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use chat::core::chat::ChatConfig;
use chat::server::{Server, ServerConfig, TlsDoorConfig, raise_fd_limit};
use chat::store::accounts::HashParams;
use chat::wire::protocol::Lang;

/// The 2015 ITS chat server, in Rust: regist, login, broadcast, send-to,
/// list-user, over plain lines on TCP (use nc or telnet as a client).
#[derive(Debug, Parser)]
#[command(name = "chat-server", version, about, args_override_self = true)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 10000)]
    port: u16,
    /// Accounts file, or `:memory:` to keep accounts only while running.
    #[arg(long, default_value = "accounts.db")]
    accounts: String,
    /// Most connections open at once, logged in or not.
    #[arg(long, default_value_t = 10000)]
    max_clients: usize,
    /// All output buffers together stay under this many MiB; past it, the
    /// reader furthest behind is disconnected first.
    #[arg(long, default_value_t = 256)]
    max_output_mb: usize,
    /// Seconds a connection may stay without logging in.
    #[arg(long, default_value_t = 120)]
    login_timeout: u64,
    /// Language of the replies.
    #[arg(long, value_enum, default_value = "id")]
    lang: Lang,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    /// argon2id cost of new password hashes.
    #[arg(long, default_value_t = HashParams::default())]
    hash_params: HashParams,
    /// Most password hash jobs queued or running; more get BUSY.
    #[arg(long, default_value_t = 256)]
    max_pending_auth: usize,
    /// Threads that hash passwords (default: one less than the cores, at least 1).
    #[arg(long)]
    auth_threads: Option<usize>,
    /// PEM certificate chain: with --tls-key, opens the TLS door on
    /// --tls-port (SIGHUP re-reads both files).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Port of the TLS door, on the same host (0 picks a free one).
    #[arg(long, default_value_t = 10001)]
    tls_port: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_utc_timestamps()
        .with_level(args.log_level)
        .init()
    {
        eprintln!("chat-server: cannot start logging: {e}");
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("chat-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let addr: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", args.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", args.host))?;
    let accounts = (args.accounts != ":memory:").then(|| PathBuf::from(&args.accounts));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    raise_fd_limit(args.max_clients);
    let config = ServerConfig {
        addr,
        accounts,
        max_clients: args.max_clients,
        max_output: args.max_output_mb.max(1).saturating_mul(1024 * 1024),
        lang: args.lang,
        chat: ChatConfig {
            login_timeout: Duration::from_secs(args.login_timeout),
            max_pending_auth: args.max_pending_auth.max(1),
        },
        hash_params: args.hash_params,
        auth_threads: args.auth_threads.unwrap_or(cores.saturating_sub(1)).max(1),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsDoorConfig {
                addr: SocketAddr::new(addr.ip(), args.tls_port),
                cert,
                key,
            }),
            _ => None,
        },
    };
    Server::bind(config)?.run()
}
