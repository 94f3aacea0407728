//! Sockets inside the namespace, and keeping the client's address: the
//! server inside sees the host-side client's address, not the relay's.
//!
//! A loopback client (127.0.0.0/8, ::1) relayed to a loopback target: the
//! inside socket binds to the client's address and port, which are local
//! inside too (the whole of 127.0.0.0/8 is on `lo`), so no routing is
//! needed. Other clients are not preserved yet: the server sees the relay's
//! address (see docs/port-forwarding.md).

use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Makes the sockets a worker connects inside with.
#[derive(Default)]
pub struct Inside {}

impl Inside {
    /// A non-blocking TCP connect to `target`; `true` while in progress.
    pub fn connect_tcp(
        &self,
        target: SocketAddr,
        source: Option<SocketAddr>,
    ) -> io::Result<(Socket, bool)> {
        let s = Socket::new(
            Domain::for_address(target),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        let _ = s.set_tcp_nodelay(true);
        self.bind_source(&s, target, source);
        match s.connect(&SockAddr::from(target)) {
            Ok(()) => Ok((s, false)),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((s, true)),
            Err(e) => Err(e),
        }
    }

    /// A UDP socket connected to `target`.
    pub fn connect_udp(
        &self,
        target: SocketAddr,
        source: Option<SocketAddr>,
    ) -> io::Result<Socket> {
        let s = Socket::new(
            Domain::for_address(target),
            Type::DGRAM.nonblocking().cloexec(),
            None,
        )?;
        self.bind_source(&s, target, source);
        s.connect(&SockAddr::from(target))?;
        Ok(s)
    }

    /// Binds to the client's address where that keeps working; otherwise
    /// leaves the socket to the kernel's choice.
    fn bind_source(&self, s: &Socket, target: SocketAddr, source: Option<SocketAddr>) {
        let Some(src) = source else { return };
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        if src.is_ipv4() != target.is_ipv4() {
            return;
        }
        if src.ip().is_loopback() && target.ip().is_loopback() {
            // The same port if free, else any port: the address is what
            // servers log and filter on.
            if s.bind(&SockAddr::from(src)).is_err() {
                let _ = s.bind(&SockAddr::from(SocketAddr::new(src.ip(), 0)));
            }
        }
    }
}
