//! Socket chores of the loop: listening, refusing, keepalive, descriptor
//! limits, handing memory back.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Registry, Token};

use super::connection::Connection;
use super::{BACKLOG, Door, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES};
use crate::core::chat::Event;
use crate::transport::tls::REFUSAL_ALERT;
use crate::wire::dialect::Dialect;
use crate::wire::protocol::{Lang, Reply};

/// Tells a connection the server cannot take it, in its door's dialect,
/// and lets it go. Through the TLS door there is no handshake to say it
/// in: it gets the refusal alert ([`REFUSAL_ALERT`]).
pub(super) fn refuse(mut socket: TcpStream, door: Door, lang: Lang) {
    let text = Reply::ServerFull.text(lang);
    let answer = match door {
        Door::Tls => REFUSAL_ALERT.to_vec(),
        Door::Web => format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
            text.len() + 1
        )
        .into_bytes(),
        Door::Plain | Door::Irc => {
            let kind = if door == Door::Irc { Dialect::IRC } else { 0 };
            let mut line = Vec::new();
            Dialect::render_broadcast(kind, lang, &Event::Reply(Reply::ServerFull), &mut line);
            line
        }
    };
    let _ = socket.write(&answer);
    let _ = socket.shutdown(Shutdown::Write);
}

/// Binds a listener with a deep backlog and registers it under `token`.
pub(super) fn listen(
    poll: &Poll,
    addr: SocketAddr,
    token: Token,
) -> io::Result<(TcpListener, SocketAddr)> {
    let mut listener = TcpListener::bind(addr)?;
    // Listening again on a listening socket only updates its backlog.
    // SAFETY: listen(2) on a descriptor we own; no memory is involved.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        warn!(
            "cannot raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
    let local_addr = listener.local_addr()?;
    poll.registry()
        .register(&mut listener, token, Interest::READABLE)?;
    Ok((listener, local_addr))
}

/// The reserve descriptor (see [`Server::reserve_fd`]).
pub(super) fn open_reserve() -> Option<File> {
    File::open("/dev/null")
        .inspect_err(|e| warn!("cannot open a reserve descriptor: {e}"))
        .ok()
}

/// Turns on TCP keepalive with the timings above.
pub(super) fn set_keepalive(fd: RawFd) -> io::Result<()> {
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ];
    for (level, name, value) in options {
        // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a
        // live local; the descriptor is a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Hands the allocator's free memory back to the OS. After a burst (many
/// readers far behind, up to 1 MiB each) glibc keeps the freed heap, and the
/// process would stay at its peak size long after the burst is over.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(super) fn reregister(registry: &Registry, conn: &mut Connection, key: usize) {
    let interest = if conn.writable_interest {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if let Err(e) = registry.reregister(&mut conn.socket, Token(key), interest) {
        debug!("{}: reregister failed: {e}", conn.peer);
    }
}

/// Errors that mean the process or system ran out of descriptors or memory.
pub(super) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Raises the soft descriptor limit so `max_clients` connections fit, as far
/// as the hard limit allows. Returns the limit now in force.
pub fn raise_fd_limit(max_clients: usize) -> u64 {
    // Room for the listener, the poll, the accounts file, logs and threads.
    let wanted = max_clients as u64 + 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("cannot read the file descriptor limit");
        return 0;
    }
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let target = wanted.min(limit.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if target > limit.rlim_cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        limit.rlim_cur = target;
    }
    if limit.rlim_cur < wanted {
        warn!(
            "file descriptor limit is {} (hard limit {}): fewer than --max-clients {} connections fit",
            limit.rlim_cur, limit.rlim_max, max_clients
        );
    }
    limit.rlim_cur
}
