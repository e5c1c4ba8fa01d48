//! Property tests of the IRC dialect's pure parts, beside the framing ones
//! (`props.rs`): the message parser never panics and gives back what a
//! message was built from, and what the server writes always fits IRC's
//! 512 bytes without losing or breaking a character.

use proptest::collection::vec;
use proptest::prelude::*;

use chat::wire::irc::parse::{MAX_MESSAGE, MAX_PARAMS, ParseError, parse};
use chat::wire::irc::render::{MAX_LINE, privmsg, server_notice};

/// A word with no space, no leading colon, and not empty.
fn middle() -> impl Strategy<Value = String> {
    "[A-Za-z0-9#!@*=,.+-][A-Za-z0-9#!@*=,.:+-]{0,12}"
}

/// Arbitrary text for a trailing parameter (spaces and colons included).
fn trailing() -> impl Strategy<Value = String> {
    "[^\r\n\0]{0,80}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(line in "\\PC{0,700}", raw in vec(any::<u8>(), 0..700)) {
        let _ = parse(&line);
        let _ = parse(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn a_built_message_parses_back(
        tags in proptest::option::of("[a-z0-9=;/.-]{1,30}"),
        prefix in proptest::option::of(middle()),
        command in "[A-Za-z]{1,10}|[0-9]{3}",
        middles in vec(middle(), 0..8),
        last in proptest::option::of(trailing()),
    ) {
        let mut line = String::new();
        if let Some(t) = &tags {
            line.push_str(&format!("@{t} "));
        }
        if let Some(p) = &prefix {
            line.push_str(&format!(":{p} "));
        }
        line.push_str(&command);
        for m in &middles {
            line.push(' ');
            line.push_str(m);
        }
        if let Some(t) = &last {
            line.push_str(" :");
            line.push_str(t);
        }
        let m = parse(&line).unwrap();
        prop_assert_eq!(m.tags, tags.as_deref());
        prop_assert_eq!(m.prefix, prefix.as_deref());
        prop_assert_eq!(m.command, command.as_str());
        let mut want: Vec<&str> = middles.iter().map(String::as_str).collect();
        if let Some(t) = &last {
            want.push(t);
        }
        prop_assert_eq!(m.params(), want.as_slice());
    }

    #[test]
    fn the_length_limit_holds_and_params_are_bounded(
        words in vec("[a-z:]{0,6}", 0..40),
        pad in 0usize..600,
    ) {
        let line = format!("CMD {} {}", words.join(" "), "x".repeat(pad));
        match parse(&line) {
            Ok(m) => {
                prop_assert!(line.len() <= MAX_MESSAGE);
                prop_assert!(m.params().len() <= MAX_PARAMS);
            }
            Err(e) => {
                prop_assert_eq!(e, ParseError::TooLong);
                prop_assert!(line.len() > MAX_MESSAGE);
            }
        }
    }

    #[test]
    fn split_messages_fit_and_lose_nothing(
        from in "[A-Za-z0-9_-]{1,32}",
        target in "#chat|[A-Za-z0-9_-]{1,32}",
        text in "\\PC{1,1500}",
    ) {
        for notice in [false, true] {
            let mut out = Vec::new();
            if notice {
                server_notice(&mut out, &target, &text);
            } else {
                privmsg(&mut out, &from, &target, &text);
            }
            let out = String::from_utf8(out).expect("split inside a character");
            let mut joined = String::new();
            for line in out.split_inclusive("\r\n") {
                prop_assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
                prop_assert!(line.ends_with("\r\n"));
                let body = line.trim_end_matches("\r\n");
                let (_, text) = body.split_once(&format!(" {target} :")).unwrap();
                joined.push_str(text);
            }
            prop_assert_eq!(&joined, &text);
        }
    }
}

// ---------------------------------------------------------------------------
// The dialect against the real core: any sequence of lines, however
// malformed, gives no panic and only whole IRC lines of at most 512 bytes.

mod dialect {
    use std::collections::VecDeque;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Instant;

    use base64::Engine as _;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use chat::core::chat::{
        Audience, AuthDone, AuthJob, AuthOutcome, Chat, ChatConfig, ConnId, Event, Flow, Outbox,
    };
    use chat::wire::dialect::Dialect;
    use chat::wire::irc::Irc;
    use chat::wire::protocol::Lang;

    const CONNS: usize = 3;

    /// The loop's part: each connection's dialect and what it was sent.
    struct World {
        irc: Vec<Option<Irc>>,
        said: Vec<Vec<u8>>,
        closed: Vec<ConnId>,
        jobs: VecDeque<AuthJob>,
    }

    impl Outbox for World {
        fn send(&mut self, to: ConnId, event: Event<'_>) {
            if let Some(irc) = self.irc[to.key()].as_mut() {
                irc.render(Lang::En, &event, &mut self.said[to.key()]);
            }
        }
        fn close(&mut self, conn: ConnId) {
            self.closed.push(conn);
        }
        fn submit(&mut self, job: AuthJob) {
            self.jobs.push_back(job);
        }
        fn broadcast(&mut self, to: Audience<'_>, except: ConnId, event: Event<'_>) {
            let mut once = Vec::new();
            Dialect::render_broadcast(Dialect::IRC, Lang::En, &event, &mut once);
            for &c in to.conns {
                if c != except {
                    self.said[c.key()].extend_from_slice(&once);
                }
            }
        }
    }

    fn irc_line() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("u0"),
            Just("u1"),
            Just("NickServ"),
            Just("b d"),
            Just("")
        ];
        let pass = prop_oneof![Just("p0"), Just("p1"), Just("u0:p0"), Just("")];
        let target = prop_oneof![
            Just("#chat"),
            Just("#x"),
            Just("u0"),
            Just("u1"),
            Just("NickServ"),
            Just("u0,#chat")
        ];
        let text = "[^\r\n]{0,40}";
        let plain = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        prop_oneof![
            2 => name.clone().prop_map(|n| format!("NICK {n}").into_bytes()),
            1 => Just(b"USER u 0 * :U".to_vec()),
            2 => pass.clone().prop_map(|p| format!("PASS {p}").into_bytes()),
            1 => prop_oneof![Just("CAP LS 302"), Just("CAP REQ :sasl"), Just("CAP REQ :foo"), Just("CAP END"), Just("CAP LIST"), Just("CAP")].prop_map(|s| s.as_bytes().to_vec()),
            1 => Just(b"AUTHENTICATE PLAIN".to_vec()),
            1 => (name.clone(), pass.clone()).prop_map(move |(n, p)| format!("AUTHENTICATE {}", plain(format!("\0{n}\0{p}").as_bytes())).into_bytes()),
            1 => prop_oneof![Just("AUTHENTICATE *"), Just("AUTHENTICATE +"), Just("AUTHENTICATE x")].prop_map(|s| s.as_bytes().to_vec()),
            4 => (target, text).prop_map(|(t, x)| format!("PRIVMSG {t} :{x}").into_bytes()),
            2 => (prop_oneof![Just("REGISTER"), Just("IDENTIFY"), Just("LOGOUT"), Just("HELP")], pass).prop_map(|(v, p)| format!("PRIVMSG NickServ :{v} {p}").into_bytes()),
            2 => prop_oneof![Just("NAMES #chat"), Just("WHO #chat"), Just("WHOIS u0"), Just("ISON u0 u1"), Just("MODE #chat"), Just("MODE #chat b"), Just("MODE u0 +i"), Just("JOIN #chat,#x"), Just("PART #chat"), Just("LIST"), Just("TOPIC #chat"), Just("PING :x"), Just("PONG :x"), Just("QUIT :bye")].prop_map(|s| s.as_bytes().to_vec()),
            2 => vec(any::<u8>(), 0..600),
            1 => "[A-Z]{1,8}( [^\r\n]{0,600})?".prop_map(String::into_bytes),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Line(usize, Vec<u8>),
        Finish(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..CONNS, irc_line()).prop_map(|(c, l)| Op::Line(c, l)),
            2 => any::<bool>().prop_map(Op::Finish),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_lines_give_only_whole_short_irc_lines(ops in vec(op(), 1..60)) {
            let now = Instant::now();
            let mut chat = Chat::new(ChatConfig::default(), [("u0".to_owned(), "hash:p0".to_owned())]);
            let mut world = World {
                irc: (0..CONNS).map(|_| Some(Irc::new(now))).collect(),
                said: vec![Vec::new(); CONNS],
                closed: Vec::new(),
                jobs: VecDeque::new(),
            };
            let ids: Vec<ConnId> = (0..CONNS).map(|k| ConnId::new(k, 1)).collect();
            for (k, &id) in ids.iter().enumerate() {
                chat.connect(id, SocketAddr::from((Ipv4Addr::LOCALHOST, 5000 + k as u16)), now, &mut world);
            }
            let mut gone = [false; CONNS];
            for op in ops {
                match op {
                    Op::Line(k, line) => {
                        if gone[k] || chat.flow(ids[k]) != Flow::Ready {
                            continue;
                        }
                        let Some(mut irc) = world.irc[k].take() else { continue };
                        let _ = irc.line(ids[k], &line, &mut chat, now, Lang::En, &mut world);
                        world.said[k].append(irc.output());
                        world.irc[k] = Some(irc);
                    }
                    Op::Finish(fail) => {
                        let Some(job) = world.jobs.pop_front() else { continue };
                        let done = match job {
                            AuthJob::Register { ticket, username, password } => AuthDone {
                                ticket,
                                outcome: if fail {
                                    AuthOutcome::StorageFailed { username }
                                } else {
                                    AuthOutcome::Registered { username, phc: format!("hash:{password}").into() }
                                },
                            },
                            AuthJob::Verify { ticket, phc, password } => AuthDone {
                                ticket,
                                outcome: AuthOutcome::Verified(phc.as_deref() == Some(format!("hash:{password}").as_str())),
                            },
                        };
                        let _ = chat.auth_done(done, now, &mut world);
                    }
                }
                while let Some(id) = world.closed.pop() {
                    if !gone[id.key()] {
                        gone[id.key()] = true;
                        chat.disconnect(id, now, &mut world);
                    }
                }
            }
            for said in &world.said {
                let text = std::str::from_utf8(said);
                prop_assert!(text.is_ok(), "not UTF-8: {:?}", String::from_utf8_lossy(said));
                for line in said.split_inclusive(|&b| b == b'\n') {
                    prop_assert!(line.ends_with(b"\r\n"), "{:?}", String::from_utf8_lossy(line));
                    prop_assert!(line.len() <= 512, "{} bytes: {:?}", line.len(), String::from_utf8_lossy(line));
                    prop_assert!(!line[..line.len() - 2].contains(&b'\r'));
                }
            }
        }
    }
}
