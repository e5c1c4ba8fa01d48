//! The IRC dialect (SPEC 8.3): enough of RFC 2812 and IRCv3 for irssi,
//! WeeChat and HexChat to join the chat with their ordinary settings.
//!
//! Each IRC connection keeps an [`Irc`]: its registration (`CAP`, `PASS`,
//! `NICK`, `USER`, SASL `PLAIN`), its nick, and which login it is waiting
//! for. Lines are parsed ([`parse`]) and turned into the core's
//! [`Command`]s through [`Chat::run`]; the core's [`Event`]s come back and
//! are rendered here ([`render`]). The core knows nothing of IRC: the
//! channel `#chat` is everyone logged in, `PRIVMSG #chat` a broadcast,
//! `PRIVMSG nick` a `send-to`, `NAMES` a `list-user`, a login `JOIN`, a
//! logout `QUIT`.
//!
//! What the core tells this connection while one of its own lines is being
//! handled is rendered into [`Irc::output`] (the loop takes the dialect out
//! of the connection for that call), and the loop queues it right after;
//! what the core tells it at other times (a login's result, a private
//! message) is rendered by [`Irc::render`] straight into the connection.
//! Broadcasts are rendered once for every IRC reader by
//! [`render_broadcast`], so they never depend on the reader.
//!
//! Keepalive: a connection silent for the server's IRC ping interval (120 s
//! by default, checked every few seconds) is sent `PING`; if it says nothing
//! for another interval it gets `ERROR` and is closed.

pub mod parse;
pub mod render;

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;

use self::parse::{Message, ParseError};
use self::render::{CHANNEL, SERVER};
use crate::core::chat::{Audience, AuthJob, Chat, ConnId, Event, Flow, HistoryJob, Outbox};
use crate::wire::framing::{clean_line, is_forbidden_control};
use crate::wire::line;
use crate::wire::protocol::{Command, Credentials, Lang, Reply, valid_username};
use crate::wire::when;

/// The services this door answers as itself. The core keeps them (and their
/// look-alikes) from being registered by anyone, so that no user can send
/// IRC readers lines that seem to come from them.
pub const SERVICE_NAMES: &[&str] = &["NickServ"];

/// Which login this connection is waiting for, so its result is said the
/// way that login was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// `PASS` at registration: `464` on failure.
    Pass,
    /// SASL `PLAIN`: `903` / `904`.
    Sasl,
    /// A `NickServ` command: notices from NickServ.
    NickServ,
}

/// Where a SASL exchange is.
#[derive(Debug, Default)]
enum Sasl {
    #[default]
    Idle,
    /// `AUTHENTICATE PLAIN` was answered with `+`: collecting base64 chunks.
    Collecting(String),
}

/// Most base64 bytes one SASL exchange may send (a PLAIN message of a
/// 32-byte name and a 128-byte password fits many times over).
const MAX_SASL: usize = 2048;

/// What the keepalive check asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// Nothing.
    Quiet,
    /// Send these bytes (a `PING`).
    Ping(&'static [u8]),
    /// Send these bytes (an `ERROR`), then close.
    Drop(&'static [u8]),
}

/// One IRC connection's state.
#[derive(Debug)]
pub struct Irc {
    /// The nick: what `NICK` said, the account name once logged in.
    nick: Option<String>,
    /// `USER` was received.
    user_seen: bool,
    /// The welcome (001-005, 422) was sent.
    registered: bool,
    /// `CAP LS`/`REQ` began a negotiation that `CAP END` has not ended:
    /// registration waits for it.
    negotiating: bool,
    /// The client asked for `sasl` and got it.
    sasl_acked: bool,
    /// The client asked for IRCv3 `server-time`: kept and replayed lines
    /// carry their time as a `@time=` tag.
    server_time: bool,
    sasl: Sasl,
    /// `PASS` as given, split into account and password; cleared once used.
    pass: Option<(Option<String>, String)>,
    pending: Option<Pending>,
    /// The account this connection is logged in as (told by the core).
    account: Option<String>,
    /// Last time a line came in, and when a `PING` went out unanswered.
    last_heard: Instant,
    ping_sent: Option<Instant>,
    /// What was said to this connection during its own call into the core;
    /// the loop queues it right after.
    output: Vec<u8>,
}

impl Irc {
    /// A new connection, accepted at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            nick: None,
            user_seen: false,
            registered: false,
            negotiating: false,
            sasl_acked: false,
            server_time: false,
            sasl: Sasl::Idle,
            pass: None,
            pending: None,
            account: None,
            last_heard: now,
            ping_sent: None,
            output: Vec::new(),
        }
    }

    /// The nick to address this connection by (`*` before it has one).
    fn me(&self) -> &str {
        self.nick.as_deref().unwrap_or("*")
    }

    /// What was rendered during the last feed, for the loop to queue.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// The keepalive check, called every few seconds (see the module doc).
    pub fn keepalive(&mut self, now: Instant, every: Duration) -> Keepalive {
        match self.ping_sent {
            None if now.saturating_duration_since(self.last_heard) >= every => {
                self.ping_sent = Some(now);
                Keepalive::Ping(b"PING :chat\r\n")
            }
            Some(at) if now.saturating_duration_since(at) >= every => {
                Keepalive::Drop(b"ERROR :Ping timeout\r\n")
            }
            _ => Keepalive::Quiet,
        }
    }

    /// A line over the line buffer's limit.
    pub fn too_long(
        &mut self,
        id: ConnId,
        chat: &Chat,
        now: Instant,
        out: &mut impl Outbox,
    ) -> Flow {
        self.heard(now);
        let me = self.me().to_owned();
        render::numeric(&mut self.output, "417", &me, &[], "Input line was too long");
        out.deliver_gathered();
        chat.flow(id)
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_sent = None;
    }

    /// Handles one line from the client.
    pub fn line(
        &mut self,
        id: ConnId,
        raw: &[u8],
        chat: &mut Chat,
        now: Instant,
        lang: Lang,
        out: &mut impl Outbox,
    ) -> Flow {
        self.heard(now);
        let text = String::from_utf8_lossy(raw);
        // Control characters go before anything is parsed or echoed (SPEC
        // section 1), except CTCP's \x01, which `ctcp` reads and
        // `clean_line` then removes from what is relayed.
        let text = if text
            .chars()
            .any(|c| c != '\u{1}' && is_forbidden_control(c))
        {
            Cow::Owned(
                text.chars()
                    .filter(|&c| c == '\u{1}' || !is_forbidden_control(c))
                    .collect(),
            )
        } else {
            text
        };
        let msg = match parse::parse(&text) {
            Ok(msg) => msg,
            Err(ParseError::Empty | ParseError::NoCommand) => return chat.flow(id),
            Err(ParseError::TooLong) => {
                let me = self.me().to_owned();
                render::numeric(&mut self.output, "417", &me, &[], "Input line was too long");
                return chat.flow(id);
            }
        };
        let mut cx = Cx {
            id,
            chat,
            now,
            lang,
            out,
        };
        self.message(&msg, &mut cx);
        if !self.output.is_empty() {
            // What others broadcast earlier goes out before what this line
            // made the server say to this connection (queued after the
            // feed).
            cx.out.deliver_gathered();
        }
        cx.chat.flow(id)
    }

    fn message<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let me = self.me().to_owned();
        let cmd = msg.command.to_ascii_uppercase();
        match cmd.as_str() {
            "CAP" => self.cap(msg, cx),
            "PASS" => {
                if self.registered || self.pending.is_some() {
                    self.num("462", &[], "You may not reregister");
                } else if let Some(pass) = msg.param(0).filter(|p| !p.is_empty()) {
                    self.pass = Some(match pass.split_once(':') {
                        Some((user, pass)) => (Some(user.to_owned()), pass.to_owned()),
                        None => (None, pass.to_owned()),
                    });
                } else {
                    self.num("461", &["PASS"], "Not enough parameters");
                }
            }
            "NICK" => self.nick(msg, cx),
            "USER" => {
                if self.registered {
                    self.num("462", &[], "You may not reregister");
                } else if msg.params().is_empty() {
                    self.num("461", &["USER"], "Not enough parameters");
                } else {
                    self.user_seen = true;
                    self.try_register(cx);
                }
            }
            "AUTHENTICATE" => self.authenticate(msg, cx),
            "PING" => match msg.param(0) {
                Some(token) => {
                    let token = render::clip(token, 400);
                    let _ = write!(self.output, ":{SERVER} PONG {SERVER} :{token}\r\n");
                }
                None => self.num("409", &[], "No origin specified"),
            },
            "PONG" => {}
            "QUIT" => self.run(Command::Quit, cx),
            _ if !self.registered => self.num("451", &[], "You have not registered"),
            "PRIVMSG" => self.privmsg(msg, cx),
            // Never answered, as RFC 2812 says of NOTICE; the core has no
            // kind of message for it.
            "NOTICE" => {}
            "NICKSERV" | "NS" => {
                let text = msg.params().join(" ");
                self.nickserv(&text, cx);
            }
            "JOIN" => {
                for channel in msg.param(0).unwrap_or("").split(',') {
                    if channel.eq_ignore_ascii_case(CHANNEL) {
                        if self.account.is_none() {
                            self.notice(Reply::LoginFirst.text(cx.lang));
                        }
                    } else if channel != "0" && !channel.is_empty() {
                        self.num("403", &[channel], "No such channel");
                    }
                }
            }
            "PART" => self.notice(match cx.lang {
                Lang::Id => "#chat adalah satu-satunya channel; /quit untuk keluar",
                Lang::En => "#chat is the only channel; /quit to leave",
            }),
            "NAMES" => {
                if msg.param(0).is_none_or(|c| c.eq_ignore_ascii_case(CHANNEL)) {
                    self.run(Command::ListUser(true), cx);
                } else {
                    let channel = msg.param(0).unwrap_or(CHANNEL);
                    self.num("366", &[channel], "End of /NAMES list.");
                }
            }
            "MODE" => self.mode(msg, &me),
            "WHO" => self.who(msg, cx),
            "WHOIS" => self.whois(msg, cx),
            "ISON" => {
                let users = cx.chat.users();
                let on: Vec<&str> = msg
                    .params()
                    .iter()
                    .flat_map(|p| p.split(' '))
                    .filter(|n| self.account.is_some() && users.contains(n))
                    .collect();
                let on = on.join(" ");
                self.num("303", &[], &on);
            }
            "TOPIC" => match msg.param(0) {
                Some(c) if c.eq_ignore_ascii_case(CHANNEL) => {
                    self.num("331", &[CHANNEL], "No topic is set")
                }
                Some(c) => {
                    let c = c.to_owned();
                    self.num("403", &[&c], "No such channel")
                }
                None => self.num("461", &["TOPIC"], "Not enough parameters"),
            },
            "LIST" => {
                self.num("321", &["Channel"], "Users Name");
                if self.account.is_some() {
                    let count = cx.chat.users().len().to_string();
                    self.num("322", &[CHANNEL, &count], "Everyone who is logged in");
                }
                self.num("323", &[], "End of /LIST");
            }
            "AWAY" | "USERHOST" => {
                self.num("421", &[msg.command], "Unknown command");
            }
            _ => {
                let command = msg.command.to_owned();
                self.num("421", &[&command], "Unknown command");
            }
        }
    }

    /// Runs `command` in the core; what the core says to this connection
    /// meanwhile is rendered into [`Self::output`].
    /// The flow is read from the core after the whole message (a message
    /// may run several commands, one per target).
    fn run<O: Outbox>(&mut self, command: Command<'_>, cx: &mut Cx<'_, O>) {
        let mut tap = Tap {
            inner: &mut *cx.out,
            me: cx.id,
            irc: self,
            lang: cx.lang,
        };
        let _ = cx.chat.run(cx.id, command, cx.now, &mut tap);
    }

    fn num(&mut self, code: &str, params: &[&str], text: &str) {
        let me = self.me().to_owned();
        render::numeric(&mut self.output, code, &me, params, text);
    }

    fn notice(&mut self, text: &str) {
        let me = self.me().to_owned();
        render::server_notice(&mut self.output, &me, text);
    }

    fn cap<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let me = self.me().to_owned();
        let sub = msg.param(0).unwrap_or("").to_ascii_uppercase();
        match sub.as_str() {
            "LS" => {
                if !self.registered {
                    self.negotiating = true;
                }
                let caps = if msg
                    .param(1)
                    .is_some_and(|v| v.parse::<u32>().unwrap_or(0) >= 302)
                {
                    "sasl=PLAIN server-time"
                } else {
                    "sasl server-time"
                };
                let _ = write!(self.output, ":{SERVER} CAP {me} LS :{caps}\r\n");
            }
            "LIST" => {
                let caps = match (self.sasl_acked, self.server_time) {
                    (true, true) => "sasl server-time",
                    (true, false) => "sasl",
                    (false, true) => "server-time",
                    (false, false) => "",
                };
                let _ = write!(self.output, ":{SERVER} CAP {me} LIST :{caps}\r\n");
            }
            "REQ" => {
                if !self.registered {
                    self.negotiating = true;
                }
                let asked = render::clip(msg.param(1).unwrap_or(""), 400);
                let known = asked.split(' ').filter(|c| !c.is_empty()).all(|c| {
                    let c = c.strip_prefix('-').unwrap_or(c);
                    c.eq_ignore_ascii_case("sasl") || c.eq_ignore_ascii_case("server-time")
                });
                let verdict = if known && !asked.trim().is_empty() {
                    for c in asked.split(' ') {
                        let (on, name) = match c.strip_prefix('-') {
                            Some(name) => (false, name),
                            None => (true, c),
                        };
                        if name.eq_ignore_ascii_case("sasl") {
                            self.sasl_acked = on;
                        } else if name.eq_ignore_ascii_case("server-time") {
                            self.server_time = on;
                        }
                    }
                    "ACK"
                } else {
                    "NAK"
                };
                let _ = write!(self.output, ":{SERVER} CAP {me} {verdict} :{asked}\r\n");
            }
            "END" => {
                self.negotiating = false;
                self.try_register(cx);
            }
            _ => {
                let sub = msg.param(0).unwrap_or("").to_owned();
                self.num("410", &[&sub], "Invalid CAP command");
            }
        }
    }

    fn nick<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let Some(new) = msg.param(0).filter(|n| !n.is_empty()) else {
            self.num("431", &[], "No nickname given");
            return;
        };
        if !valid_username(new) || new.eq_ignore_ascii_case("NickServ") {
            let new = new.to_owned();
            self.num("432", &[&new], "Erroneous nickname");
            return;
        }
        if self.account.is_some() {
            if self.nick.as_deref() != Some(new) {
                let new = new.to_owned();
                self.num(
                    "447",
                    &[&new],
                    "Your nick is your account name: it cannot change while logged in",
                );
            }
            return;
        }
        if self.registered {
            let old = self.me().to_owned();
            render::nick_change(&mut self.output, &old, new);
        }
        self.nick = Some(new.to_owned());
        self.try_register(cx);
    }

    /// Completes registration once NICK, USER and any CAP negotiation are
    /// in: logs in with `PASS` if one was given (the welcome then waits
    /// for the result), else welcomes the client, logged in through SASL
    /// or not at all.
    fn try_register<O: Outbox>(&mut self, cx: &mut Cx<'_, O>) {
        if self.registered || self.negotiating || !self.user_seen || self.pending.is_some() {
            return;
        }
        let Some(nick) = self.nick.clone() else {
            return;
        };
        if let Some(account) = cx.chat.user_of(cx.id).map(str::to_owned) {
            // Logged in through SASL during the negotiation.
            self.nick = Some(account.clone());
            self.registered = true;
            welcome(&mut self.output, &account);
            self.account = Some(account.clone());
            let users = cx.chat.users();
            render::join(&mut self.output, &account);
            render::names(&mut self.output, &account, users.names());
            return;
        }
        if let Some((account, password)) = self.pass.take() {
            let account = account.unwrap_or(nick);
            self.pending = Some(Pending::Pass);
            self.run(Command::Login(Credentials::Given(&account, &password)), cx);
            return;
        }
        self.registered = true;
        welcome(&mut self.output, &nick);
        hint(&mut self.output, &nick, cx.lang);
    }

    fn authenticate<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let data = msg.param(0).unwrap_or("");
        if self.account.is_some() || cx.chat.user_of(cx.id).is_some() {
            self.num("907", &[], "You have already authenticated using SASL");
            return;
        }
        if data == "*" {
            self.sasl = Sasl::Idle;
            self.num("906", &[], "SASL authentication aborted");
            return;
        }
        match &mut self.sasl {
            Sasl::Idle => {
                if data.eq_ignore_ascii_case("PLAIN") {
                    self.sasl = Sasl::Collecting(String::new());
                    self.output.extend_from_slice(b"AUTHENTICATE +\r\n");
                } else {
                    self.num("908", &["PLAIN"], "are available SASL mechanisms");
                    self.num("904", &[], "SASL authentication failed");
                }
            }
            Sasl::Collecting(collected) => {
                if data != "+" {
                    collected.push_str(data);
                }
                if collected.len() > MAX_SASL {
                    self.sasl = Sasl::Idle;
                    self.num("905", &[], "SASL message too long");
                    return;
                }
                // A chunk of exactly 400 bytes means more follow.
                if data.len() == 400 {
                    return;
                }
                let Sasl::Collecting(collected) = std::mem::take(&mut self.sasl) else {
                    return;
                };
                let Some((account, password)) = sasl_plain(&collected) else {
                    self.num("904", &[], "SASL authentication failed");
                    return;
                };
                self.pending = Some(Pending::Sasl);
                self.run(Command::Login(Credentials::Given(&account, &password)), cx);
            }
        }
    }

    fn privmsg<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let (Some(targets), Some(text)) = (msg.param(0), msg.param(1)) else {
            if msg.param(0).is_none() {
                self.num("411", &[], "No recipient given (PRIVMSG)");
            } else {
                self.num("412", &[], "No text to send");
            }
            return;
        };
        let Some(text) = ctcp(text) else {
            return;
        };
        let cleaned = clean_line(text.as_bytes());
        let text = cleaned.trim();
        if text.is_empty() {
            self.num("412", &[], "No text to send");
            return;
        }
        for target in targets.split(',').filter(|t| !t.is_empty()).take(4) {
            if cx.chat.flow(cx.id) != Flow::Ready {
                return;
            }
            if target.eq_ignore_ascii_case(CHANNEL) {
                self.run(Command::Message(text), cx);
            } else if target.starts_with('#') || target.starts_with('&') {
                self.num("403", &[target], "No such channel");
            } else if target.eq_ignore_ascii_case("NickServ")
                || target.to_ascii_lowercase().starts_with("nickserv@")
            {
                self.nickserv(text, cx);
            } else if let Some(name) = cx.chat.online_name_ignoring_case(target) {
                // `PRIVMSG Alice` reaches alice, as CASEMAPPING=ascii says.
                let name = name.to_owned();
                self.run(Command::SendTo(Some((&name, text))), cx);
            } else {
                self.run(Command::SendTo(Some((target, text))), cx);
            }
        }
    }

    /// `REGISTER password`, `IDENTIFY [account] password`, `LOGOUT`, `HELP`.
    fn nickserv<O: Outbox>(&mut self, text: &str, cx: &mut Cx<'_, O>) {
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let me = self.me().to_owned();
        match (verb.as_str(), args.as_slice()) {
            // An e-mail after the password (Atheme's form) is ignored.
            ("REGISTER", [password] | [password, _]) => {
                self.pending = Some(Pending::NickServ);
                self.run(Command::Regist(Credentials::Given(&me, password)), cx);
            }
            ("IDENTIFY", [password]) => {
                self.pending = Some(Pending::NickServ);
                self.run(Command::Login(Credentials::Given(&me, password)), cx);
            }
            ("IDENTIFY", [account, password]) => {
                self.pending = Some(Pending::NickServ);
                self.run(Command::Login(Credentials::Given(account, password)), cx);
            }
            ("LOGOUT", []) => {
                self.pending = Some(Pending::NickServ);
                self.run(Command::Logout, cx);
            }
            _ => {
                for line in [
                    "REGISTER <password>: create an account for your nick",
                    "IDENTIFY <password>: log in as your nick",
                    "IDENTIFY <account> <password>: log in as another account",
                    "LOGOUT: log out",
                ] {
                    render::nickserv_notice(&mut self.output, &me, line);
                }
            }
        }
        // A command the core answered at once, or not at all, waits for
        // nothing more.
        if cx.chat.flow(cx.id) == Flow::Ready {
            self.pending = None;
        }
    }

    fn mode(&mut self, msg: &Message<'_>, me: &str) {
        match msg.param(0) {
            None => self.num("461", &["MODE"], "Not enough parameters"),
            Some(c) if c.eq_ignore_ascii_case(CHANNEL) => match msg.param(1) {
                None => {
                    let _ = write!(self.output, ":{SERVER} 324 {me} {CHANNEL} +nt\r\n");
                }
                Some(m) if m.trim_start_matches('+').starts_with('b') => {
                    self.num("368", &[CHANNEL], "End of channel ban list")
                }
                Some(_) => self.num("482", &[CHANNEL], "Channel modes cannot be changed"),
            },
            Some(c) if c.starts_with('#') || c.starts_with('&') => {
                let c = c.to_owned();
                self.num("403", &[&c], "No such channel");
            }
            Some(_) => {
                let _ = write!(self.output, ":{SERVER} 221 {me} +\r\n");
            }
        }
    }

    fn who<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let mask = msg.param(0).unwrap_or("*").to_owned();
        let me = self.me().to_owned();
        if self.account.is_some() {
            let users = cx.chat.users();
            let all = mask.eq_ignore_ascii_case(CHANNEL) || mask == "*";
            for name in users.names().filter(|n| all || *n == mask) {
                let _ = write!(
                    self.output,
                    ":{SERVER} 352 {me} {CHANNEL} {name} {host} {SERVER} {name} H :0 {name}\r\n",
                    host = render::USER_HOST
                );
            }
        }
        self.num("315", &[&mask], "End of /WHO list.");
    }

    fn whois<O: Outbox>(&mut self, msg: &Message<'_>, cx: &mut Cx<'_, O>) {
        let Some(target) = msg.params().last().map(|t| (*t).to_owned()) else {
            self.num("431", &[], "No nickname given");
            return;
        };
        if self.account.is_some() && cx.chat.users().contains(&target) {
            let host = render::USER_HOST;
            self.num("311", &[&target, &target, host, "*"], &target);
            self.num("312", &[&target, SERVER], "chat-server");
            self.num("319", &[&target], CHANNEL);
        } else {
            self.num("401", &[&target], "No such nick/channel");
        }
        self.num("318", &[&target], "End of /WHOIS list.");
    }

    /// Renders an event the core says to this connection.
    pub fn render(&mut self, lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
        let me = self.me().to_owned();
        match *event {
            Event::LoggedIn { user, users } => {
                let pending = self.pending.take();
                self.account = Some(user.to_owned());
                match pending {
                    Some(Pending::Sasl) => {
                        self.nick = Some(user.to_owned());
                        let mask = format!("{user}!{user}@{}", render::USER_HOST);
                        render::numeric(
                            out,
                            "900",
                            user,
                            &[&mask, user],
                            &format!("You are now logged in as {user}"),
                        );
                        render::numeric(out, "903", user, &[], "SASL authentication successful");
                        // The JOIN comes with the welcome, at CAP END.
                        if !self.registered {
                            return;
                        }
                    }
                    Some(Pending::Pass) => {
                        self.nick = Some(user.to_owned());
                        self.registered = true;
                        welcome(out, user);
                    }
                    _ => {
                        if me != user {
                            render::nick_change(out, &me, user);
                            self.nick = Some(user.to_owned());
                        }
                        render::nickserv_notice(out, user, Reply::LoginOk.text(lang));
                    }
                }
                render::join(out, user);
                render::names(out, user, users.names());
            }
            Event::Reply(reply) => self.render_reply(lang, reply, out),
            Event::Users(users) => render::names(out, &me, users.names()),
            Event::NotOnline(user) => {
                render::numeric(out, "401", &me, &[user], "No such nick/channel")
            }
            Event::Private { from, text } => render::privmsg(out, from, &me, text),
            Event::Chat { .. } | Event::Offline(_) | Event::Online(_) => {
                render_broadcast(lang, event, out)
            }
            // A message from before this login (SPEC 9): from its sender,
            // to the channel or to this nick, its time in front.
            Event::Replayed(r) => {
                let zone = when::local_zone();
                let text = format!("{} {}", when::marker(r.at, r.now, &zone), r.text);
                let target = if r.private { me.as_str() } else { CHANNEL };
                if self.server_time {
                    // IRCv3 server-time: the client shows the message at
                    // the time it was sent. A split message repeats it.
                    let mut line = Vec::new();
                    render::privmsg(&mut line, r.from, target, &text);
                    let tag = server_time_tag(r.at);
                    for piece in line.split_inclusive(|&b| b == b'\n') {
                        out.extend_from_slice(tag.as_bytes());
                        out.extend_from_slice(piece);
                    }
                } else {
                    render::privmsg(out, r.from, target, &text);
                }
            }
            // No IRC form: the line protocol's words, as notices.
            Event::Help | Event::Prompt(_) | Event::Stored(_) | Event::InboxFull(_) => {
                notice_lines(lang, event, &me, out)
            }
        }
    }

    fn render_reply(&mut self, lang: Lang, reply: Reply, out: &mut Vec<u8>) {
        let me = self.me().to_owned();
        let text = reply.text(lang);
        let pending = self.pending;
        // Replies that end the connection.
        if matches!(
            reply,
            Reply::Bye
                | Reply::TooManyFails
                | Reply::LoginTimeout
                | Reply::TooManyConns
                | Reply::ServerFull
        ) {
            if reply == Reply::TooManyFails {
                match pending {
                    Some(Pending::Sasl) => {
                        render::numeric(out, "904", &me, &[], "SASL authentication failed")
                    }
                    Some(Pending::Pass) => {
                        render::numeric(out, "464", &me, &[], "Password incorrect")
                    }
                    _ => {}
                }
            }
            self.pending = None;
            render::error(out, text);
            return;
        }
        match (pending, reply) {
            (Some(Pending::Pass), _) => {
                self.pending = None;
                match reply {
                    Reply::LoginFail => render::numeric(out, "464", &me, &[], "Password incorrect"),
                    Reply::AlreadyOther => {
                        // Registration waits for another NICK.
                        render::numeric(out, "433", "*", &[&me], "Nickname is already in use");
                        self.nick = None;
                        return;
                    }
                    _ => render::server_notice(out, &me, text),
                }
                self.registered = true;
                welcome(out, &me);
                hint(out, &me, lang);
            }
            (Some(Pending::Sasl), _) => {
                self.pending = None;
                match reply {
                    Reply::AlreadyOther => {
                        render::numeric(out, "433", &me, &[&me], "Nickname is already in use")
                    }
                    Reply::AlreadySelf => render::numeric(
                        out,
                        "907",
                        &me,
                        &[],
                        "You have already authenticated using SASL",
                    ),
                    Reply::LoginFail => {}
                    _ => render::server_notice(out, &me, text),
                }
                if reply != Reply::AlreadySelf {
                    render::numeric(out, "904", &me, &[], "SASL authentication failed");
                }
            }
            (Some(Pending::NickServ), _) => {
                self.pending = None;
                if reply == Reply::LogoutOk {
                    self.account = None;
                    render::part(out, &me);
                }
                render::nickserv_notice(out, &me, text);
            }
            (None, Reply::TooLong) => {
                render::numeric(out, "417", &me, &[], "Input line was too long")
            }
            (None, Reply::LogoutOk) => {
                self.account = None;
                render::part(out, &me);
                render::server_notice(out, &me, text);
            }
            (None, _) => render::server_notice(out, &me, text),
        }
    }
}

/// 001-005 and 422: the welcome that ends registration.
fn welcome(out: &mut Vec<u8>, me: &str) {
    render::numeric(out, "001", me, &[], &format!("Welcome to the chat, {me}"));
    render::numeric(
        out,
        "002",
        me,
        &[],
        &format!(
            "Your host is {SERVER}, running chat-server {}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    render::numeric(
        out,
        "003",
        me,
        &[],
        "This server was created when it started",
    );
    let version = concat!("chat-server-", env!("CARGO_PKG_VERSION"));
    let _ = write!(out, ":{SERVER} 004 {me} {SERVER} {version} i nt\r\n");
    // Truthful: one channel, `#chat`; no channel or member modes to speak
    // of; nicks are account names (at most 32 bytes, and two names that
    // differ only in letter case cannot both exist).
    render::numeric(
        out,
        "005",
        me,
        &[
            "NETWORK=chat",
            "CHANTYPES=#",
            "CHANLIMIT=#:1",
            "CHANNELLEN=5",
            "NICKLEN=32",
            "PREFIX=",
            "CHANMODES=,,,nt",
            "CASEMAPPING=ascii",
            "TARGMAX=PRIVMSG:4,JOIN:4",
        ],
        "are supported by this server",
    );
    render::numeric(out, "422", me, &[], "MOTD File is missing");
}

/// How to get an account, for a client that arrived without one.
fn hint(out: &mut Vec<u8>, me: &str, lang: Lang) {
    let text = match lang {
        Lang::Id => {
            "Chat ini perlu akun. Buat akun untuk nick anda: /msg NickServ REGISTER password, lalu login: /msg NickServ IDENTIFY password"
        }
        Lang::En => {
            "This chat needs an account. Create one for your nick: /msg NickServ REGISTER password, then log in: /msg NickServ IDENTIFY password"
        }
    };
    render::nickserv_notice(out, me, text);
}

/// Renders an event that reads the same for every IRC reader (SPEC 8.3:
/// broadcasts are rendered once per dialect, not per reader).
pub fn render_broadcast(lang: Lang, event: &Event<'_>, out: &mut Vec<u8>) {
    match *event {
        Event::Chat { from, text } => render::privmsg(out, from, CHANNEL, text),
        Event::Offline(user) => render::quit(out, user, "offline"),
        Event::Online(user) => render::join(out, user),
        // Said before a connection is even taken in (`SERVER_FULL`): the
        // connection closes after it.
        Event::Reply(reply) => render::error(out, reply.text(lang)),
        _ => notice_lines(lang, event, "*", out),
    }
}

/// An event with no IRC form, as the line protocol says it, one notice per
/// line.
fn notice_lines(lang: Lang, event: &Event<'_>, me: &str, out: &mut Vec<u8>) {
    let text = line::to_string(lang, event);
    for l in text.lines() {
        let l = l.trim_end();
        if !l.is_empty() {
            render::server_notice(out, me, l);
        }
    }
}

/// The text of a `PRIVMSG`, with CTCP handled: `ACTION` (`/me`) becomes
/// `* text`; any other CTCP request (VERSION, PING, ...) is dropped, since
/// the core has no kind of message for it.
fn ctcp(text: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = text.strip_prefix('\u{1}') else {
        return Some(Cow::Borrowed(text));
    };
    let inner = inner.strip_suffix('\u{1}').unwrap_or(inner);
    let (verb, rest) = inner.split_once(' ').unwrap_or((inner, ""));
    verb.eq_ignore_ascii_case("ACTION")
        .then(|| Cow::Owned(format!("* {rest}")))
}

/// Decodes a SASL PLAIN message: base64 of `authzid \0 authcid \0 password`.
/// An authorization identity other than the authentication one is refused.
fn sasl_plain(b64: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()?;
    let mut parts = bytes.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || authcid.is_empty() || password.is_empty() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid.as_bytes() {
        return None;
    }
    Some((authcid.to_owned(), password.to_owned()))
}

/// What a handler needs besides the connection's own state.
struct Cx<'a, O: Outbox> {
    id: ConnId,
    chat: &'a mut Chat,
    now: Instant,
    lang: Lang,
    out: &'a mut O,
}

/// The outbox seen by the core while it handles one of this connection's
/// lines: what it says to this connection is rendered here, into
/// [`Irc::output`]; everything else passes on to the loop's outbox.
///
/// Every method but `send` must pass on: a provided method left out would
/// run its default instead of the loop's. A broadcast passes on as it is;
/// the loop delivers it to this connection
/// through the stand-in it leaves in the connection meanwhile (see
/// [`crate::wire::dialect::Dialect::stand_in`]).
struct Tap<'a, O: Outbox> {
    inner: &'a mut O,
    me: ConnId,
    irc: &'a mut Irc,
    lang: Lang,
}

impl<O: Outbox> Outbox for Tap<'_, O> {
    fn send(&mut self, to: ConnId, event: Event<'_>) {
        if to == self.me {
            let mut output = std::mem::take(&mut self.irc.output);
            self.irc.render(self.lang, &event, &mut output);
            self.irc.output = output;
        } else {
            self.inner.send(to, event);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.inner.close(conn);
    }

    fn submit(&mut self, job: AuthJob) {
        self.inner.submit(job);
    }

    fn store(&mut self, job: HistoryJob) {
        self.inner.store(job);
    }

    fn broadcast(&mut self, to: Audience<'_>, except: ConnId, event: Event<'_>) {
        self.inner.broadcast(to, except, event);
    }

    fn deliver_gathered(&mut self) {
        self.inner.deliver_gathered();
    }
}

/// The IRCv3 `server-time` tag for `at` (seconds since the Unix epoch), as
/// `@time=YYYY-MM-DDThh:mm:ss.sssZ ` in UTC.
fn server_time_tag(at: i64) -> String {
    match jiff::Timestamp::from_second(at) {
        Ok(ts) => format!("@time={} ", ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_plain_decodes_and_refuses_the_malformed() {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            sasl_plain(&b64(b"\0alice\0pw")),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(
            sasl_plain(&b64(b"alice\0alice\0pw")),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(sasl_plain(&b64(b"bob\0alice\0pw")), None);
        assert_eq!(sasl_plain(&b64(b"\0alice")), None);
        assert_eq!(sasl_plain(&b64(b"\0\0pw")), None);
        assert_eq!(sasl_plain(&b64(b"\0a\0p\0x")), None);
        assert_eq!(sasl_plain("not base64!"), None);
    }

    #[test]
    fn ctcp_action_becomes_text_and_others_vanish() {
        assert_eq!(ctcp("hi").as_deref(), Some("hi"));
        assert_eq!(ctcp("\u{1}ACTION waves\u{1}").as_deref(), Some("* waves"));
        assert_eq!(ctcp("\u{1}VERSION\u{1}"), None);
    }

    #[test]
    fn keepalive_pings_then_drops() {
        let start = Instant::now();
        let every = Duration::from_secs(10);
        let mut irc = Irc::new(start);
        assert_eq!(irc.keepalive(start + every / 2, every), Keepalive::Quiet);
        assert!(matches!(
            irc.keepalive(start + every, every),
            Keepalive::Ping(_)
        ));
        assert_eq!(
            irc.keepalive(start + every + every / 2, every),
            Keepalive::Quiet
        );
        assert!(matches!(
            irc.keepalive(start + every * 2, every),
            Keepalive::Drop(_)
        ));
        // Any line answers.
        irc.heard(start + every * 2);
        assert_eq!(irc.keepalive(start + every * 2, every), Keepalive::Quiet);
    }
}
