//! Forwarding one TCP port: the host listens on it, and each connection is
//! joined to a new connection inside the namespace by splicing the bytes
//! through a pipe (they never enter user space).

use super::nshelper::{Kind, NsSockets};
use super::sockets;
use nix::fcntl::{splice, SpliceFFlags};
use nix::sys::socket::{
    accept4, listen, setsockopt, shutdown, sockopt, Backlog, Shutdown, SockFlag, SockType,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes in flight per direction: the pipe's size (the unprivileged limit).
const PIPE_SIZE: usize = 1 << 20;
/// The pumps need little stack.
const STACK: usize = 128 * 1024;

/// A forwarded port; dropping it stops listening (open connections stay).
#[derive(Debug)]
pub struct TcpForward {
    listeners: Vec<Arc<OwnedFd>>,
    stop: Arc<AtomicBool>,
}

impl TcpForward {
    /// Listens on the host's `port` (IPv4, and IPv6 where the host has it)
    /// and joins each connection to `target` inside the namespace.
    pub fn start(port: u16, target: SocketAddr, ns: &Arc<NsSockets>) -> io::Result<TcpForward> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = Vec::new();
        for (i, addr) in sockets::host_addresses(port).into_iter().enumerate() {
            let fd = match sockets::bound(SockType::Stream, addr)
                .and_then(|fd| Ok(listen(&fd, Backlog::MAXCONN).map(|()| fd)?))
            {
                Ok(fd) => Arc::new(fd),
                // IPv4 is what matters; a host without IPv6 still forwards.
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            let (listener, ns, stop) = (Arc::clone(&fd), Arc::clone(ns), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("tcp-{port}"))
                .stack_size(STACK)
                .spawn(move || accept_loop(&listener, target, &ns, &stop))?;
            listeners.push(fd);
        }
        Ok(TcpForward { listeners, stop })
    }
}

impl Drop for TcpForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for l in &self.listeners {
            // Wakes the accept() of its thread, which then closes it.
            let _ = shutdown(l.as_raw_fd(), Shutdown::Read);
        }
    }
}

fn accept_loop(listener: &OwnedFd, target: SocketAddr, ns: &Arc<NsSockets>, stop: &AtomicBool) {
    loop {
        let client = match accept4(listener.as_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(c) => c,
            Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => continue,
            Err(
                nix::Error::EMFILE | nix::Error::ENFILE | nix::Error::ENOBUFS | nix::Error::ENOMEM,
            ) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(_) => return,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let ns = Arc::clone(ns);
        let spawned = std::thread::Builder::new()
            .name("tcp-conn".into())
            .stack_size(STACK)
            .spawn(move || connection(client, target, &ns));
        if spawned.is_err() {
            // Out of threads: the client is dropped (closed) with the closure.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn connection(client: OwnedFd, target: SocketAddr, ns: &NsSockets) {
    let kind = if target.is_ipv4() {
        Kind::Tcp4
    } else {
        Kind::Tcp6
    };
    let inner = match ns
        .get(kind)
        .and_then(|fd| sockets::connect_to(&fd, target).map(|()| fd))
    {
        Ok(fd) => fd,
        Err(_) => {
            // Nobody listens inside (any more): refuse, as a closed port would.
            sockets::reset_on_close(&client);
            return;
        }
    };
    for fd in [&client, &inner] {
        let _ = setsockopt(fd, sockopt::TcpNoDelay, &true);
    }
    let (client, inner) = (Arc::new(client), Arc::new(inner));
    let (c, i) = (Arc::clone(&client), Arc::clone(&inner));
    let upstream = std::thread::Builder::new()
        .name("tcp-pump".into())
        .stack_size(STACK)
        .spawn(move || pump(&c, &i));
    pump(&inner, &client);
    if let Ok(handle) = upstream {
        let _ = handle.join();
    }
}

/// Moves bytes from `from` to `to` until EOF, then half-closes `to`. On an
/// error both sockets are shut down, which also ends the other direction.
fn pump(from: &OwnedFd, to: &OwnedFd) {
    if copy(from, to).is_ok() {
        let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
    } else {
        let _ = shutdown(from.as_raw_fd(), Shutdown::Both);
        let _ = shutdown(to.as_raw_fd(), Shutdown::Both);
    }
}

fn copy(from: &OwnedFd, to: &OwnedFd) -> nix::Result<()> {
    let (pipe_out, pipe_in) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let size = nix::fcntl::fcntl(
        pipe_in.as_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as libc::c_int),
    )
    .map(|n| n as usize)
    .unwrap_or(64 * 1024);
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let n = match splice(from, None, &pipe_in, None, size, flags) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            match splice(&pipe_out, None, to, None, left, flags) {
                Ok(0) => return Err(nix::Error::EPIPE),
                Ok(m) => left -= m,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
