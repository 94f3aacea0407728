//! rk-pasta's forwarder on the shared relay ([`rk_driver::relay`]): for
//! each forwarded port, host sockets on every IPv4 and IPv6 address (as
//! pasta's own `-t auto` binds them); sockets inside come from the
//! namespace helper. Servers inside see the relay's address, as with
//! pasta's own forwarding of a non-loopback client.

use super::nshelper::{Kind, NsSockets};
use super::sockets;
use nix::sys::socket::{listen, Backlog, SockType};
use rk_driver::relay::{self, Forward, Limits, Relay};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// A UDP client silent this long is forgotten (pasta uses 180 s).
const FLOW_IDLE: Duration = Duration::from_secs(180);

/// Sockets inside, made by the namespace helper.
pub struct NsInside(Arc<NsSockets>);

impl relay::Inside for NsInside {
    fn socket(&mut self, target: SocketAddr, stream: bool) -> io::Result<OwnedFd> {
        let kind = match (stream, target.is_ipv4()) {
            (true, true) => Kind::Tcp4,
            (true, false) => Kind::Tcp6,
            (false, true) => Kind::Udp4,
            (false, false) => Kind::Udp6,
        };
        let fd = self.0.get(kind)?;
        rk_driver::fdio::set_nonblocking(&fd)?;
        Ok(fd)
    }
}

/// The sockets of one forwarded port, to stop forwarding it.
#[derive(Debug)]
pub struct Forwarded(u64);

/// The relay, and the ports it forwards.
pub struct Forwarder {
    relay: Relay<NsInside>,
    next_tag: u64,
}

impl Forwarder {
    pub fn new(ns: Arc<NsSockets>) -> io::Result<Forwarder> {
        let limits = Limits {
            capacity: usize::MAX,
            flow_idle: FLOW_IDLE,
            shared_listeners: false,
        };
        Ok(Forwarder {
            relay: Relay::new(NsInside(ns), limits)?,
            next_tag: 0,
        })
    }

    pub fn relay(&mut self) -> &mut Relay<NsInside> {
        &mut self.relay
    }

    /// Listens on the host's `port` (IPv4, and IPv6 where the host has
    /// it) and joins each connection to `target` inside.
    pub fn forward_tcp(&mut self, port: u16, target: SocketAddr) -> io::Result<Forwarded> {
        self.forward(port, target, SockType::Stream)
    }

    /// Receives datagrams on the host's `port` for `target` inside.
    pub fn forward_udp(&mut self, port: u16, target: SocketAddr) -> io::Result<Forwarded> {
        self.forward(port, target, SockType::Datagram)
    }

    fn forward(&mut self, port: u16, target: SocketAddr, ty: SockType) -> io::Result<Forwarded> {
        let fwd = Forward {
            tag: self.next_tag,
            target,
            keep_client_address: false,
        };
        self.next_tag += 1;
        for (i, addr) in sockets::host_addresses(port).into_iter().enumerate() {
            let added = sockets::bound(ty, addr).and_then(|fd| match ty {
                SockType::Stream => {
                    listen(&fd, Backlog::MAXCONN)?;
                    self.relay.listen(fd, fwd)
                }
                _ => self.relay.receive(fd, fwd),
            });
            match added {
                Ok(()) => {}
                // IPv4 is what matters; a host without IPv6 still forwards.
                Err(e) if i == 0 => return Err(e),
                Err(_) => {}
            }
        }
        Ok(Forwarded(fwd.tag))
    }

    /// Stops forwarding a port: its host sockets close; TCP connections
    /// already open stay, UDP flows go.
    pub fn stop(&mut self, f: Forwarded) {
        self.relay.stop(f.0, true);
    }
}
