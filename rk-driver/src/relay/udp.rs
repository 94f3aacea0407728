//! UDP through the relay: one host socket per forwarded port, one socket
//! inside per client address (a "flow"), so that the answers of the server
//! inside go back to the client that asked, from the port it asked.

use super::{net, token, Entry, Forward, Inside, Relay, BATCH, MAX_FLOWS_PER_PORT};
use crate::epoll::IN;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

pub(super) struct UdpPort {
    pub(super) fwd: Forward,
    pub(super) sock: OwnedFd,
    /// Client address → slot of its flow.
    pub(super) flows: HashMap<SocketAddr, usize>,
}

pub(super) struct Flow {
    pub(super) tag: u64,
    /// Slot of the [`UdpPort`].
    pub(super) owner: usize,
    pub(super) client: SocketAddr,
    pub(super) target: SocketAddr,
    pub(super) sock: OwnedFd,
    pub(super) last: Instant,
    pub(super) routed: Option<IpAddr>,
}

impl<I: Inside> Relay<I> {
    /// Datagrams from clients on the host: each client address gets a
    /// flow (its own socket inside), so that answers find their way back.
    pub(super) fn datagrams_from_clients(&mut self, slot: usize) {
        for _ in 0..BATCH {
            let Some(Some(Entry::Udp(u))) = self.slots.get(slot) else {
                return;
            };
            let (n, client) = match net::recv_from(u.sock.as_fd(), &mut self.datagram) {
                Ok((n, Some(client))) => (n, client),
                // No usable address (or a wake-up with none at all):
                // nothing to answer to.
                Ok((_, None)) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED)) => continue,
                // EAGAIN: all read.
                Err(_) => return,
            };
            let flow = match u.flows.get(&client) {
                Some(&f) => f,
                None => match self.new_flow(slot, client) {
                    Some(f) => f,
                    None => continue,
                },
            };
            if let Some(Some(Entry::Flow(f))) = self.slots.get_mut(flow) {
                f.last = Instant::now();
                let to = f.routed.map(|_| f.target);
                let _ = net::send_to(f.sock.as_fd(), &self.datagram[..n], to);
            }
        }
    }

    fn new_flow(&mut self, owner: usize, client: SocketAddr) -> Option<usize> {
        let Some(Some(Entry::Udp(u))) = self.slots.get(owner) else {
            return None;
        };
        let fwd = u.fwd;
        if u.flows.len() >= MAX_FLOWS_PER_PORT {
            let oldest = u
                .flows
                .values()
                .copied()
                .min_by_key(|&f| match &self.slots[f] {
                    Some(Entry::Flow(f)) => f.last,
                    _ => Instant::now(),
                });
            if let Some(f) = oldest {
                self.close(f);
            }
        }
        if self.full() {
            return None;
        }
        let source = Some(client).filter(|_| fwd.keep_client_address);
        let inside = self.open_inside(fwd.target, source, false).ok()?;
        let raw = inside.fd.as_raw_fd();
        let at = self.insert(Entry::Flow(Flow {
            tag: fwd.tag,
            owner,
            client,
            target: fwd.target,
            sock: inside.fd,
            last: Instant::now(),
            routed: inside.routed,
        }));
        self.active += 1;
        self.flows += 1;
        if let Some(Some(Entry::Udp(u))) = self.slots.get_mut(owner) {
            u.flows.insert(client, at);
        }
        // SAFETY: the descriptor belongs to the entry just inserted.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if self.epoll.add(fd, IN, token(at, 1)).is_err() {
            self.close(at);
            return None;
        }
        Some(at)
    }

    /// Answers from inside go back to the flow's client, from the port.
    pub(super) fn datagrams_from_inside(&mut self, slot: usize) {
        for _ in 0..BATCH {
            let Some(Some(Entry::Flow(f))) = self.slots.get_mut(slot) else {
                return;
            };
            let n = match net::recv_from(f.sock.as_fd(), &mut self.datagram) {
                Ok((n, _)) => n,
                // EAGAIN, or ECONNREFUSED: nothing listens inside right
                // now; the flow stays until it is idle.
                Err(_) => return,
            };
            f.last = Instant::now();
            let (owner, client) = (f.owner, f.client);
            if let Some(Some(Entry::Udp(u))) = self.slots.get(owner) {
                let _ = net::send_to(u.sock.as_fd(), &self.datagram[..n], Some(client));
            }
        }
    }

    /// Forgets UDP flows idle for [`Limits::flow_idle`] or longer.
    pub(super) fn sweep_flows(&mut self) {
        self.next_sweep = Instant::now() + Self::sweep_interval(&self.limits);
        let idle = self.limits.flow_idle;
        let old: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Some(Entry::Flow(f)) if f.last.elapsed() >= idle => Some(i),
                _ => None,
            })
            .collect();
        for i in old {
            self.close(i);
        }
    }
}
