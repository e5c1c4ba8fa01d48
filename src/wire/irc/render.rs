//! IRC lines as the server writes them: numerics, notices, and messages
//! split to fit IRC's 512 bytes.
//!
//! Every function appends whole `\r\n`-terminated lines to a byte buffer and
//! never writes a line over [`MAX_LINE`] bytes. What users wrote arrives
//! as `PRIVMSG` from exactly `nick!nick@chat` (SPEC 8.3).

use std::io::Write as _;

/// The server's name, in numerics and `PING`.
pub const SERVER: &str = "chat";

/// The one channel.
pub const CHANNEL: &str = "#chat";

/// The host part of every user's prefix: `nick!nick@chat`.
pub const USER_HOST: &str = "chat";

/// The account service's prefix. Its host differs from users' so that a
/// user who named themselves `NickServ` through another door cannot pass
/// for it.
pub const NICKSERV: &str = "NickServ!NickServ@services";

/// Most bytes of one line, `\r\n` included (RFC 2812 2.3).
pub const MAX_LINE: usize = 512;

/// `:nick!nick@chat`.
fn user_prefix(out: &mut Vec<u8>, nick: &str) {
    out.push(b':');
    out.extend_from_slice(nick.as_bytes());
    out.push(b'!');
    out.extend_from_slice(nick.as_bytes());
    out.push(b'@');
    out.extend_from_slice(USER_HOST.as_bytes());
}

/// The longest prefix of `text` that fits in `room` bytes and ends on a
/// character boundary (at least one character, so splitting always moves).
fn cut(text: &str, room: usize) -> usize {
    if text.len() <= room {
        return text.len();
    }
    let mut at = room;
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    if at == 0 {
        // No room for even one character: take one anyway (cannot happen
        // with valid nicks, which leave hundreds of bytes).
        text.char_indices().nth(1).map_or(text.len(), |(i, _)| i)
    } else {
        at
    }
}

/// Appends `:{prefix} {command} {target} :{text}` as many lines as needed,
/// each at most [`MAX_LINE`] bytes, `text` split on character boundaries.
/// `prefix` is written by `write_prefix`.
fn split_message(
    out: &mut Vec<u8>,
    write_prefix: impl Fn(&mut Vec<u8>),
    command: &str,
    target: &str,
    text: &str,
) {
    let start = out.len();
    write_prefix(out);
    let head_len = out.len() - start + 1 + command.len() + 1 + target.len() + 2;
    out.truncate(start);
    let room = MAX_LINE.saturating_sub(head_len + 2).max(1);
    let mut rest = text;
    loop {
        let n = cut(rest, room);
        write_prefix(out);
        out.push(b' ');
        out.extend_from_slice(command.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" :");
        out.extend_from_slice(&rest.as_bytes()[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        if rest.is_empty() {
            return;
        }
    }
}

/// A user's message: `:from!from@chat PRIVMSG target :text`, split to fit.
pub fn privmsg(out: &mut Vec<u8>, from: &str, target: &str, text: &str) {
    split_message(out, |o| user_prefix(o, from), "PRIVMSG", target, text);
}

/// A notice from the server: `:chat NOTICE target :text`, split to fit.
pub fn server_notice(out: &mut Vec<u8>, target: &str, text: &str) {
    split_message(
        out,
        |o| {
            o.push(b':');
            o.extend_from_slice(SERVER.as_bytes());
        },
        "NOTICE",
        target,
        text,
    );
}

/// A notice from NickServ, split to fit.
pub fn nickserv_notice(out: &mut Vec<u8>, target: &str, text: &str) {
    split_message(
        out,
        |o| {
            o.push(b':');
            o.extend_from_slice(NICKSERV.as_bytes());
        },
        "NOTICE",
        target,
        text,
    );
}

/// Most bytes of a parameter the server echoes back (a client's unknown
/// command, a missing nick): enough for any real name, and a line of such
/// parameters always fits in [`MAX_LINE`].
pub const MAX_ECHO: usize = 64;

/// `s`, cut to at most `n` bytes on a character boundary.
pub fn clip(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut at = n;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

/// `:chat CODE nick params... :text`, on one line: parameters are clipped
/// to [`MAX_ECHO`] bytes and the text to what room is left, so a client
/// that sends a 500-byte nick still gets a reply that fits.
pub fn numeric(out: &mut Vec<u8>, code: &str, nick: &str, params: &[&str], text: &str) {
    let start = out.len();
    let _ = write!(out, ":{SERVER} {code} {}", clip(nick, MAX_ECHO));
    for p in params {
        out.push(b' ');
        // What a client sent may hold CTCP's \x01: never echoed.
        for c in clip(p, MAX_ECHO).chars().filter(|&c| c != '\u{1}') {
            let mut utf8 = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    out.extend_from_slice(b" :");
    let room = MAX_LINE.saturating_sub(out.len() - start + 2);
    out.extend_from_slice(clip(text, room).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:nick!nick@chat JOIN #chat`.
pub fn join(out: &mut Vec<u8>, nick: &str) {
    user_prefix(out, nick);
    out.extend_from_slice(b" JOIN ");
    out.extend_from_slice(CHANNEL.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:nick!nick@chat QUIT :reason`.
pub fn quit(out: &mut Vec<u8>, nick: &str, reason: &str) {
    user_prefix(out, nick);
    out.extend_from_slice(b" QUIT :");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:old!old@chat NICK :new`.
pub fn nick_change(out: &mut Vec<u8>, old: &str, new: &str) {
    user_prefix(out, old);
    out.extend_from_slice(b" NICK :");
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:nick!nick@chat PART #chat`.
pub fn part(out: &mut Vec<u8>, nick: &str) {
    user_prefix(out, nick);
    out.extend_from_slice(b" PART ");
    out.extend_from_slice(CHANNEL.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `ERROR :text`: the last line before the server closes.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"ERROR :");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `353` lines listing `names` (split to fit), then `366`.
pub fn names<'a>(out: &mut Vec<u8>, nick: &str, names: impl Iterator<Item = &'a str>) {
    let head = format!(":{SERVER} 353 {nick} = {CHANNEL} :");
    let mut line = String::with_capacity(MAX_LINE);
    for name in names {
        if !line.is_empty() && head.len() + line.len() + 1 + name.len() + 2 > MAX_LINE {
            flush_names(out, &head, &line);
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(name);
    }
    if !line.is_empty() {
        flush_names(out, &head, &line);
    }
    numeric(out, "366", nick, &[CHANNEL], "End of /NAMES list.");
}

fn flush_names(out: &mut Vec<u8>, head: &str, line: &str) {
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[u8]) -> Vec<String> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split_inclusive("\r\n").map(str::to_owned).collect()
    }

    #[test]
    fn a_short_message_is_one_line() {
        let mut out = Vec::new();
        privmsg(&mut out, "alice", "#chat", "hi there");
        assert_eq!(out, b":alice!alice@chat PRIVMSG #chat :hi there\r\n");
    }

    #[test]
    fn a_long_message_splits_on_characters_within_512_bytes() {
        let text = "é".repeat(1000) + "end";
        let mut out = Vec::new();
        privmsg(&mut out, &"n".repeat(32), "#chat", &text);
        let lines = lines(&out);
        assert!(lines.len() >= 4);
        let mut joined = String::new();
        for line in &lines {
            assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
            let (_, body) = line.split_once(" :").unwrap();
            joined.push_str(body.trim_end_matches("\r\n"));
        }
        assert_eq!(joined, text);
        // Full lines are filled to within a character of the limit.
        assert!(lines[0].len() >= MAX_LINE - 1);
    }

    #[test]
    fn names_split_and_end() {
        let many: Vec<String> = (0..100).map(|i| format!("user_{i:027}")).collect();
        let mut out = Vec::new();
        names(&mut out, "me", many.iter().map(String::as_str));
        let lines = lines(&out);
        assert!(lines.len() > 2);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(
            lines.last().unwrap(),
            ":chat 366 me #chat :End of /NAMES list.\r\n"
        );
        let listed: usize = lines[..lines.len() - 1]
            .iter()
            .map(|l| l.rsplit_once(" :").unwrap().1.split_whitespace().count())
            .sum();
        assert_eq!(listed, 100);
    }
}
