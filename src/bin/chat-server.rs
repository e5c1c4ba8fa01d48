//! chat-server: parses the flags of SPEC section 6 and runs the event loop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use chat::core::chat::ChatConfig;
use chat::core::limits::{Exempt, LimitsConfig};
use chat::server::{
    HistorySettings, IrcDoorConfig, Server, ServerConfig, TlsDoorConfig, WebDoorConfig,
    raise_fd_limit,
};
use chat::store::accounts::HashParams;
use chat::store::history::{Commit, HistoryPlace};
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
    #[arg(long, default_value = "id", value_parser = lang_parser())]
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
    /// Lines a connection may send at once before flood control paces it.
    #[arg(long, default_value_t = 20)]
    flood_burst: u32,
    /// Lines per second a connection may send after its burst; slower
    /// reading, not errors, holds it to that (0: no flood control).
    #[arg(long, default_value_t = 5)]
    flood_rate: u32,
    /// Connections open at once from one address (an IPv6 /64 is one address; 0: no limit).
    #[arg(long, default_value_t = 20)]
    max_conns_per_ip: u32,
    /// Connections opened per minute from one address (0: no limit).
    #[arg(long, default_value_t = 60)]
    max_new_conns_per_ip: u32,
    /// Failed logins from one address in 10 minutes before its logins are
    /// THROTTLED (0: no limit).
    #[arg(long, default_value_t = 10)]
    max_login_fails: u32,
    /// Accounts created per hour from one address (0: no limit).
    #[arg(long, default_value_t = 20)]
    max_regist_per_ip: u32,
    /// Addresses free of the per-address limits (not of flood control):
    /// comma-separated CIDRs, or `none`.
    #[arg(long, default_value = "127.0.0.0/8,::1")]
    exempt: Exempt,
    /// Port of the browser door (SPEC 8.2): the chat page and its WebSocket
    /// over HTTP on the same host (0 picks a free one). Off unless given.
    #[arg(long)]
    web_port: Option<u16>,
    /// Origins besides the page's own whose pages may open the chat's
    /// WebSocket: whole `scheme://host[:port]` origins, comma-separated.
    #[arg(long, value_delimiter = ',')]
    web_origin: Vec<String>,
    /// Threads that hash passwords (default: one less than the cores, at least 1).
    #[arg(long)]
    auth_threads: Option<usize>,
    /// File of messages kept for users who are not online, `:memory:` to
    /// keep them only while running, or `none` to refuse them (NOT_ONLINE).
    #[arg(long, default_value = "history.db")]
    history: String,
    /// Broadcasts replayed to each user right after login.
    #[arg(long, default_value_t = 0)]
    replay: usize,
    /// Stored messages and broadcasts older than this many days are dropped.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    history_days: u32,
    /// One fsync per stored message instead of one per group: only to
    /// measure what group commit saves.
    #[arg(long, hide = true)]
    history_fsync_each: bool,
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
    /// Opens the IRC door on this port, same host (6667 is the usual; 0
    /// picks a free one). Off by default.
    #[arg(long)]
    irc_port: Option<u16>,
    /// Seconds an IRC client may stay silent before it is sent PING; one
    /// silent as long again is dropped (checked every 5 s).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    irc_ping: u64,
}

/// `--lang id|en`. Parsed here rather than by a clap derive on [`Lang`], so
/// the library does not depend on clap's traits; the listed values keep
/// `--help` and the error for a wrong value as clap writes them.
fn lang_parser() -> impl TypedValueParser<Value = Lang> {
    PossibleValuesParser::new(["id", "en"]).try_map(|s| match s.as_str() {
        "id" => Ok(Lang::Id),
        "en" => Ok(Lang::En),
        other => Err(format!("unknown language {other:?}")),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_utc_timestamps()
        .with_level(args.log_level)
        // tungstenite logs every WebSocket message's text at trace level:
        // message text and passwords are never logged (SPEC 4, 9).
        .with_module_level("tungstenite", args.log_level.min(log::LevelFilter::Debug))
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
            limits: LimitsConfig {
                flood_burst: args.flood_burst,
                flood_rate: args.flood_rate,
                max_conns_per_ip: args.max_conns_per_ip,
                max_new_conns_per_ip: args.max_new_conns_per_ip,
                max_login_fails: args.max_login_fails,
                max_regist_per_ip: args.max_regist_per_ip,
                max_pending_auth: args.max_pending_auth.max(1),
                exempt: args.exempt,
                ..LimitsConfig::default()
            },
        },
        hash_params: args.hash_params,
        auth_threads: args.auth_threads.unwrap_or(cores.saturating_sub(1)).max(1),
        history: HistorySettings {
            place: HistoryPlace::parse(&args.history),
            replay: args.replay,
            days: args.history_days,
            commit: if args.history_fsync_each {
                Commit::EachJob
            } else {
                Commit::Group
            },
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsDoorConfig {
                addr: SocketAddr::new(addr.ip(), args.tls_port),
                cert,
                key,
            }),
            _ => None,
        },
        irc: args.irc_port.map(|port| IrcDoorConfig {
            addr: SocketAddr::new(addr.ip(), port),
            ping: Duration::from_secs(args.irc_ping),
        }),
        web: args.web_port.map(|port| WebDoorConfig {
            addr: SocketAddr::new(addr.ip(), port),
            origins: args.web_origin.clone(),
        }),
    };
    Server::bind(config)?.run()
}
