//! TCP through the relay: accepting on the host's listeners and joining
//! each connection to a new one inside (the bytes then go through
//! [`super::splice`]).

use super::splice::Conn;
use super::{net, token, Entry, Inside, Relay, ACCEPT_BACKOFF, BATCH};
use crate::epoll::{ET, IN, OUT, RDHUP};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

/// A socket inside, connected or connecting.
pub(super) struct InsideSocket {
    pub(super) fd: OwnedFd,
    /// TCP: the connect is still in progress.
    pub(super) connecting: bool,
    /// The client address routed back to this socket.
    pub(super) routed: Option<IpAddr>,
}

impl<I: Inside> Relay<I> {
    /// A socket inside to `target` (TCP if `stream`), bound to `client`
    /// where the forward keeps client addresses and [`Inside`] can.
    pub(super) fn open_inside(
        &mut self,
        target: SocketAddr,
        client: Option<SocketAddr>,
        stream: bool,
    ) -> io::Result<InsideSocket> {
        let fd = self.inside.socket(target, stream)?;
        let routed = client.and_then(|c| self.inside.bind_client(fd.as_fd(), target, c));
        let connecting = if stream || routed.is_none() {
            match net::connect(fd.as_fd(), target) {
                Ok(c) => c,
                Err(e) => {
                    if let Some(ip) = routed {
                        self.inside.release(ip);
                    }
                    return Err(e);
                }
            }
        } else {
            false
        };
        Ok(InsideSocket {
            fd,
            connecting,
            routed,
        })
    }

    pub(super) fn accept(&mut self, slot: usize) {
        for _ in 0..BATCH {
            if self.full() && !self.refuse_when_full {
                self.sync_listeners();
                return;
            }
            let Some(Some(Entry::Listener { fwd, sock })) = self.slots.get(slot) else {
                return;
            };
            let fwd = *fwd;
            let (host, peer) = match net::accept(sock.as_fd()) {
                Ok(x) => x,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        self.backoff_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        self.sync_listeners();
                        return;
                    }
                    // That one connection went away before it was taken.
                    Some(libc::ECONNABORTED | libc::EPROTO) => continue,
                    // EAGAIN: all taken.
                    _ => return,
                },
            };
            if self.full() {
                // Full, and no other relay will take it: refuse cleanly.
                net::reset_on_close(host.as_fd());
                continue;
            }
            net::set_nodelay(host.as_fd());
            let client = peer.filter(|_| fwd.keep_client_address);
            let inside = match self.open_inside(fwd.target, client, true) {
                Ok(s) => s,
                Err(_) => {
                    // Nobody listens inside (any more): the client sees a
                    // reset, as it would connecting there directly.
                    net::reset_on_close(host.as_fd());
                    continue;
                }
            };
            net::set_nodelay(inside.fd.as_fd());
            let (h, i) = (host.as_raw_fd(), inside.fd.as_raw_fd());
            let conn = Conn::new(fwd.tag, host, inside.fd, inside.connecting, inside.routed);
            let at = self.insert(Entry::Conn(Box::new(conn)));
            self.active += 1;
            let events = IN | OUT | RDHUP | ET;
            // SAFETY: both descriptors belong to the entry just inserted.
            let (h, i) = unsafe { (BorrowedFd::borrow_raw(h), BorrowedFd::borrow_raw(i)) };
            if self.epoll.add(h, events, token(at, 0)).is_err()
                || self.epoll.add(i, events, token(at, 1)).is_err()
            {
                self.close(at);
            }
        }
        // More may be waiting; the listener is level-triggered.
    }
}
