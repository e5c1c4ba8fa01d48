//! A mistyped `login` / `regist` (SPEC section 2, issue 9): a line whose first
//! word is one of them in another letter case is never relayed as chat, so a
//! user who types `Login alice secret` while logged in does not broadcast a
//! password.

mod common;

use std::time::Duration;

use common::Server;

const BAD_COMMAND: &str = "Perintah yang anda ketikkan salah";
const LOGIN_FIRST: &str = "Anda harus login terlebih dahulu";

#[test]
fn a_mistyped_login_is_refused_and_never_relayed() {
    let server = Server::start(&[]);
    let mut a = server.login("a");
    let mut b = server.login("b");
    for line in ["Login a secret", "LOGIN", "REGIST c pw", "reGist"] {
        a.send(line);
        a.expect(BAD_COMMAND);
    }
    // Words that only start like a keyword are chat as before.
    a.send("Logins are fun");
    b.expect("[a] Logins are fun");
    b.expect_silence(Duration::from_millis(200));

    // Before login it is one more line that needs a login first.
    let mut c = server.connect();
    c.send("Login c pw");
    c.expect(LOGIN_FIRST);
}
