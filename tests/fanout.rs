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
