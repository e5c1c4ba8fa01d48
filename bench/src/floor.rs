//! The floor: the smallest possible mio fan-out server, the machine's limit.
//!
//! It reads lines and appends each one to every other connection's output
//! buffer, with no logic at all (no login, no names, no cleaning), and writes
//! each buffer once per poll turn, as our server does. Whatever our server
//! costs above this is the price of its protocol and its bookkeeping.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX - 1);
/// A reader this far behind is dropped, as in our server.
const MAX_OUTPUT: usize = 1024 * 1024;

struct Conn {
    socket: TcpStream,
    input: Vec<u8>,
    out: Vec<u8>,
    dirty: bool,
    dead: bool,
}

/// Runs the floor server until killed.
pub fn run(addr: SocketAddr) -> Result<(), String> {
    crate::sys::raise_fd_limit();
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // The same listen backlog as our server.
    // SAFETY: listen(2) on a descriptor we own.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    eprintln!("floor: listening on {local}");
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut dirty: Vec<usize> = Vec::new();
    let mut lines: Vec<u8> = Vec::new();
    let mut dead: Vec<usize> = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut socket, _)) => {
                            let _ = socket.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            if poll
                                .registry()
                                .register(
                                    &mut socket,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                // One greeting, so the generator knows it
                                // was accepted; not part of any measurement.
                                let id = entry.key();
                                entry.insert(Conn {
                                    socket,
                                    input: Vec::new(),
                                    out: b"floor\n".to_vec(),
                                    dirty: true,
                                    dead: false,
                                });
                                dirty.push(id);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                continue;
            }
            let id = event.token().0;
            if event.is_writable()
                && !dirty.contains(&id)
                && let Some(c) = conns.get_mut(id)
                && !c.out.is_empty()
                && !c.dirty
            {
                c.dirty = true;
                dirty.push(id);
            }
            if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                continue;
            }
            // Read until the socket would block; collect whole lines.
            lines.clear();
            let Some(c) = conns.get_mut(id) else { continue };
            loop {
                match c.socket.read(&mut buf) {
                    Ok(0) => {
                        c.dead = true;
                        break;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.dead = true;
                        break;
                    }
                }
            }
            if let Some(end) = c.input.iter().rposition(|&b| b == b'\n') {
                lines.extend_from_slice(&c.input[..=end]);
                c.input.drain(..=end);
            }
            if c.dead {
                dead.push(id);
            }
            if lines.is_empty() {
                continue;
            }
            for (other, o) in conns.iter_mut() {
                if other == id || o.dead {
                    continue;
                }
                if o.out.len() + lines.len() > MAX_OUTPUT {
                    o.dead = true;
                    dead.push(other);
                    continue;
                }
                o.out.extend_from_slice(&lines);
                if !o.dirty {
                    o.dirty = true;
                    dirty.push(other);
                }
            }
        }
        // One write per reader per turn.
        for id in dirty.drain(..) {
            let Some(c) = conns.get_mut(id) else { continue };
            c.dirty = false;
            if c.dead {
                continue;
            }
            match c.socket.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.dead = true;
                    dead.push(id);
                }
            }
        }
        for id in dead.drain(..) {
            if let Some(mut c) = conns.try_remove(id) {
                let _ = poll.registry().deregister(&mut c.socket);
            }
        }
    }
}
