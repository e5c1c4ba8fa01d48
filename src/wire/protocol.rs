//! The wire language: a cleaned line to a [`Command`], and the reply catalogue
//! of SPEC section 3 in both languages.
//!
//! Everything here is pure: no state, no I/O. The seed splits a line on
//! whitespace and looks at word 0; so does [`Command::parse`], but it also keeps
//! byte offsets so a message keeps its inner spacing.

use std::fmt::Write as _;

/// The language of the server's replies; `id` is the seed's own wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Bahasa Indonesia, the seed's replies word for word.
    #[default]
    Id,
    /// English.
    En,
}

/// A fixed reply of the catalogue (SPEC section 3). Replies that carry a name
/// ([`not_online`], [`offline`]) are built by functions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    LoginFirst,
    LoginFail,
    RegistOk,
    LoginOk,
    AlreadySelf,
    NameTaken,
    AlreadyOther,
    BadCommand,
    BadListCommand,
    BadUsername,
    BadPassword,
    TooLong,
    LogoutOk,
    Bye,
    ServerFull,
    Busy,
    StorageError,
    TooManyFails,
    LoginTimeout,
    TooManyConns,
    Throttled,
    /// A message for a user who is not online could not be written
    /// (SPEC section 9).
    StoreFailed,
}

impl Reply {
    /// The reply's text without its line terminator.
    pub fn text(self, lang: Lang) -> &'static str {
        use Reply::*;
        match (self, lang) {
            (LoginFirst, Lang::Id) => "Anda harus login terlebih dahulu",
            (LoginFirst, Lang::En) => "You must log in first",
            (LoginFail, Lang::Id) => "Username atau Password anda Salah",
            (LoginFail, Lang::En) => "Wrong username or password",
            (RegistOk, Lang::Id) => "Anda berhasil terdaftar",
            (RegistOk, Lang::En) => "Registration successful",
            (LoginOk, Lang::Id) => "Login sukses",
            (LoginOk, Lang::En) => "Login successful",
            (AlreadySelf, Lang::Id) => "Anda telah melakukan login sebelumnya.",
            (AlreadySelf, Lang::En) => "You are already logged in.",
            (NameTaken, Lang::Id) => "Username telah dipakai",
            (NameTaken, Lang::En) => "Username is already taken",
            (AlreadyOther, Lang::Id) => "Username tersebut telah melakukan login sebelumnya.",
            (AlreadyOther, Lang::En) => "That username is already logged in.",
            (BadCommand, Lang::Id) => "Perintah yang anda ketikkan salah",
            (BadCommand, Lang::En) => "Invalid command",
            (BadListCommand, Lang::Id) => "Perintah yang anda masukkan salah",
            (BadListCommand, Lang::En) => "Invalid command",
            (BadUsername, Lang::Id) => "Username tidak valid: gunakan 1-32 huruf, angka, _ atau -",
            (BadUsername, Lang::En) => "Invalid username: use 1-32 letters, digits, _ or -",
            (BadPassword, Lang::Id) => "Password tidak valid: gunakan 1-128 karakter tanpa spasi",
            (BadPassword, Lang::En) => "Invalid password: use 1-128 characters without spaces",
            (TooLong, Lang::Id) => "Pesan terlalu panjang (maksimal 4096 byte)",
            (TooLong, Lang::En) => "Message too long (at most 4096 bytes)",
            (LogoutOk, Lang::Id) => "Logout sukses",
            (LogoutOk, Lang::En) => "Logged out",
            (Bye, Lang::Id) => "Sampai jumpa",
            (Bye, Lang::En) => "Goodbye",
            (ServerFull, Lang::Id) => "Server penuh, coba lagi nanti",
            (ServerFull, Lang::En) => "Server full, try again later",
            (Busy, Lang::Id) => "Server sibuk, coba lagi nanti",
            (Busy, Lang::En) => "Server busy, try again later",
            (StorageError, Lang::Id) => "Gagal menyimpan akun, coba lagi nanti",
            (StorageError, Lang::En) => "Could not save the account, try again later",
            (TooManyFails, Lang::Id) => "Terlalu banyak percobaan login yang gagal",
            (TooManyFails, Lang::En) => "Too many failed login attempts",
            (LoginTimeout, Lang::Id) => "Waktu login habis",
            (LoginTimeout, Lang::En) => "Login timed out",
            (TooManyConns, Lang::Id) => "Terlalu banyak koneksi dari alamat anda",
            (TooManyConns, Lang::En) => "Too many connections from your address",
            (Throttled, Lang::Id) => "Terlalu banyak percobaan, coba lagi nanti",
            (Throttled, Lang::En) => "Too many attempts, try again later",
            (StoreFailed, Lang::Id) => "Gagal menyimpan pesan, coba lagi nanti",
            (StoreFailed, Lang::En) => "Could not save the message, try again later",
        }
    }

    /// The reply as a wire line, `\n` included.
    pub fn line(self, lang: Lang) -> String {
        let mut line = String::with_capacity(64);
        line.push_str(self.text(lang));
        line.push('\n');
        line
    }
}

/// The prompts of the `login` / `regist` dialogue; no newline, as in the seed.
pub const PROMPT_USERNAME: &str = "Username : ";
/// See [`PROMPT_USERNAME`].
pub const PROMPT_PASSWORD: &str = "Password : ";

/// `NOT_ONLINE` for `user`, as a wire line.
pub fn not_online(lang: Lang, user: &str) -> String {
    match lang {
        Lang::Id => format!("User {user} tidak sedang online\n"),
        Lang::En => format!("User {user} is not online\n"),
    }
}

/// `OFFLINE`: sent to everyone else when `user` leaves.
pub fn offline(lang: Lang, user: &str) -> String {
    match lang {
        Lang::Id => format!("Teman anda [{user}] telah offline\n"),
        Lang::En => format!("Your friend [{user}] went offline\n"),
    }
}

/// A private message as the target receives it.
pub fn private_message(lang: Lang, sender: &str, text: &str) -> String {
    let head = match lang {
        Lang::Id => "Pesan pribadi dari [",
        Lang::En => "Private message from [",
    };
    let mut line = String::with_capacity(head.len() + sender.len() + text.len() + 3);
    line.push_str(head);
    line.push_str(sender);
    line.push_str("] ");
    line.push_str(text);
    line.push('\n');
    line
}

/// Writes a broadcast line, `[sender] text\n`, into `out`.
pub fn broadcast_into(out: &mut String, sender: &str, text: &str) {
    out.clear();
    out.reserve(sender.len() + text.len() + 4);
    out.push('[');
    out.push_str(sender);
    out.push_str("] ");
    out.push_str(text);
    out.push('\n');
}

/// The `list-user` reply: every name, already in byte order.
pub fn user_list<'a>(lang: Lang, names: impl Iterator<Item = &'a str>) -> String {
    let mut line = String::from(match lang {
        Lang::Id => "list user : ",
        Lang::En => "online users : ",
    });
    for (i, name) in names.enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        line.push_str(name);
    }
    line.push_str(".\n");
    line
}

/// The `help` reply: several lines.
pub fn help(lang: Lang) -> String {
    let rows: [(&str, &str, &str); 8] = [
        (
            "regist",
            "daftar akun baru (atau: regist USER PASS)",
            "register a new account (or: regist USER PASS)",
        ),
        (
            "login",
            "masuk (atau: login USER PASS)",
            "log in (or: login USER PASS)",
        ),
        (
            "<pesan>",
            "kirim ke semua yang online",
            "send to everyone online",
        ),
        ("send-to USER pesan", "pesan pribadi", "private message"),
        ("list-user", "daftar user yang online", "list who is online"),
        ("logout", "keluar dari akun", "log out"),
        ("help", "bantuan ini", "this help"),
        ("quit", "putuskan koneksi", "disconnect"),
    ];
    let mut out = String::from(match lang {
        Lang::Id => "Perintah:\n",
        Lang::En => "Commands:\n",
    });
    for (cmd, id, en) in rows {
        let what = if lang == Lang::Id { id } else { en };
        let _ = writeln!(out, "  {cmd:<20} {what}");
    }
    out
}

/// What a cleaned line asks for. Borrowed from the line; nothing is copied.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing but whitespace: ignored, no reply.
    Empty,
    /// `regist` or `login` with its words after the keyword.
    Regist(Credentials<'a>),
    Login(Credentials<'a>),
    Help,
    Quit,
    Logout,
    /// `send-to USER text`; `None` when it has fewer than 3 words.
    SendTo(Option<(&'a str, &'a str)>),
    /// `list-user`; `false` when more words follow.
    ListUser(bool),
    /// The first word is `login` or `regist` in another letter case (`Login`,
    /// `REGIST`): a mistyped command, most likely followed by a password, so it
    /// is never relayed as chat.
    MistypedKeyword,
    /// Any other line: its whole trimmed text is a broadcast.
    Message(&'a str),
}

/// The words after `login` / `regist`.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// The keyword alone: start the prompt dialogue.
    Ask,
    /// Exactly a username and a password.
    Given(&'a str, &'a str),
    /// One word, or three or more.
    Malformed,
}

/// The longest command word, `list-user`, in bytes.
const LONGEST_KEYWORD: usize = 9;

/// False when the first word is certainly longer than any command word, so a
/// chat line is known to be a message without walking its first word char by
/// char: its first `LONGEST_KEYWORD + 1` bytes hold no whitespace (a non-ASCII
/// byte might start Unicode whitespace, so it counts as "maybe").
fn may_start_with_keyword(line: &str) -> bool {
    let head = &line.as_bytes()[..line.len().min(LONGEST_KEYWORD + 1)];
    head.len() <= LONGEST_KEYWORD
        || head
            .iter()
            .any(|b| b.is_ascii_whitespace() || !b.is_ascii())
}

/// Splits off the first whitespace-separated word and returns it with the rest,
/// the rest with its leading whitespace removed.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], s[at..].trim_start()),
        None => (s, ""),
    }
}

/// `login` or `regist` in a letter case other than the real one. The length
/// test first keeps this off the path of ordinary chat words.
fn is_mistyped_keyword(word: &str) -> bool {
    match word.len() {
        5 => word.eq_ignore_ascii_case("login"),
        6 => word.eq_ignore_ascii_case("regist"),
        _ => false,
    }
}

impl<'a> Command<'a> {
    /// Parses a cleaned line. Words are case-sensitive, as in the seed, except
    /// that `login` / `regist` in another case is [`Command::MistypedKeyword`]
    /// (the exact spelling never reaches that arm).
    pub fn parse(line: &'a str) -> Self {
        let line = line.trim();
        if !may_start_with_keyword(line) {
            return if line.is_empty() {
                Command::Empty
            } else {
                Command::Message(line)
            };
        }
        let (word, rest) = first_word(line);
        match word {
            "" => Command::Empty,
            "regist" => Command::Regist(Self::credentials(rest)),
            "login" => Command::Login(Self::credentials(rest)),
            "help" => Command::Help,
            "quit" => Command::Quit,
            "logout" => Command::Logout,
            "list-user" => Command::ListUser(rest.is_empty()),
            "send-to" => {
                let (target, text) = first_word(rest);
                if target.is_empty() || text.is_empty() {
                    Command::SendTo(None)
                } else {
                    Command::SendTo(Some((target, text)))
                }
            }
            _ if is_mistyped_keyword(word) => Command::MistypedKeyword,
            _ => Command::Message(line),
        }
    }

    fn credentials(rest: &'a str) -> Credentials<'a> {
        let mut words = rest.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => Credentials::Ask,
            (Some(user), Some(pass), None) => Credentials::Given(user, pass),
            _ => Credentials::Malformed,
        }
    }
}

/// A username is 1 to 32 characters of `A-Z a-z 0-9 _ -`.
pub fn valid_username(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A password is 1 to 128 bytes with no whitespace.
pub fn valid_password(password: &str) -> bool {
    (1..=128).contains(&password.len()) && !password.chars().any(char::is_whitespace)
}

/// The look-alike form of a username: two names look alike exactly when their
/// skeletons are equal. ASCII letters are lowercased, then `i`, `l` and `1`
/// become one letter (`l`) and `o` and `0` another (`o`), so `Alice`, `ALICE`,
/// `aIice` and `a1ice` all share the skeleton `allce`. Names are still matched
/// exactly for login; the skeleton only stops a new name that a reader could
/// take for an existing one. Characters outside ASCII are kept as they are
/// (valid names have none).
pub fn name_skeleton(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' | '1' => 'l',
            'o' | '0' => 'o',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_form() {
        use Command::*;
        assert_eq!(Command::parse("   \t "), Empty);
        assert_eq!(Command::parse("regist"), Regist(Credentials::Ask));
        assert_eq!(
            Command::parse("regist a b"),
            Regist(Credentials::Given("a", "b"))
        );
        assert_eq!(Command::parse("regist a"), Regist(Credentials::Malformed));
        assert_eq!(
            Command::parse("regist a b c"),
            Regist(Credentials::Malformed)
        );
        assert_eq!(
            Command::parse(" login\tx  y "),
            Login(Credentials::Given("x", "y"))
        );
        assert_eq!(Command::parse("login"), Login(Credentials::Ask));
        assert_eq!(Command::parse("help"), Help);
        assert_eq!(Command::parse("quit"), Quit);
        assert_eq!(Command::parse("logout"), Logout);
        assert_eq!(Command::parse("list-user"), ListUser(true));
        assert_eq!(Command::parse("list-user hal"), ListUser(false));
        assert_eq!(Command::parse("send-to client_a"), SendTo(None));
        assert_eq!(Command::parse("send-to"), SendTo(None));
        assert_eq!(
            Command::parse("send-to client_a  apa   kabar juga "),
            SendTo(Some(("client_a", "apa   kabar juga")))
        );
        assert_eq!(
            Command::parse("  Aku  sayang kamu "),
            Message("Aku  sayang kamu")
        );
        // Case-sensitive, as in the seed; but login/regist in another case is
        // a mistyped command, never chat (it may carry a password).
        assert_eq!(Command::parse("LOGIN a b"), MistypedKeyword);
        assert_eq!(Command::parse("Login"), MistypedKeyword);
        assert_eq!(Command::parse("  reGist a b c"), MistypedKeyword);
        assert_eq!(Command::parse("REGIST\tx y"), MistypedKeyword);
        assert_eq!(Command::parse("Logins a b"), Message("Logins a b"));
        assert_eq!(Command::parse("HELP"), Message("HELP"));
        assert_eq!(Command::parse("Registered"), Message("Registered"));
        assert_eq!(Command::parse("LOGİN a b"), Message("LOGİN a b"));
        // Around the fast path for long first words.
        assert_eq!(Command::parse("list-userX a"), Message("list-userX a"));
        assert_eq!(Command::parse("list-user\ta"), ListUser(false));
        assert_eq!(
            Command::parse("abcdefghijklmnop"),
            Message("abcdefghijklmnop")
        );
        assert_eq!(
            Command::parse("send-to\u{3000}bob hi"),
            SendTo(Some(("bob", "hi")))
        );
        assert_eq!(Command::parse("quit\u{3000}"), Quit);
    }

    #[test]
    fn look_alike_names_share_a_skeleton() {
        let alice = name_skeleton("alice");
        for name in ["Alice", "ALICE", "aIice", "a1ice", "AL1CE", "a1Ice"] {
            assert_eq!(name_skeleton(name), alice, "{name}");
        }
        assert_eq!(name_skeleton("b0b"), name_skeleton("BOB"));
        assert_eq!(name_skeleton("client_a"), "cllent_a");
        assert_ne!(name_skeleton("alice"), name_skeleton("alise"));
        assert_ne!(name_skeleton("bob"), name_skeleton("bab"));
        assert_ne!(name_skeleton("ali"), name_skeleton("alio"));
    }

    #[test]
    fn validates_names_and_passwords() {
        assert!(valid_username("client_a"));
        assert!(valid_username("A-9"));
        assert!(valid_username(&"x".repeat(32)));
        assert!(!valid_username(&"x".repeat(33)));
        assert!(!valid_username(""));
        assert!(!valid_username("client a"));
        assert!(!valid_username("é"));
        assert!(valid_password("123"));
        assert!(valid_password(&"p".repeat(128)));
        assert!(!valid_password(&"p".repeat(129)));
        assert!(!valid_password("a b"));
        assert!(!valid_password(""));
    }

    #[test]
    fn formats_the_lines_with_names() {
        assert_eq!(
            not_online(Lang::Id, "bob"),
            "User bob tidak sedang online\n"
        );
        assert_eq!(not_online(Lang::En, "bob"), "User bob is not online\n");
        assert_eq!(offline(Lang::Id, "bob"), "Teman anda [bob] telah offline\n");
        assert_eq!(offline(Lang::En, "bob"), "Your friend [bob] went offline\n");
        assert_eq!(
            private_message(Lang::Id, "client_c", "apa kabar juga"),
            "Pesan pribadi dari [client_c] apa kabar juga\n"
        );
        assert_eq!(
            private_message(Lang::En, "c", "hi"),
            "Private message from [c] hi\n"
        );
        let mut b = String::new();
        broadcast_into(&mut b, "client_a", "apa kabar, client c");
        assert_eq!(b, "[client_a] apa kabar, client c\n");
        assert_eq!(
            user_list(Lang::Id, ["client", "client_a"].into_iter()),
            "list user : client, client_a.\n"
        );
        assert_eq!(
            user_list(Lang::En, ["a"].into_iter()),
            "online users : a.\n"
        );
        assert!(help(Lang::Id).lines().count() > 3);
        assert!(help(Lang::En).contains("send-to"));
    }

    #[test]
    fn every_reply_has_a_line_in_both_languages() {
        use Reply::*;
        for reply in [
            LoginFirst,
            LoginFail,
            RegistOk,
            LoginOk,
            AlreadySelf,
            NameTaken,
            AlreadyOther,
            BadCommand,
            BadListCommand,
            BadUsername,
            BadPassword,
            TooLong,
            LogoutOk,
            Bye,
            ServerFull,
            Busy,
            StorageError,
            TooManyFails,
            TooManyConns,
            Throttled,
            LoginTimeout,
        ] {
            for lang in [Lang::Id, Lang::En] {
                let line = reply.line(lang);
                assert!(line.ends_with('\n') && line.len() > 5, "{reply:?} {lang:?}");
            }
        }
        assert_eq!(
            Reply::LoginFail.line(Lang::Id),
            "Username atau Password anda Salah\n"
        );
        assert_eq!(
            Reply::TooLong.text(Lang::En),
            "Message too long (at most 4096 bytes)"
        );
    }
}
