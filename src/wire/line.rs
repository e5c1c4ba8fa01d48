//! The line dialect: how the seed's protocol renders what the core says.
//!
//! Every [`Event`] becomes the catalogue's text in the server's language, one
//! `\n`-terminated line (several for `help`), or a prompt without a newline.
//! Byte for byte what the seed's figures show.

use std::io::Write as _;

use crate::core::event::{Event, Prompt};
use crate::wire::protocol::{self, Lang, PROMPT_PASSWORD, PROMPT_USERNAME};
use crate::wire::when;

/// Appends `event`, as the line protocol says it in `lang`, to `out`.
pub fn render(lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
    match *event {
        Event::Reply(reply) => {
            out.extend_from_slice(reply.text(lang).as_bytes());
            out.push(b'\n');
        }
        Event::Prompt(Prompt::Username) => out.extend_from_slice(PROMPT_USERNAME.as_bytes()),
        Event::Prompt(Prompt::Password) => out.extend_from_slice(PROMPT_PASSWORD.as_bytes()),
        Event::Help => out.extend_from_slice(protocol::help(lang).as_bytes()),
        Event::NotOnline(user) => {
            out.extend_from_slice(protocol::not_online(lang, user).as_bytes())
        }
        Event::Users(users) => {
            out.extend_from_slice(protocol::user_list(lang, users.names()).as_bytes())
        }
        Event::Private { from, text } => {
            let head: &[u8] = match lang {
                Lang::Id => b"Pesan pribadi dari [",
                Lang::En => b"Private message from [",
            };
            out.extend_from_slice(head);
            push_tagged(out, from, text);
        }
        Event::Chat { from, text } => {
            out.push(b'[');
            push_tagged(out, from, text);
        }
        Event::Offline(user) => {
            let _ = match lang {
                Lang::Id => writeln!(out, "Teman anda [{user}] telah offline"),
                Lang::En => writeln!(out, "Your friend [{user}] went offline"),
            };
        }
        Event::Stored(user) => {
            let _ = match lang {
                Lang::Id => writeln!(out, "Pesan untuk {user} disimpan"),
                Lang::En => writeln!(out, "Message for {user} saved"),
            };
        }
        Event::InboxFull(user) => {
            let _ = match lang {
                Lang::Id => writeln!(out, "Kotak pesan {user} penuh"),
                Lang::En => writeln!(out, "{user}'s inbox is full"),
            };
        }
        Event::Replayed(replayed) => {
            // Rare (once per login), so the zone is looked up each time:
            // `TZ` is read as the process has it.
            let zone = when::local_zone();
            out.extend_from_slice(when::marker(replayed.at, replayed.now, &zone).as_bytes());
            out.push(b' ');
            if replayed.private {
                let head: &[u8] = match lang {
                    Lang::Id => b"Pesan pribadi dari [",
                    Lang::En => b"Private message from [",
                };
                out.extend_from_slice(head);
            } else {
                out.push(b'[');
            }
            push_tagged(out, replayed.from, replayed.text);
        }
    }
}

/// `from] text\n`: the tail shared by broadcasts and private messages.
#[inline]
fn push_tagged(out: &mut Vec<u8>, from: &str, text: &str) {
    out.reserve(from.len() + text.len() + 3);
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// The line as a `String`, for tests and logs.
pub fn to_string(lang: Lang, event: &Event<'_>) -> String {
    let mut out = Vec::new();
    render(lang, event, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
