//! The fan-out path against the real binary: broadcasts of several senders
//! gathered in one poll turn still reach everyone but their sender, each
//! sender's lines in order, whatever mix of private replies comes between.

mod common;

use std::thread;

use common::*;

#[test]
fn senders_in_one_turn_never_hear_themselves_and_everyone_hears_the_rest_in_order() {
    const LINES: usize = 300;
    let server = Server::start(&["--flood-rate", "0"]);
    let mut a = server.login("a");
    let mut b = server.login("b");
    let mut c = server.login("c");
    // Both senders write everything at once, so their lines meet in the
    // server's poll turns; now and then a private message to c cuts in.
    let script = |me: &str| {
        let mut s = String::new();
        for i in 0..LINES {
            s.push_str(&format!("{me} says {i}\n"));
            if i % 50 == 7 {
                s.push_str(&format!("send-to c psst {i}\n"));
            }
        }
        s
    };
    let (sa, sb) = (script("a"), script("b"));
    let wa = a.stream.try_clone().unwrap();
    let wb = b.stream.try_clone().unwrap();
    let ta = thread::spawn(move || {
        use std::io::Write;
        (&wa).write_all(sa.as_bytes()).unwrap();
    });
    let tb = thread::spawn(move || {
        use std::io::Write;
        (&wb).write_all(sb.as_bytes()).unwrap();
    });
    ta.join().unwrap();
    tb.join().unwrap();
    // a hears exactly b's lines, in order, and none of its own.
    for i in 0..LINES {
        a.expect(&format!("[b] b says {i}"));
    }
    for i in 0..LINES {
        b.expect(&format!("[a] a says {i}"));
    }
    // c hears both, each in its sender's order, with the private messages
    // where their senders put them.
    let (mut next_a, mut next_b) = (0, 0);
    let (mut psst_a, mut psst_b) = (0, 0);
    while next_a < LINES || next_b < LINES {
        let line = c.line();
        if let Some(rest) = line.strip_prefix("[a] a says ") {
            assert_eq!(rest, next_a.to_string());
            next_a += 1;
        } else if let Some(rest) = line.strip_prefix("[b] b says ") {
            assert_eq!(rest, next_b.to_string());
            next_b += 1;
        } else if let Some(rest) = line.strip_prefix("Pesan pribadi dari [a] psst ") {
            let i: usize = rest.parse().unwrap();
            assert_eq!(i + 1, next_a, "a's private message out of order");
            psst_a += 1;
        } else if let Some(rest) = line.strip_prefix("Pesan pribadi dari [b] psst ") {
            let i: usize = rest.parse().unwrap();
            assert_eq!(i + 1, next_b, "b's private message out of order");
            psst_b += 1;
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    assert_eq!((psst_a, psst_b), (6, 6));
    a.expect_silence(std::time::Duration::from_millis(100));
    b.expect_silence(std::time::Duration::from_millis(100));
}

/// Readers of a large audience are written a slice per poll turn (so that
/// private lines are not held up behind a whole broadcast). Whatever slice a
/// reader falls in, and however often it is written ahead because the next
/// broadcast came before its slice did, it hears every broadcast once, in
/// order, with private lines where they were sent.
#[test]
fn readers_of_a_large_audience_hear_every_broadcast_in_order_with_private_lines_between() {
    const READERS: usize = 150;
    const LINES: usize = 40;
    let server = Server::start(&["--flood-rate", "0"]);
    let mut sender = server.login("sender");
    let mut readers: Vec<Client> = (0..READERS)
        .map(|i| server.login(&format!("reader{i}")))
        .collect();
    // Everything in one write, so broadcasts follow each other faster than
    // the slices go round; every tenth line a private line to the first,
    // a middle and the last reader cuts in.
    let picked = [0, READERS / 2, READERS - 1];
    let mut script = String::new();
    for i in 0..LINES {
        script.push_str(&format!("line {i}\n"));
        if i % 10 == 3 {
            for &r in &picked {
                script.push_str(&format!("send-to reader{r} psst {i}\n"));
            }
        }
    }
    sender.send_raw(script.as_bytes());
    for (r, reader) in readers.iter_mut().enumerate() {
        for i in 0..LINES {
            reader.expect(&format!("[sender] line {i}"));
            if i % 10 == 3 && picked.contains(&r) {
                reader.expect(&format!("Pesan pribadi dari [sender] psst {i}"));
            }
        }
    }
    for &r in &picked {
        readers[r].expect_silence(std::time::Duration::from_millis(50));
    }
}
