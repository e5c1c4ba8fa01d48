mod common;
use common::*;

#[test]
fn smoke() {
    let server = Server::start(&[]);
    let mut a = server.login("a");
    let mut b = server.login("b");
    a.send("halo");
    b.expect("[a] halo");
    a.send("quit");
    a.expect("Sampai jumpa");
    a.expect_closed();
    b.expect("Teman anda [a] telah offline");
}
