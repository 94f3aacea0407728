//! Sockets inside the namespace, and keeping the client's address: the
//! server inside sees the host-side client's address, not the relay's.
//!
//! - A loopback client (127.0.0.0/8, ::1) relayed to a loopback target: the
//!   inside socket binds to the client's address and port, which are local
//!   inside too (the whole of 127.0.0.0/8 is on `lo`); no routing needed.
//! - Any other client: the socket binds to it with IP_TRANSPARENT (the
//!   worker has CAP_NET_ADMIN in the child's user namespace), and
//!   [`LocalDelivery`] routes the answers back to it.
//!
//! Whatever fails (an old kernel, a policy), the relay falls back to its own
//! address, says so once, and the connection works anyway.

use super::routing::LocalDelivery;
use rk_driver::relay;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};

/// Makes the sockets a worker connects inside with.
pub struct Inside {
    worker_index: u32,
    routing: Option<LocalDelivery>,
    /// Transparent binding failed once: do not try again.
    transparent_broken: bool,
}

impl Inside {
    pub fn new(worker_index: u32) -> Inside {
        Inside {
            worker_index,
            routing: None,
            transparent_broken: false,
        }
    }

    /// Opens the routing (netlink) socket now, while the worker may still
    /// make one: its confinement allows TCP and UDP sockets only.
    pub fn prepare_routing(&mut self) {
        if self.routing.is_some() || self.transparent_broken {
            return;
        }
        match LocalDelivery::new(self.worker_index) {
            Ok(r) => self.routing = Some(r),
            Err(e) => {
                self.transparent_broken = true;
                eprintln!(
                    "[rootlesskit:port-worker] warning: cannot keep client addresses (netlink: {e}); servers inside see the relay's address"
                );
            }
        }
    }

    /// Binds to the client's address where that can work; otherwise leaves
    /// the socket to the kernel's choice.
    fn bind_source(&mut self, s: &Socket, target: SocketAddr, src: SocketAddr) -> Option<IpAddr> {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        if src.is_ipv4() != target.is_ipv4() {
            return None;
        }
        if src.ip().is_loopback() {
            if target.ip().is_loopback() {
                bind_same_or_any_port(s, src);
            }
            return None;
        }
        if self.transparent_broken {
            return None;
        }
        match self.bind_transparent(s, src) {
            Ok(()) => Some(src.ip()),
            Err(e) => {
                self.transparent_broken = true;
                eprintln!(
                    "[rootlesskit:port-worker] warning: cannot keep client addresses ({e}); servers inside see the relay's address"
                );
                None
            }
        }
    }

    fn bind_transparent(&mut self, s: &Socket, src: SocketAddr) -> io::Result<()> {
        if src.is_ipv4() {
            s.set_ip_transparent_v4(true)?;
        } else {
            s.set_ip_transparent_v6(true)?;
        }
        if self.routing.is_none() {
            self.routing = Some(LocalDelivery::new(self.worker_index)?);
        }
        let routing = self.routing.as_mut().expect("just set");
        routing.acquire(src.ip())?;
        if !bind_same_or_any_port(s, src) {
            routing.release(src.ip());
            return Err(io::Error::other(format!("cannot bind to {src}")));
        }
        Ok(())
    }
}

impl relay::Inside for Inside {
    fn socket(&mut self, target: SocketAddr, stream: bool) -> io::Result<OwnedFd> {
        let ty = if stream { Type::STREAM } else { Type::DGRAM };
        let s = Socket::new(
            Domain::for_address(target),
            ty.nonblocking().cloexec(),
            None,
        )?;
        Ok(s.into())
    }

    fn bind_client(&mut self, fd: BorrowedFd, to: SocketAddr, from: SocketAddr) -> Option<IpAddr> {
        self.bind_source(&SockRef::from(&fd), to, from)
    }

    fn release(&mut self, client: IpAddr) {
        if let Some(r) = self.routing.as_mut() {
            r.release(client);
        }
    }
}

/// The client's port if free, else any port: the address is what servers
/// log and filter on.
fn bind_same_or_any_port(s: &Socket, src: SocketAddr) -> bool {
    s.bind(&SockAddr::from(src)).is_ok()
        || s.bind(&SockAddr::from(SocketAddr::new(src.ip(), 0)))
            .is_ok()
}
