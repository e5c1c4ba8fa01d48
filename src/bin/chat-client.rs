//! `chat-client`: the terminal client of the chat (SPEC section 6). All the
//! work is in `chat::client`; this file only turns the command line into
//! [`Options`] so the logic stays testable as a library.

use std::process::ExitCode;

use chat::client::{self, Options};
use chat::wire::protocol::Lang;
use clap::Parser;

/// The command line, `chat-client [--host H] [--port P] [--lang id|en]`, with
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
    /// Server port.
    #[arg(long, default_value_t = 10000)]
    port: u16,
    /// Language of the prompt and of the client's own replies.
    #[arg(long, value_enum, default_value_t = Lang::Id)]
    lang: Lang,
}

/// Parses the arguments and runs the client; its exit code is the process's.
fn main() -> ExitCode {
    let args = Args::parse();
    client::run(&Options {
        host: args.host,
        port: args.port,
        lang: args.lang,
    })
}
