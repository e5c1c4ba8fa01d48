"""The chat page in a real browser (SPEC 8.2), used as a person would.

Headless Debian Chromium driven by Python playwright (never a browser of
playwright's own). Two browser users and one nc-style user (a plain socket)
register and log in, through the page's own form for the browser users; each
sees the others' broadcasts and private messages and who is online; a `<b>`
typed by one shows as text for the others; after the server stops, the page
says it is disconnected, and its Reconnect button works once the server is
back. Screenshots go to $SHOTS (default target/browser-shots; `make
screenshots` sets docs/, where the README shows them).

Usage: test_browser.py PATH/TO/chat-server
Ends with the line 'N passed, N failed'; exits non-zero on any failure.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback

from playwright.sync_api import expect, sync_playwright

SERVER = sys.argv[1] if len(sys.argv) > 1 else "target/debug/chat-server"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DOCS = os.environ.get("SHOTS") or os.path.join(ROOT, "target", "browser-shots")
TIMEOUT_MS = 10_000

results = []


def check(name, fn):
    """Runs one step; records and reports it, and goes on either way."""
    started = time.monotonic()
    try:
        fn()
    except Exception:  # noqa: BLE001 - every failure is reported the same way
        results.append(False)
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()
        return False
    results.append(True)
    print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
    return True


class Server:
    """The chat-server binary with the browser door on; web_port 0 picks one."""

    def __init__(self, web_port=0):
        self.proc = subprocess.Popen(
            [SERVER, "--accounts", ":memory:", "--history", ":memory:",
             "--hash-params", "m=256,t=1,p=1",
             "--port", "0", "--web-port", str(web_port), "--lang", "en",
             "--flood-rate", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.addr = self.web = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.web is None:
            line = self.proc.stderr.readline()
            if not line:
                break
            m = re.search(r"(web )?listening on (\S+)", line)
            if m and m.group(1):
                self.web = m.group(2)
            elif m:
                self.addr = m.group(2)
        if self.web is None:
            self.proc.kill()
            raise RuntimeError("the server did not start its web door")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Nc:
    """A plain-socket user, as nc would be."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_MS / 1000)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def expect(self, wanted):
        """Waits for the line `wanted`, skipping others (OFFLINE notices...)."""
        seen = []
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            got = self.line()
            if got == wanted:
                return
            seen.append(got)
        raise AssertionError(f"nc did not get {wanted!r}; got {seen!r}")


def message(page, text):
    """The message in the page's stream whose text contains `text`."""
    return page.locator("#messages .msg").filter(has_text=text)


def join(page, url, name, register=True):
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected")
    page.fill("#username", name)
    page.fill("#password", "pass-" + name)
    if register:
        page.click("#register-btn")
    else:
        page.click("#login-btn")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#me")).to_have_text(name)


def say(page, line):
    page.fill("#line", line)
    page.keyboard.press("Enter")


def main():
    server = Server()
    url = f"http://{server.web}/"
    print(f"server on {server.addr}, web door on {server.web}", flush=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        # Alice on a laptop, Bob on a phone-sized screen.
        alice = browser.new_context(viewport={"width": 1000, "height": 680}).new_page()
        bob = browser.new_context(viewport={"width": 390, "height": 760}, is_mobile=True,
                                  has_touch=True).new_page()
        for page in (alice, bob):
            page.set_default_timeout(TIMEOUT_MS)
        carol = None

        def login_all():
            nonlocal carol
            join(alice, url, "alice")
            join(bob, url, "bob")
            carol = Nc(server.addr)
            carol.send("regist carol pw")
            carol.expect("Registration successful")
            carol.send("login carol pw")
            carol.expect("Login successful")
            # The page speaks the server's language.
            assert alice.locator("html").get_attribute("lang") == "en"
            expect(alice.locator("#login-btn")).to_have_text("Log in")

        if not check("two browser users and one nc user register and log in", login_all):
            server.stop()
            return

        def broadcasts():
            say(alice, "hello from alice")
            # Her own line shows, set apart as hers.
            expect(message(alice, "hello from alice")).to_have_class(re.compile(r"\bmine\b"))
            expect(message(bob, "hello from alice")).to_have_class(re.compile(r"\bbroadcast\b"))
            expect(message(bob, "hello from alice").locator(".from")).to_have_text("alice")
            carol.expect("[alice] hello from alice")
            carol.send("hi from the terminal")
            for page in (alice, bob):
                expect(message(page, "hi from the terminal").locator(".from")).to_have_text("carol")
            say(bob, "bob here, on a phone")
            expect(message(alice, "bob here, on a phone")).to_be_visible()
            carol.expect("[bob] bob here, on a phone")
            # The line to type into keeps focus after sending.
            assert alice.evaluate("document.activeElement.id") == "line"

        check("each sees the others' broadcasts", broadcasts)

        def html_is_text():
            say(bob, "<b>bold?</b> <img src=x onerror=alert(1)>")
            msg = message(alice, "<b>bold?</b>")
            expect(msg).to_be_visible()
            assert msg.locator("b, img").count() == 0, "received text became HTML"
            assert "<b>bold?</b> <img src=x onerror=alert(1)>" in msg.text_content()
            carol.expect("[bob] <b>bold?</b> <img src=x onerror=alert(1)>")

        check("a <b> typed by one user shows as text for the others", html_is_text)

        def who_is_online():
            # Bob logged in after Alice, and Carol after both: Bob's list was
            # asked for at his login, Alice's is refreshed every 15 s.
            for page in (alice, bob):
                users = page.locator("#users")
                for name in ("alice", "bob", "carol"):
                    expect(users).to_contain_text(name, timeout=17_000)
            carol.send("list-user")
            carol.expect("online users : alice, bob, carol.")

        check("each sees who is online (refreshed every 15 s)", who_is_online)

        def private_messages():
            # Clicking a name starts a send-to.
            alice.locator("#users button", has_text="bob").click()
            assert alice.input_value("#line") == "send-to bob "
            assert alice.evaluate("document.activeElement.id") == "line"
            alice.keyboard.type("just between us")
            alice.keyboard.press("Enter")
            expect(message(alice, "just between us")).to_have_class(re.compile(r"\bprivate\b"))
            msg = message(bob, "just between us")
            expect(msg).to_have_class(re.compile(r"\bprivate\b"))
            expect(msg.locator(".from")).to_have_text("alice")
            bob.locator("#users button", has_text="carol").click()
            bob.keyboard.type("psst carol")
            bob.keyboard.press("Enter")
            carol.expect("Private message from [bob] psst carol")
            carol.send("send-to alice a secret from the terminal")
            expect(message(alice, "a secret from the terminal")).to_have_class(
                re.compile(r"\bprivate\b"))
            # Nobody else saw them.
            assert message(bob, "a secret from the terminal").count() == 0
            assert message(alice, "psst carol").count() == 0

        check("private messages both ways, set apart", private_messages)

        def offline_notice():
            carol.send("quit")
            carol.expect("Goodbye")
            for page in (alice, bob):
                expect(message(page, "[carol] went offline")).to_have_class(
                    re.compile(r"\boffline\b"))
                # The list is refreshed on OFFLINE.
                expect(page.locator("#users")).not_to_contain_text("carol")

        check("an offline notice, set apart, refreshes who is online", offline_notice)

        def phone_fits():
            width = bob.evaluate("document.documentElement.scrollWidth")
            inner = bob.evaluate("window.innerWidth")
            assert width <= inner, f"page is {width}px wide on a {inner}px screen"
            for sel in ("#line", "#send", "#users"):
                expect(bob.locator(sel)).to_be_visible()

        check("works on a phone-sized screen", phone_fits)

        def screenshots():
            os.makedirs(DOCS, exist_ok=True)
            alice.screenshot(path=os.path.join(DOCS, "page.png"))
            bob.screenshot(path=os.path.join(DOCS, "page-phone.png"))

        check(f"screenshots saved to {DOCS}", screenshots)

        web_port = int(server.web.rsplit(":", 1)[1])

        def restart_shows_disconnected():
            nonlocal server
            server.stop()
            for page in (alice, bob):
                expect(page.locator("#down")).to_be_visible()
                expect(page.locator("#status")).to_have_text("disconnected")
                expect(page.locator("#reconnect")).to_be_visible()
            alice.screenshot(path=os.path.join(DOCS, "page-disconnected.png"))
            server = Server(web_port)
            alice.click("#reconnect")
            expect(alice.locator("#status")).to_have_text("connected")
            expect(alice.locator("#down")).to_be_hidden()
            # A new server, new accounts (in memory): register again.
            alice.fill("#username", "alice")
            alice.fill("#password", "pass-alice")
            alice.click("#register-btn")
            expect(alice.locator("#chat")).to_be_visible()

        def stored_while_away():
            # Alice logs out with the button; a message sent to her meanwhile
            # is stored, and shown, set apart and timed, when she is back.
            dave = Nc(server.addr)
            dave.send("regist dave pw")
            dave.expect("Registration successful")
            dave.send("login dave pw")
            dave.expect("Login successful")
            alice.click("#logout")
            expect(alice.locator("#login")).to_be_visible()
            dave.send("send-to alice while you were away")
            dave.expect("Message for alice saved")
            alice.fill("#password", "pass-alice")
            alice.click("#login-btn")
            msg = message(alice, "while you were away")
            expect(msg).to_have_class(re.compile(r"\bprivate\b"))
            expect(msg.locator(".from")).to_have_text("dave")
            expect(msg.locator(".tag")).to_contain_text(re.compile(r"\d\d:\d\d"))

        check("after a server restart the page shows it is disconnected, and reconnects",
              restart_shows_disconnected)
        check("a private message stored while logged out is shown after login",
              stored_while_away)
        browser.close()
    server.stop()


if __name__ == "__main__":
    started = time.monotonic()
    try:
        main()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        results.append(False)
    passed = sum(results)
    failed = len(results) - passed
    print(f"browser test took {time.monotonic() - started:.0f}s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not results else 0)
