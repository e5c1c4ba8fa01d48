//! The history file's format and reading rules, on bytes, with no I/O
//! (SPEC section 9), and [`Live`]: what a sequence of records leaves
//! waiting, shared by the start-up load and the writer's compaction.
//!
//! File format, version 1 (UTF-8, `\n`-terminated lines, fields split at
//! single spaces, the text last so that it may hold spaces):
//!
//! ```text
//! chat-history v1
//! M <id> <unix-seconds> <to> <from> <text>   a stored private message
//! B <id> <unix-seconds> <from> <text>        a broadcast kept for --replay
//! D <to> <id>                                 messages to <to> up to <id> delivered
//! ```
//!
//! Records are only ever appended, and a message is acknowledged (`STORED`)
//! only once its whole line, `\n` included, is fsynced. So a last line
//! without its `\n` is torn, whatever it holds: it was never acknowledged,
//! and is dropped (the file cut back to the line before). Every line that
//! ends in `\n` must be a valid record; anything else is a [`BadLine`] that
//! names its line, and the server does not start rather than lose messages.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::core::history::{Broadcast, Loaded, Message};
use crate::wire::protocol::valid_username;

pub use super::parse::BadLine;

/// The first line of every history file; the number is the format version.
pub const HEADER: &str = "chat-history v1";

/// One line of the file after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Message(Message),
    Broadcast(Broadcast),
    Delivered { to: String, upto: u64 },
}

/// A readable history file: its whole records, and how many of its bytes
/// to keep (less than its length when the last line is torn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<Record>,
    pub keep: usize,
    /// The last line was torn and is not among the records.
    pub torn: bool,
}

/// Reads a history file's contents (see the module documentation).
pub fn parse_history(bytes: &[u8]) -> Result<Parsed, BadLine> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut number = 0;
    while start < bytes.len() {
        number += 1;
        let Some(at) = bytes[start..].iter().position(|&b| b == b'\n') else {
            // A torn first line must be a start of the header: anything else
            // is not our file, and is refused rather than cut.
            if number == 1 && !HEADER.as_bytes().starts_with(&bytes[start..]) {
                return Err(BadLine {
                    line: 1,
                    reason: format!("expected header {HEADER:?}"),
                });
            }
            return Ok(Parsed {
                records,
                keep: start,
                torn: true,
            });
        };
        let line = &bytes[start..start + at];
        let bad = |reason: String| BadLine {
            line: number,
            reason,
        };
        if number == 1 {
            if line != HEADER.as_bytes() {
                return Err(bad(format!("expected header {HEADER:?}")));
            }
        } else {
            records.push(parse_record(line).map_err(bad)?);
        }
        start += at + 1;
    }
    Ok(Parsed {
        records,
        keep: bytes.len(),
        torn: false,
    })
}

/// Reads one record line (without its `\n`).
pub fn parse_record(line: &[u8]) -> Result<Record, String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let (kind, rest) = line
        .split_once(' ')
        .ok_or_else(|| "expected a record: M, B or D and its fields".to_owned())?;
    match kind {
        "M" => {
            let mut fields = rest.splitn(5, ' ');
            let id = number(fields.next(), "id")?;
            let at = number(fields.next(), "time")?;
            let to = name(fields.next(), "recipient")?;
            let from = name(fields.next(), "sender")?;
            let text = text(fields.next())?;
            Ok(Record::Message(Message {
                id,
                at,
                to,
                from,
                text,
            }))
        }
        "B" => {
            let mut fields = rest.splitn(4, ' ');
            let id = number(fields.next(), "id")?;
            let at = number(fields.next(), "time")?;
            let from = name(fields.next(), "sender")?;
            let text = text(fields.next())?;
            Ok(Record::Broadcast(Broadcast { id, at, from, text }))
        }
        "D" => {
            let mut fields = rest.splitn(2, ' ');
            let to = name(fields.next(), "recipient")?;
            let upto = number(fields.next(), "id")?;
            Ok(Record::Delivered { to, upto })
        }
        other => Err(format!("unknown record kind {other:?}")),
    }
}

fn number<T: std::str::FromStr>(field: Option<&str>, what: &str) -> Result<T, String> {
    let field = field.ok_or_else(|| format!("missing {what}"))?;
    // Plain decimal only: `+5` or ` 5` would not write back the same.
    let plain = field.strip_prefix('-').unwrap_or(field);
    if plain.is_empty() || !plain.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {field:?}"));
    }
    field.parse().map_err(|_| format!("bad {what} {field:?}"))
}

fn name(field: Option<&str>, what: &str) -> Result<String, String> {
    let field = field.ok_or_else(|| format!("missing {what}"))?;
    if !valid_username(field) {
        return Err(format!("invalid {what} name {field:?}"));
    }
    Ok(field.to_owned())
}

/// The text: what the core relays is never empty and never holds a line
/// break (it is cleaned and trimmed first).
fn text(field: Option<&str>) -> Result<String, String> {
    match field {
        Some(text) if !text.is_empty() && !text.contains('\r') => Ok(text.to_owned()),
        Some(_) => Err("empty or broken message text".into()),
        None => Err("missing message text".into()),
    }
}

impl fmt::Display for Record {
    /// The record's line, without its `\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Message(m) => write!(f, "M {} {} {} {} {}", m.id, m.at, m.to, m.from, m.text),
            Record::Broadcast(b) => write!(f, "B {} {} {} {}", b.id, b.at, b.from, b.text),
            Record::Delivered { to, upto } => write!(f, "D {to} {upto}"),
        }
    }
}

/// Appends `record`'s line, `\n` included.
pub fn push_line(out: &mut Vec<u8>, record: &Record) {
    use std::io::Write as _;
    let _ = writeln!(out, "{record}");
}

/// What a history leaves waiting: messages not yet delivered, the last
/// broadcasts, the highest id seen. Records are applied in file order.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Waiting messages by id: oldest first.
    messages: BTreeMap<u64, Message>,
    broadcasts: VecDeque<Broadcast>,
    /// How many broadcasts to keep (`--replay`).
    keep_broadcasts: usize,
    max_id: u64,
}

impl Live {
    pub fn new(keep_broadcasts: usize) -> Self {
        Self {
            keep_broadcasts,
            ..Self::default()
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Message(m) => {
                self.max_id = self.max_id.max(m.id);
                self.messages.insert(m.id, m);
            }
            Record::Broadcast(b) => {
                self.max_id = self.max_id.max(b.id);
                if self.keep_broadcasts > 0 {
                    if self.broadcasts.len() >= self.keep_broadcasts {
                        self.broadcasts.pop_front();
                    }
                    self.broadcasts.push_back(b);
                }
            }
            Record::Delivered { to, upto } => {
                self.messages.retain(|&id, m| id > upto || m.to != to);
            }
        }
    }

    /// Forgets records sent before `cutoff` (`--history-days`).
    pub fn expire(&mut self, cutoff: i64) {
        self.messages.retain(|_, m| m.at >= cutoff);
        self.broadcasts.retain(|b| b.at >= cutoff);
    }

    /// The whole file that holds just what is live: header, broadcasts and
    /// messages, each in id order.
    pub fn to_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(HEADER.as_bytes());
        out.push(b'\n');
        let mut records: Vec<Record> = self
            .broadcasts
            .iter()
            .cloned()
            .map(Record::Broadcast)
            .chain(self.messages.values().cloned().map(Record::Message))
            .collect();
        records.sort_by_key(|r| match r {
            Record::Message(m) => m.id,
            Record::Broadcast(b) => b.id,
            Record::Delivered { upto, .. } => *upto,
        });
        for record in &records {
            push_line(&mut out, record);
        }
        out
    }

    /// What the core starts with.
    pub fn loaded(&self) -> Loaded {
        Loaded {
            messages: self.messages.values().cloned().collect(),
            broadcasts: self.broadcasts.iter().cloned().collect(),
            next_id: self.max_id.saturating_add(1),
        }
    }

    /// How many messages wait.
    pub fn waiting(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&str]) -> String {
        let mut s = format!("{HEADER}\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    #[test]
    fn records_read_and_write_back() {
        let text = file(&[
            "M 1 1700000000 bob alice hi  there\tfriend",
            "B 2 -5 alice all of  you",
            "D bob 1",
        ]);
        let parsed = parse_history(text.as_bytes()).unwrap();
        assert!(!parsed.torn);
        assert_eq!(parsed.keep, text.len());
        let mut back = format!("{HEADER}\n").into_bytes();
        for r in &parsed.records {
            push_line(&mut back, r);
        }
        assert_eq!(String::from_utf8(back).unwrap(), text);
        let Record::Message(m) = &parsed.records[0] else {
            panic!("expected a message");
        };
        assert_eq!(m.text, "hi  there\tfriend");
    }

    #[test]
    fn a_torn_last_line_is_dropped_even_if_it_reads_whole() {
        let text = file(&["M 1 5 bob alice hi"]);
        let cut = &text[..text.len() - 1];
        let parsed = parse_history(cut.as_bytes()).unwrap();
        assert!(parsed.torn);
        assert!(parsed.records.is_empty());
        assert_eq!(parsed.keep, HEADER.len() + 1);
        let parsed = parse_history(b"chat-hi").unwrap();
        assert_eq!((parsed.keep, parsed.torn), (0, true));
        assert_eq!(parse_history(b"other").unwrap_err().line, 1);
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (bad, line) in [
            ("M 1 5 bob alice", 3),
            ("M x 5 bob alice hi", 3),
            ("M 1 5 b@d alice hi", 3),
            ("D bob", 3),
            ("X 1", 3),
            ("", 3),
            ("M +1 5 bob alice hi", 3),
        ] {
            let text = file(&["D bob 1", bad, "D bob 2"]);
            let err = parse_history(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, line, "{bad:?}: {err}");
        }
        assert_eq!(parse_history(b"chat-history v2\n").unwrap_err().line, 1);
        let bytes = [file(&["D bob 1"]).as_bytes(), b"M 1 5 bob alice \xff\n"].concat();
        assert_eq!(parse_history(&bytes).unwrap_err().line, 3);
    }

    #[test]
    fn live_keeps_undelivered_recent_and_unexpired() {
        let text = file(&[
            "M 1 100 bob alice one",
            "M 2 100 carol alice two",
            "B 3 100 alice b1",
            "B 4 100 alice b2",
            "B 5 100 alice b3",
            "M 6 100 bob alice three",
            "D bob 2",
            "M 7 10 bob alice old",
        ]);
        let mut live = Live::new(2);
        for r in parse_history(text.as_bytes()).unwrap().records {
            live.apply(r);
        }
        live.expire(50);
        let loaded = live.loaded();
        let ids: Vec<u64> = loaded.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, [2, 6]);
        let ids: Vec<u64> = loaded.broadcasts.iter().map(|b| b.id).collect();
        assert_eq!(ids, [4, 5]);
        assert_eq!(loaded.next_id, 8);
        assert_eq!(
            String::from_utf8(live.to_file()).unwrap(),
            file(&[
                "M 2 100 carol alice two",
                "B 4 100 alice b2",
                "B 5 100 alice b3",
                "M 6 100 bob alice three",
            ])
        );
    }
}
