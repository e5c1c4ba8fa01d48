//! Property tests of the accounts file parser (issue 9): generated valid
//! files cut at every byte, damaged with bad UTF-8, given duplicate names,
//! and arbitrary bytes. The parser is pure, so no file or server is needed.

use argon2::password_hash::{Output, SaltString};
use proptest::collection::vec;
use proptest::prelude::*;

use chat::store::parse::{HEADER, Parsed, Tail, parse_accounts};

/// One generated account line.
#[derive(Debug, Clone)]
struct Line {
    name: String,
    phc: String,
    /// Ends in `\r\n` rather than `\n` (accepted, as `str::lines` did).
    crlf: bool,
}

/// A PHC string as the server writes it, with any cost within the limits.
fn phc() -> impl Strategy<Value = String> {
    (
        1u32..=10,
        1u32..=20,
        vec(any::<u8>(), 8..=32),
        any::<[u8; 32]>(),
    )
        .prop_flat_map(|(p, t, salt, out)| {
            (8 * p..=194_560).prop_map(move |m| {
                let salt = SaltString::encode_b64(&salt).unwrap();
                let out = Output::new(&out).unwrap();
                format!("$argon2id$v=19$m={m},t={t},p={p}${}${out}", salt.as_str())
            })
        })
}

/// Up to six account lines with distinct valid names.
fn lines() -> impl Strategy<Value = Vec<Line>> {
    vec(("[A-Za-z0-9_-]{1,32}", phc(), any::<bool>()), 0..6).prop_map(|raw| {
        let mut seen = std::collections::HashSet::new();
        raw.into_iter()
            .filter(|(name, _, _)| seen.insert(name.clone()))
            .map(|(name, phc, crlf)| Line { name, phc, crlf })
            .collect()
    })
}

/// The file's bytes, and the byte offsets where each line's content ends
/// (before its `\r\n` or `\n`) and where its `\n` ends; line 0 is the header.
fn render(lines: &[Line]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut bytes = Vec::new();
    let mut bounds = Vec::new();
    let header = std::iter::once((HEADER.to_owned(), false));
    for (text, crlf) in header.chain(
        lines
            .iter()
            .map(|l| (format!("{} {}", l.name, l.phc), l.crlf)),
    ) {
        bytes.extend_from_slice(text.as_bytes());
        let content_end = bytes.len();
        if crlf {
            bytes.push(b'\r');
        }
        bytes.push(b'\n');
        bounds.push((content_end, bytes.len()));
    }
    (bytes, bounds)
}

fn names(parsed: &Parsed) -> Vec<&str> {
    parsed.accounts.iter().map(|a| a.name.as_str()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A valid file parses to all its accounts, and every prefix of it (a
    /// crash at any byte of an append) parses, never errs, to a prefix of
    /// them: the whole lines before the cut, plus the cut line only when
    /// nothing but its line ending is missing; the rest is torn, to be cut
    /// back to the end of the last whole line.
    #[test]
    fn every_prefix_of_a_valid_file_is_a_prefix_of_its_accounts(lines in lines()) {
        let (bytes, bounds) = render(&lines);
        let all: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
        let full = parse_accounts(&bytes).unwrap();
        prop_assert_eq!(names(&full), all.clone());
        prop_assert_eq!((full.keep, full.tail), (bytes.len(), Tail::Whole));
        for (account, line) in full.accounts.iter().zip(&lines) {
            prop_assert_eq!(&account.phc, &line.phc);
        }
        for cut in 0..=bytes.len() {
            let parsed = parse_accounts(&bytes[..cut])
                .map_err(|e| TestCaseError::fail(format!("cut at {cut}: {e}")))?;
            // Lines whose `\n` is within the cut, and the line being cut.
            let whole = bounds.iter().filter(|&&(_, end)| end <= cut).count();
            let (expect_keep, expect_tail, expect_lines) = if cut == 0
                || bounds.iter().any(|&(_, end)| end == cut)
            {
                (cut, Tail::Whole, whole)
            } else if cut >= bounds[whole].0 {
                // Only the line ending (or part of `\r\n`) is missing.
                (cut, Tail::MissingNewline, whole + 1)
            } else {
                let keep = if whole == 0 { 0 } else { bounds[whole - 1].1 };
                (keep, Tail::Torn, whole)
            };
            // Line 0 is the header, not an account.
            let expect = &all[..expect_lines.saturating_sub(1)];
            prop_assert_eq!(names(&parsed), expect.to_vec(), "cut at {}", cut);
            prop_assert_eq!(parsed.keep, expect_keep, "cut at {}", cut);
            prop_assert_eq!(parsed.tail, expect_tail, "cut at {}", cut);
        }
    }

    /// Bytes that are not UTF-8 in a whole line stop the load, naming that
    /// line; in a last line without its `\n` they are a torn write.
    #[test]
    fn bad_utf8_names_its_line_or_is_a_torn_tail(
        lines in lines().prop_filter("needs an account", |l| !l.is_empty()),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![&b"\xff"[..], b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
    ) {
        let (bytes, bounds) = render(&lines);
        let line = 1 + which.index(lines.len());
        let start = bounds[line - 1].1;
        let offset = start + at.index(bounds[line].0 - start + 1);
        let damaged = [&bytes[..offset], bad, &bytes[offset..]].concat();
        let err = parse_accounts(&damaged).unwrap_err();
        prop_assert_eq!(err.line, line + 1, "{}", err);
        prop_assert!(err.reason.contains("UTF-8"), "{}", err);

        // The same line, cut before its line ending, so that it is last.
        let end = bounds[line].0 + bad.len();
        let parsed = parse_accounts(&damaged[..end]).unwrap();
        prop_assert_eq!(parsed.tail, Tail::Torn);
        prop_assert_eq!(parsed.keep, start);
        prop_assert_eq!(parsed.accounts.len(), line - 1);
    }

    /// A name that is already taken stops the load, naming the second line,
    /// wherever it comes and whatever its hash, with or without its `\n`.
    #[test]
    fn a_duplicate_name_names_its_line(
        lines in lines().prop_filter("needs an account", |l| !l.is_empty()),
        first in any::<prop::sample::Index>(),
        after in any::<prop::sample::Index>(),
        other in phc(),
        newline in any::<bool>(),
    ) {
        let first = first.index(lines.len());
        let after = first + after.index(lines.len() - first);
        let mut damaged = lines.clone();
        let duplicate = Line { name: lines[first].name.clone(), phc: other, crlf: false };
        damaged.insert(after + 1, duplicate);
        let (mut bytes, _) = render(&damaged);
        if !newline && after + 1 == lines.len() {
            bytes.pop();
        }
        let err = parse_accounts(&bytes).unwrap_err();
        // Line 1 is the header; the duplicate is account after + 2.
        prop_assert_eq!(err.line, after + 3, "{}", err);
        prop_assert!(err.reason.contains("duplicate"), "{}", err);
    }

    /// Any bytes at all: no panic, and an accepted file is consistent.
    #[test]
    fn arbitrary_bytes_never_panic(
        lines in lines(),
        noise in vec(any::<u8>(), 0..200),
        at in any::<prop::sample::Index>(),
    ) {
        let (bytes, _) = render(&lines);
        let at = at.index(bytes.len() + 1);
        for input in [noise.clone(), [&bytes[..at], &noise[..], &bytes[at..]].concat()] {
            if let Ok(parsed) = parse_accounts(&input) {
                prop_assert!(parsed.keep <= input.len());
                if parsed.tail != Tail::Torn {
                    prop_assert_eq!(parsed.keep, input.len());
                }
                let mut seen = std::collections::HashSet::new();
                prop_assert!(parsed.accounts.iter().all(|a| seen.insert(&a.name)));
            }
        }
    }
}
