//! ICMP echo through the host's ping sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`,
//! and `IPPROTO_ICMPV6` for IPv6, allowed to the groups in
//! net.ipv4.ping_group_range, which governs both). The kernel picks the
//! echo identifier of each host socket, so a flow is one (guest, destination,
//! guest identifier) and replies get the guest's identifier back.

use crate::epoll::{self, Epoll, Token};
use crate::net::Net;
use crate::ratelog::RateLog;
use crate::slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const KIND: u8 = 4;
pub const MAX_FLOWS: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Flow {
    guest: IpAddr,
    /// The address the guest pinged (the source of the replies it expects).
    dest: IpAddr,
    ident: u16,
    host: Socket,
    last: Instant,
}

pub struct PingNat {
    flows: Slab<Flow>,
    by_key: HashMap<(IpAddr, IpAddr, u16), u32>,
    readable: Vec<u32>,
    scratch: Vec<u8>,
    /// Ping sockets are not allowed for this user: stop trying.
    denied: bool,
    max_flows: usize,
    log: RateLog,
}

impl PingNat {
    pub fn new(max_flows: usize) -> PingNat {
        PingNat {
            flows: Slab::default(),
            by_key: HashMap::new(),
            readable: Vec::new(),
            scratch: vec![0; 65536],
            denied: false,
            max_flows,
            log: RateLog::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Sends the guest's echo request `icmp` (the whole ICMP message) to
    /// `target` on the host; `false` if that is not possible (the caller may
    /// then let the stack answer).
    #[allow(clippy::too_many_arguments)]
    pub fn on_echo(
        &mut self,
        epoll: &Epoll,
        guest: IpAddr,
        dest: IpAddr,
        ident: u16,
        target: IpAddr,
        icmp: &[u8],
    ) -> bool {
        if self.denied {
            return false;
        }
        let key = (guest, dest, ident);
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                if self.flows.len() >= self.max_flows {
                    self.log.log(format_args!(
                        "ping {guest} -> {dest} dropped: {} ping flows open, the limit",
                        self.max_flows
                    ));
                    return true;
                }
                let host = match ping_socket(target) {
                    Ok(s) => s,
                    Err(e) => {
                        if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                            self.denied = true;
                            log::warn!("ping through the host is not allowed ({e}): net.ipv4.ping_group_range does not include this user's group (as root: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"); pings to the gateway are answered locally, others dropped");
                        } else {
                            self.log.log(format_args!("ping {guest} -> {dest}: {e}"));
                        }
                        return false;
                    }
                };
                let (index, generation) = self.flows.vacant();
                if epoll
                    .add(
                        host.as_raw_fd(),
                        epoll::IN | epoll::ET,
                        Token::new(KIND, index, generation),
                    )
                    .is_err()
                {
                    return false;
                }
                self.flows.insert(Flow {
                    guest,
                    dest,
                    ident,
                    host,
                    last: Instant::now(),
                });
                self.by_key.insert(key, index);
                index
            }
        };
        let Some(flow) = self.flows.get_index_mut(index) else {
            return false;
        };
        flow.last = Instant::now();
        // The kernel sets the identifier and checksum of what we send.
        let _ = flow.host.send(icmp);
        true
    }

    pub fn on_event(&mut self, token: Token) {
        if self.flows.get_mut(token.index, token.generation).is_some() {
            self.readable.push(token.index);
        }
    }

    /// Writes the host's echo replies to the guest.
    pub fn service(&mut self, net: &mut Net) {
        let mut ready = std::mem::take(&mut self.readable);
        for &i in &ready {
            let Some(flow) = self.flows.get_index_mut(i) else {
                continue;
            };
            // Errors (ICMP errors queued on the socket) are consumed by the
            // read that reports them; more replies may follow.
            let mut errors = 0;
            while errors < 16 {
                // Echo reply: ICMP type 0, ICMPv6 type 129.
                let reply = if flow.guest.is_ipv4() { 0 } else { 129 };
                match (&flow.host).read(&mut self.scratch) {
                    Ok(n) if n >= 8 && self.scratch[0] == reply => {
                        flow.last = Instant::now();
                        let seq = u16::from_be_bytes([self.scratch[6], self.scratch[7]]);
                        if let Some(mac) = net.guest_mac {
                            crate::frames::echo_reply(
                                &mut net.dev,
                                mac,
                                flow.dest,
                                flow.guest,
                                flow.ident,
                                seq,
                                &self.scratch[8..n],
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => errors += 1,
                }
            }
        }
        ready.clear();
        self.readable = ready;
    }

    pub fn housekeeping(&mut self, now: Instant) {
        for i in self.flows.indices() {
            let idle = self
                .flows
                .get_index_mut(i)
                .is_some_and(|f| now.duration_since(f.last) > IDLE_TIMEOUT);
            if idle {
                if let Some(f) = self.flows.remove(i) {
                    self.by_key.remove(&(f.guest, f.dest, f.ident));
                }
            }
        }
    }
}

fn ping_socket(target: IpAddr) -> io::Result<Socket> {
    if !crate::policy::host_may_reach(SocketAddr::from((target, 0))) {
        return Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
    }
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let s = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(protocol))?;
    s.connect(&SocketAddr::from((target, 0)).into())?;
    Ok(s)
}
