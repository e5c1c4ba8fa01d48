//! Property tests of the history file's format (SPEC section 9): generated
//! records write and read back the same, every cut of a valid file reads as
//! a prefix of its records, a damaged whole line is named by its number, and
//! no bytes at all make the parser panic. The parser is pure: no file needed.

use proptest::collection::vec;
use proptest::prelude::*;

use chat::core::history::{Broadcast, Message};
use chat::store::history_parse::{HEADER, Live, Record, parse_history, push_line};

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,32}"
}

/// Text as the core relays it: cleaned (no C0 control but TAB, no DEL),
/// trimmed, not empty; any other Unicode, spaces inside.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0a-\\x1f\\x7f]{1,40}".prop_filter_map("trimmed, not empty", |t| {
        let t = t.trim().to_owned();
        (!t.is_empty()).then_some(t)
    })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), name(), name(), text()).prop_map(
            |(id, at, to, from, text)| Record::Message(Message {
                id,
                at,
                to,
                from,
                text
            })
        ),
        (any::<u64>(), any::<i64>(), name(), text())
            .prop_map(|(id, at, from, text)| Record::Broadcast(Broadcast { id, at, from, text })),
        (name(), any::<u64>()).prop_map(|(to, upto)| Record::Delivered { to, upto }),
    ]
}

/// The file that holds `records`, and the offset where each line ends.
fn file(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = format!("{HEADER}\n").into_bytes();
    let mut ends = vec![bytes.len()];
    for r in records {
        push_line(&mut bytes, r);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #[test]
    fn records_round_trip(records in vec(record(), 0..8)) {
        let (bytes, _) = file(&records);
        let parsed = parse_history(&bytes).unwrap();
        prop_assert_eq!(&parsed.records, &records);
        prop_assert_eq!(parsed.keep, bytes.len());
        prop_assert!(!parsed.torn);
    }

    #[test]
    fn every_cut_reads_as_a_prefix(records in vec(record(), 0..6)) {
        let (bytes, ends) = file(&records);
        for cut in 0..=bytes.len() {
            let parsed = parse_history(&bytes[..cut]).unwrap();
            // The whole lines before the cut, and nothing of the torn one.
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let expected = whole.saturating_sub(1);
            prop_assert_eq!(&parsed.records[..], &records[..expected]);
            let keep = if whole == 0 { 0 } else { ends[whole - 1] };
            prop_assert_eq!(parsed.keep, keep);
            prop_assert_eq!(parsed.torn, keep != cut);
        }
    }

    #[test]
    fn a_bad_whole_line_is_named(
        records in vec(record(), 1..6),
        at in any::<prop::sample::Index>(),
        junk in prop_oneof![
            Just("M 1 2 bob".to_owned()),
            Just("Z".to_owned()),
            Just(String::new()),
            Just("D bob x".to_owned()),
            "[a-z ]{0,10}".prop_map(|s| format!("? {s}")),
        ],
    ) {
        let at = at.index(records.len() + 1);
        let mut bytes = format!("{HEADER}\n").into_bytes();
        for (i, r) in records.iter().enumerate() {
            if i == at {
                bytes.extend_from_slice(junk.as_bytes());
                bytes.push(b'\n');
            }
            push_line(&mut bytes, r);
        }
        if at == records.len() {
            bytes.extend_from_slice(junk.as_bytes());
            bytes.push(b'\n');
        }
        let err = parse_history(&bytes).unwrap_err();
        prop_assert_eq!(err.line, at + 2);
    }

    #[test]
    fn no_bytes_make_it_panic(bytes in vec(any::<u8>(), 0..200)) {
        let _ = parse_history(&bytes);
        let with_header = [format!("{HEADER}\n").as_bytes(), &bytes[..]].concat();
        let _ = parse_history(&with_header);
    }

    /// What a compaction writes reads back to the same live state. Ids
    /// grow in file order, as the server writes them.
    #[test]
    fn compaction_keeps_what_is_live(records in vec(record(), 0..12), keep in 0usize..4) {
        let mut live = Live::new(keep);
        for (n, mut r) in records.into_iter().enumerate() {
            let n = n as u64 + 1;
            match &mut r {
                Record::Message(m) => m.id = n,
                Record::Broadcast(b) => b.id = n,
                Record::Delivered { upto, .. } => *upto %= n + 1,
            }
            live.apply(r);
        }
        let compacted = live.to_file();
        let mut again = Live::new(keep);
        for r in parse_history(&compacted).unwrap().records {
            again.apply(r);
        }
        let (a, b) = (live.loaded(), again.loaded());
        prop_assert_eq!(a.messages, b.messages);
        prop_assert_eq!(a.broadcasts, b.broadcasts);
    }
}
