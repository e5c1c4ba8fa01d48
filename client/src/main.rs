//! `chat-client`: the terminal client of the chat (SPEC section 6). All the
//! work is in the `chat_client` library; this file only turns the command
//! line into [`Options`] so the logic stays testable as a library.

use std::process::ExitCode;

use chat::wire::protocol::Lang;
use chat_client::{self as client, Options};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// The command line, `chat-client [--host H] [--port P] [--lang id|en]
/// [--tls [--ca FILE]]`, with
/// the seed's address as the default.
#[derive(Debug, Parser)]
#[command(
    name = "chat-client",
    version,
    about = "Terminal client for the chat server"
)]
struct Args {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port (default 10000, or 10001 with --tls).
    #[arg(long)]
    port: Option<u16>,
    /// Language of the prompt and of the client's own replies.
    #[arg(long, default_value = "id", value_parser = lang_parser())]
    lang: Lang,
    /// Connect to the server's TLS door (port 10001 unless --port says
    /// otherwise), verifying its certificate against the system's roots.
    #[arg(long)]
    tls: bool,
    /// Also trust the PEM certificates in FILE (a private CA or a
    /// self-signed server certificate, e.g. dev/cert.pem).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<std::path::PathBuf>,
}

/// `--lang id|en`, parsed here because the library's [`Lang`] carries no clap
/// derive (the server links the library and should not need clap's traits for
/// it); the listed values keep `--help` and errors as clap writes them.
fn lang_parser() -> impl TypedValueParser<Value = Lang> {
    PossibleValuesParser::new(["id", "en"]).try_map(|s| match s.as_str() {
        "id" => Ok(Lang::Id),
        "en" => Ok(Lang::En),
        other => Err(format!("unknown language {other:?}")),
    })
}

/// Parses the arguments and runs the client; its exit code is the process's.
fn main() -> ExitCode {
    let args = Args::parse();
    client::run(&Options {
        host: args.host,
        port: args.port.unwrap_or(if args.tls { 10001 } else { 10000 }),
        lang: args.lang,
        tls: args.tls,
        ca: args.ca,
    })
}
