# Everything a fresh machine needs: `make run-server`, `make test`.
CARGO ?= cargo
HOST ?= 127.0.0.1
PORT ?= 10000
TLS_PORT ?= 10001
# Extra flags for the programs, e.g. make run-server ARGS='--lang en'
ARGS ?=
# Where the browser test saves its screenshots (empty: target/browser-shots)
SHOTS ?=

.PHONY: all build run-server run-server-tls run-client test test-cargo test-nc nc openssl test-irc irc-tools test-browser screenshots lint fmt clean bench bench-quick soak bench-callgrind bench-history

all: build

# Every package's binaries: chat-server (root), chat-client (client/),
# chat-bench (bench/), all in target/release/.
build:
	$(CARGO) build --release --workspace --bins

## run-server: the chat server on $(HOST):$(PORT) (accounts in ./accounts.db)
run-server: build
	./target/release/chat-server --host $(HOST) --port $(PORT) $(ARGS)

## run-server-tls: the same plus the TLS door on $(HOST):$(TLS_PORT), with a
## development certificate for localhost made once in dev/ (git-ignored)
run-server-tls: build dev/cert.pem
	./target/release/chat-server --host $(HOST) --port $(PORT) --tls-port $(TLS_PORT) \
		--tls-cert dev/cert.pem --tls-key dev/key.pem $(ARGS)

dev/cert.pem: | openssl
	bash tests/tls/make-cert.sh dev

## run-client: the terminal client (package chat-client), connected to $(HOST):$(PORT)
run-client: build
	./target/release/chat-client --host $(HOST) --port $(PORT) $(ARGS)

## test: every test: cargo's unit and integration tests, the nc sessions,
## irssi, then the chat page in a real (headless) browser
test: test-cargo test-nc test-irc test-browser

test-cargo:
	$(CARGO) test --workspace --all-targets

# Built with the same package selection as test-cargo, so after it this is a
# no-op: `-p chat` alone unifies dependency features differently and would
# recompile libc and everything above it.
test-nc: nc openssl
	$(CARGO) build --workspace --all-targets
	bash tests/nc/run.sh target/debug/chat-server

## test-browser: the browser door (SPEC 8.2) in headless Chromium, as a
## person would use it; installs Debian's chromium and Python playwright (in
## target/browser-venv) when missing; screenshots in target/browser-shots/
test-browser:
	$(CARGO) build --workspace --all-targets
	bash tests/browser/install.sh
	SHOTS=$(SHOTS) target/browser-venv/bin/python tests/browser/test_browser.py target/debug/chat-server

## screenshots: the browser test, saving its screenshots to docs/ (the README's)
screenshots:
	$(MAKE) test-browser SHOTS=docs

# nc is not on a fresh machine: install Debian's netcat-openbsd, or explain.
nc:
	@command -v nc >/dev/null 2>&1 || bash tests/nc/install-nc.sh

# A real IRC client (irssi, in tmux) against the IRC door; under 15 s.
test-irc: irc-tools
	$(CARGO) build --workspace --all-targets
	bash tests/irc/irssi.sh target/debug/chat-server

# irssi and tmux are not on a fresh machine: install Debian's, or explain.
irc-tools:
	@command -v irssi >/dev/null 2>&1 && command -v tmux >/dev/null 2>&1 || bash tests/irc/install-irssi.sh

# openssl (s_client for the TLS sessions, the dev certificate): install or explain.
openssl:
	@command -v openssl >/dev/null 2>&1 || bash tests/tls/install-openssl.sh

## lint: formatting, clippy and the doc comments' links, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## soak: 1000 misbehaving clients for a few minutes (SOAK_SECS=150), not part of make test
soak:
	$(CARGO) test --release -p chat --test soak -- --ignored --nocapture

## bench-history: STORED per second, group commit against one fsync per
## message, and the chat round trip meanwhile (SPEC 9); not part of make test
bench-history:
	$(CARGO) test --release -p chat --test history_bench -- --ignored --nocapture

## bench: ours vs ngircd vs the floor, interleaved, 3 repetitions (~25 min, 11 of them
## the TLS scenarios: ARGS='--scenarios fanout,connections,storm,flood' skips them);
## medians, ratios, JSON lines, table and chart in bench/results/
bench: build
	bash bench/run.sh $(ARGS)

## bench-quick: the same, one short repetition (about 5 minutes with TLS)
bench-quick: build
	bash bench/run.sh --quick $(ARGS)

## bench-callgrind: instructions per delivery (callgrind), ours and the floor,
## fixed workload (C=100, 10 senders, 10000 messages); table in
## bench/results/callgrind.md, top functions in bench/results/callgrind/
bench-callgrind: build
	bash bench/callgrind.sh
