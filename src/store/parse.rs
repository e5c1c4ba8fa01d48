//! Reading the accounts file's bytes, with no file I/O, so that every rule
//! about torn, bad and duplicate lines can be tested on plain byte strings
//! (`tests/store_props.rs` does so with generated files and every cut of them).
//!
//! File format, version 1 (UTF-8, `\n`-terminated lines):
//!
//! ```text
//! chat-accounts v1
//! <username> <argon2id PHC string>
//! ```
//!
//! Lines are only ever appended, so a crash can only damage the last line,
//! and only by cutting it short. The rules follow from that:
//!
//! - Every line that ends in `\n` must be right: header first, then
//!   `name PHC` records with distinct valid names and usable argon2id hashes
//!   within [`MAX_STORED`](super::hash::MAX_STORED). Anything else is a
//!   [`BadLine`]: the file was damaged some other way, and starting would
//!   silently lose or invent accounts.
//! - A last line without its `\n` that is nonetheless a whole record (its
//!   hash output has the full [`OUTPUT_LEN`] bytes) is kept: the crash came
//!   between the record and its `\n`. It is checked like any other line.
//! - Any other last line without `\n` is torn: a registration that never got
//!   its `REGIST_OK`. It is dropped and the file cut back to the line before.
//!   A torn first line must be a prefix of the header; anything else there is
//!   not our file, and is refused rather than overwritten.

use std::collections::HashSet;
use std::fmt;

use argon2::password_hash::PasswordHash;
use argon2::{Params, Version};

use super::hash::{HashParams, OUTPUT_LEN, check_limits};
use crate::wire::protocol::valid_username;

/// The first line of every accounts file; the number is the format version.
pub const HEADER: &str = "chat-accounts v1";

/// One account read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// The argon2id PHC string, as stored.
    pub phc: String,
    /// The cost written in `phc`.
    pub params: HashParams,
}

/// How the file ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Empty, or the last line ends in `\n`.
    Whole,
    /// The last line is whole but lacks its `\n`; it is among the accounts
    /// and the `\n` should be added.
    MissingNewline,
    /// The last line is torn and is not among the accounts; the file should
    /// be cut back to [`Parsed::keep`] bytes.
    Torn,
}

/// A readable accounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub accounts: Vec<Account>,
    /// How many leading bytes hold the header and accounts: the whole input,
    /// except for a torn last line.
    pub keep: usize,
    pub tail: Tail,
}

/// A line that stops the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for BadLine {}

/// Reads an accounts file's contents. See the module documentation for the
/// rules.
pub fn parse_accounts(bytes: &[u8]) -> Result<Parsed, BadLine> {
    let mut accounts = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    let mut number = 0;
    let mut tail = Tail::Whole;
    while start < bytes.len() {
        number += 1;
        let (raw, next, ended) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(at) => (&bytes[start..start + at], start + at + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        let bad = |reason: String| BadLine {
            line: number,
            reason,
        };
        // As `str::lines` did before: a `\r\n` ending is accepted.
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if number == 1 {
            if line != HEADER.as_bytes() {
                if !ended && HEADER.as_bytes().starts_with(raw) {
                    return Ok(torn(accounts, start));
                }
                return Err(bad(format!("expected header {HEADER:?}")));
            }
        } else {
            let record = match (parse_record(line), ended) {
                (Ok(record), true) => record,
                (Ok(record), false) if record.output_len == OUTPUT_LEN => record,
                (_, false) => return Ok(torn(accounts, start)),
                (Err(reason), true) => return Err(bad(reason)),
            };
            check_record(&record).map_err(bad)?;
            if !seen.insert(record.name) {
                return Err(bad(format!("duplicate username {:?}", record.name)));
            }
            accounts.push(Account {
                name: record.name.to_owned(),
                phc: record.phc.to_owned(),
                params: record.params,
            });
        }
        if !ended {
            tail = Tail::MissingNewline;
        }
        start = next;
    }
    Ok(Parsed {
        accounts,
        keep: bytes.len(),
        tail,
    })
}

/// The result for a torn last line starting at byte `at`.
fn torn(accounts: Vec<Account>, at: usize) -> Parsed {
    Parsed {
        accounts,
        keep: at,
        tail: Tail::Torn,
    }
}

/// A line that reads as `name PHC`; not yet checked against the rules that a
/// torn line could not break (see [`check_record`]).
struct Record<'a> {
    name: &'a str,
    phc: &'a str,
    params: HashParams,
    argon: Params,
    output_len: usize,
}

/// Reads `name PHC`, the PHC string down to its salt and output. A line cut
/// short anywhere before the end of its output fails here, or parses with a
/// short output.
fn parse_record(line: &[u8]) -> Result<Record<'_>, String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let (name, phc) = line
        .split_once(' ')
        .ok_or_else(|| "expected \"USERNAME PHC\"".to_owned())?;
    let hash = PasswordHash::new(phc).map_err(|e| format!("bad password hash: {e}"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err("password hash is not argon2id".into());
    }
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| format!("bad argon2 version: {e}"))?;
    }
    let argon = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    let salt = hash.salt.ok_or("password hash has no salt")?;
    let mut buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut buf)
        .map_err(|e| format!("bad salt in password hash: {e}"))?;
    if salt.len() < argon2::MIN_SALT_LEN {
        return Err("password hash salt is too short".into());
    }
    let output = hash.hash.ok_or("password hash has no output")?;
    Ok(Record {
        name,
        phc,
        params: HashParams::of(&argon),
        argon,
        output_len: output.len(),
    })
}

/// The rules a whole record must also keep: a valid name, a cost within the
/// limits (SPEC section 4).
fn check_record(record: &Record<'_>) -> Result<(), String> {
    if !valid_username(record.name) {
        return Err(format!("invalid username {:?}", record.name));
    }
    check_limits(record.params, &record.argon)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=64,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA$1EGUJDMOMXnD7VnmwVlcWRiQpOhDeKCJBbY/IG8b2O8";

    fn file(lines: &[&str]) -> String {
        let mut s = format!("{HEADER}\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    #[test]
    fn empty_and_header_only() {
        let p = parse_accounts(b"").unwrap();
        assert_eq!((p.accounts.len(), p.keep, p.tail), (0, 0, Tail::Whole));
        let p = parse_accounts(HEADER.as_bytes()).unwrap();
        assert_eq!(p.tail, Tail::MissingNewline);
        let p = parse_accounts(b"chat-acc").unwrap();
        assert_eq!((p.keep, p.tail), (0, Tail::Torn));
        assert_eq!(parse_accounts(b"hello").unwrap_err().line, 1);
        assert_eq!(parse_accounts(b"hello\n").unwrap_err().line, 1);
    }

    #[test]
    fn a_whole_last_record_without_newline_is_kept() {
        let text = file(&[&format!("alice {PHC}")]);
        let p = parse_accounts(text.trim_end().as_bytes()).unwrap();
        assert_eq!(p.tail, Tail::MissingNewline);
        assert_eq!(p.accounts[0].name, "alice");
        assert_eq!(p.keep, text.len() - 1);
    }

    /// Cut inside the output, the line may still be a valid PHC string with
    /// a shorter output: it must count as torn, not as a wrong hash.
    #[test]
    fn a_record_cut_inside_its_output_is_torn() {
        let text = file(&["alice x", &format!("bob {PHC}")]);
        let text = text.replace("alice x\n", "");
        let cut = &text[..text.len() - 9];
        let p = parse_accounts(cut.as_bytes()).unwrap();
        assert_eq!((p.tail, p.keep), (Tail::Torn, HEADER.len() + 1));
        assert!(p.accounts.is_empty());
    }

    #[test]
    fn limits_on_a_whole_line_name_it() {
        let over = PHC.replace("m=64,t=1", "m=64,t=21");
        let text = file(&[&format!("alice {PHC}"), &format!("bob {over}")]);
        let err = parse_accounts(text.as_bytes()).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.reason.contains("ten times"), "{err}");
        // Even without its `\n`: the record is whole, and wrong.
        let err = parse_accounts(text.trim_end().as_bytes()).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }
}
