//! One IRC message, as RFC 1459/2812 and IRCv3 message tags write it:
//! `[@tags ]` `[:prefix ]` `command` `[params]` `[ :trailing]`.
//!
//! The parser borrows from the line (nothing is copied), never panics, and
//! enforces IRC's own length limit: 512 bytes with the `\r\n`, so 510 without
//! it, not counting the tags, which IRCv3 gives 4096 bytes of their own. The
//! line buffer's 4096-byte limit is the line protocol's, not IRC's.

/// Most bytes of a message without its tags and `\r\n` (RFC 2812 2.3).
pub const MAX_MESSAGE: usize = 510;

/// Most bytes of the tags section, `@` and the space after it included
/// (IRCv3 message tags).
pub const MAX_TAGS: usize = 4096;

/// Most parameters (RFC 2812 2.3.1): the 15th takes the rest of the line.
pub const MAX_PARAMS: usize = 15;

/// A parsed message; every part borrows from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The tags without the `@`, if any (not interpreted).
    pub tags: Option<&'a str>,
    /// The prefix without the `:`, if any (ignored from clients).
    pub prefix: Option<&'a str>,
    /// The command as sent: compare with [`Message::is`].
    pub command: &'a str,
    params: [&'a str; MAX_PARAMS],
    len: usize,
}

/// Why a line is not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but spaces: ignored, as IRC servers do.
    Empty,
    /// Over [`MAX_MESSAGE`] (or the tags over [`MAX_TAGS`]): `417`.
    TooLong,
    /// Tags or a prefix with no command after them.
    NoCommand,
}

impl<'a> Message<'a> {
    /// The parameters, the trailing one included as the last.
    pub fn params(&self) -> &[&'a str] {
        &self.params[..self.len]
    }

    /// Parameter `i`, if there is one.
    pub fn param(&self, i: usize) -> Option<&'a str> {
        self.params().get(i).copied()
    }

    /// Whether the command is `name` (commands are case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.command.eq_ignore_ascii_case(name)
    }
}

/// Splits off the word before the next space, and the rest after any spaces.
fn word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(at) => (&s[..at], s[at..].trim_start_matches(' ')),
        None => (s, ""),
    }
}

/// Parses one line (its `\r\n` already removed; a stray last `\r` is dropped).
pub fn parse(line: &str) -> Result<Message<'_>, ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut rest = line.trim_start_matches(' ');
    let mut tags = None;
    if let Some(tagged) = rest.strip_prefix('@') {
        let (t, after) = word(tagged);
        if t.len() + 2 > MAX_TAGS {
            return Err(ParseError::TooLong);
        }
        if after.is_empty() {
            return Err(ParseError::NoCommand);
        }
        tags = Some(t);
        rest = after;
    }
    if rest.len() > MAX_MESSAGE {
        return Err(ParseError::TooLong);
    }
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut prefix = None;
    if let Some(prefixed) = rest.strip_prefix(':') {
        let (p, after) = word(prefixed);
        if after.is_empty() {
            return Err(ParseError::NoCommand);
        }
        prefix = Some(p);
        rest = after;
    }
    let (command, mut rest) = word(rest);
    let mut message = Message {
        tags,
        prefix,
        command,
        params: [""; MAX_PARAMS],
        len: 0,
    };
    while !rest.is_empty() && message.len < MAX_PARAMS {
        let param;
        if let Some(trailing) = rest.strip_prefix(':') {
            param = trailing;
            rest = "";
        } else if message.len == MAX_PARAMS - 1 {
            // The 15th parameter is the rest, with or without a colon.
            param = rest;
            rest = "";
        } else {
            (param, rest) = word(rest);
        }
        message.params[message.len] = param;
        message.len += 1;
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part() {
        let m = parse("@id=1;x :nick!u@h PRIVMSG #chat :hello  there ").unwrap();
        assert_eq!(m.tags, Some("id=1;x"));
        assert_eq!(m.prefix, Some("nick!u@h"));
        assert!(m.is("privmsg"));
        assert_eq!(m.params(), ["#chat", "hello  there "]);
    }

    #[test]
    fn middles_trailing_and_spaces() {
        let m = parse("USER  alice 0 *   :Alice A").unwrap();
        assert_eq!(m.params(), ["alice", "0", "*", "Alice A"]);
        let m = parse("NICK bob").unwrap();
        assert_eq!(m.params(), ["bob"]);
        let m = parse("CAP END\r").unwrap();
        assert_eq!(m.params(), ["END"]);
        let m = parse("PRIVMSG x :").unwrap();
        assert_eq!(m.params(), ["x", ""]);
        let m = parse("QUIT").unwrap();
        assert!(m.params().is_empty());
    }

    #[test]
    fn fifteenth_parameter_takes_the_rest() {
        let line = format!("CMD {} last words", "p ".repeat(14));
        let m = parse(&line).unwrap();
        assert_eq!(m.params().len(), 15);
        assert_eq!(m.param(14), Some("last words"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("   "), Err(ParseError::Empty));
        assert_eq!(parse("@tags"), Err(ParseError::NoCommand));
        assert_eq!(parse(":prefix"), Err(ParseError::NoCommand));
        assert_eq!(parse(":prefix   "), Err(ParseError::NoCommand));
        let long = format!("PRIVMSG #chat :{}", "x".repeat(MAX_MESSAGE));
        assert_eq!(parse(&long), Err(ParseError::TooLong));
        let fits = format!("PRIVMSG #chat :{}", "x".repeat(MAX_MESSAGE - 15));
        assert!(parse(&fits).is_ok());
        // Tags do not count against the 510 bytes.
        let tagged = format!("@{} {fits}", "t".repeat(1000));
        assert!(parse(&tagged).is_ok());
        let tagged = format!("@{} {fits}", "t".repeat(MAX_TAGS));
        assert_eq!(parse(&tagged), Err(ParseError::TooLong));
    }
}
