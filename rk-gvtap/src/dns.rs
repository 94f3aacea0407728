//! The DNS forwarder at the gateway's port 53 (UDP; TCP goes through the
//! TCP NAT with the nameservers as targets). Each query is sent to the
//! host's nameservers in resolv.conf order until one answers: a server that
//! refuses (ICMP unreachable) is skipped at once, a silent one after
//! [`SERVER_TIMEOUT`]. The last server that answered is asked first next
//! time, so a dead first nameserver costs one timeout, not one per query.

use crate::epoll::{self, Epoll, Token};
use crate::net::Net;
use crate::ratelog::RateLog;
use crate::resolv::ResolvConf;
use crate::slab::Slab;
use crate::udp_nat::{connected_udp, new_smol_socket};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::{self, UdpMetadata};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const KIND: u8 = 5;
pub const MAX_QUERIES: usize = 256;
pub const SERVER_TIMEOUT: Duration = Duration::from_millis(1500);

struct Query {
    guest: SocketAddr,
    /// The stack socket (gateway address) the query came to, which answers.
    via: usize,
    packet: Vec<u8>,
    servers: Vec<SocketAddr>,
    /// Index into `servers` of the one asked now, and how many were asked.
    current: usize,
    asked: usize,
    host: Option<UdpSocket>,
    deadline: Instant,
}

pub struct Dns {
    /// A stack socket on port 53 of each gateway address (IPv4, and IPv6
    /// with `--ipv6`).
    listeners: Vec<(SocketHandle, IpAddr)>,
    dirty: bool,
    queries: Slab<Query>,
    readable: Vec<u32>,
    resolv: ResolvConf,
    preferred: Option<SocketAddr>,
    scratch: Vec<u8>,
    max_queries: usize,
    log: RateLog,
}

impl Dns {
    pub fn new(net: &mut Net, resolv: ResolvConf, max_queries: usize) -> Dns {
        let mut gateways = vec![IpAddr::V4(net.plan.gateway)];
        if let Some(p6) = &net.plan.ipv6 {
            gateways.push(IpAddr::V6(p6.gateway));
        }
        let listeners = gateways
            .into_iter()
            .map(|gateway| {
                let mut sock = new_smol_socket();
                sock.bind(IpListenEndpoint {
                    addr: Some(gateway.into()),
                    port: 53,
                })
                .expect("binding a fresh socket");
                (net.sockets.add(sock), gateway)
            })
            .collect();
        Dns {
            listeners,
            dirty: false,
            queries: Slab::default(),
            readable: Vec::new(),
            resolv,
            preferred: None,
            scratch: vec![0; 65536],
            max_queries,
            log: RateLog::new(),
        }
    }

    pub fn mark(&mut self) {
        self.dirty = true;
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// The nameservers for a new connection or query, the preferred first.
    pub fn servers(&mut self) -> Vec<SocketAddr> {
        let mut servers = self.resolv.servers().to_vec();
        if let Some(p) = self.preferred {
            if let Some(pos) = servers.iter().position(|s| *s == p) {
                servers[..=pos].rotate_right(1);
            }
        }
        servers
    }

    pub fn on_event(&mut self, token: Token) {
        if self
            .queries
            .get_mut(token.index, token.generation)
            .is_some()
        {
            self.readable.push(token.index);
        }
    }

    pub fn service(&mut self, net: &mut Net, epoll: &Epoll) {
        if std::mem::take(&mut self.dirty) {
            self.take_queries(net, epoll);
        }
        for i in std::mem::take(&mut self.readable) {
            self.read_answer(net, epoll, i);
        }
    }

    fn take_queries(&mut self, net: &mut Net, epoll: &Epoll) {
        for via in 0..self.listeners.len() {
            self.take_queries_from(net, epoll, via);
        }
    }

    fn take_queries_from(&mut self, net: &mut Net, epoll: &Epoll, via: usize) {
        loop {
            let sock = net.sockets.get_mut::<udp::Socket>(self.listeners[via].0);
            let Ok((payload, meta)) = sock.recv() else {
                break;
            };
            let guest = SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port);
            if self.queries.len() >= self.max_queries {
                self.log.log(format_args!(
                    "DNS query from {guest} dropped: {} queries in flight, the limit",
                    self.max_queries
                ));
                continue;
            }
            let packet = payload.to_vec();
            let servers = self.servers();
            if servers.is_empty() {
                self.log.log(format_args!(
                    "DNS query from {guest} dropped: no nameserver in the host's /etc/resolv.conf"
                ));
                continue;
            }
            let (index, _) = self.queries.insert(Query {
                guest,
                via,
                packet,
                servers,
                current: 0,
                asked: 0,
                host: None,
                deadline: Instant::now(),
            });
            self.ask_next(epoll, index);
        }
    }

    /// Sends query `i` to its next nameserver, or gives it up.
    fn ask_next(&mut self, epoll: &Epoll, i: u32) {
        let generation = self.queries.generation(i);
        loop {
            let Some(q) = self.queries.get_index_mut(i) else {
                return;
            };
            if q.asked >= q.servers.len() {
                // Nobody answered: the guest's resolver retries or fails.
                self.queries.remove(i);
                return;
            }
            q.current = q.asked;
            q.asked += 1;
            let server = q.servers[q.current];
            let Ok(host) = connected_udp(server) else {
                continue;
            };
            if epoll
                .add(
                    host.as_raw_fd(),
                    epoll::IN | epoll::ET,
                    Token::new(KIND, i, generation),
                )
                .is_err()
            {
                continue;
            }
            match host.send(&q.packet) {
                Ok(_) => {
                    q.host = Some(host);
                    q.deadline = Instant::now() + SERVER_TIMEOUT;
                    return;
                }
                Err(_) => continue,
            }
        }
    }

    fn read_answer(&mut self, net: &mut Net, epoll: &Epoll, i: u32) {
        let Some(q) = self.queries.get_index_mut(i) else {
            return;
        };
        let Some(host) = &q.host else { return };
        match host.recv(&mut self.scratch) {
            Ok(n) => {
                let (handle, gateway) = self.listeners[q.via];
                let sock = net.sockets.get_mut::<udp::Socket>(handle);
                let meta = UdpMetadata {
                    endpoint: IpEndpoint::new(q.guest.ip().into(), q.guest.port()),
                    local_address: Some(gateway.into()),
                    meta: Default::default(),
                };
                let _ = sock.send_slice(&self.scratch[..n], meta);
                self.preferred = Some(q.servers[q.current]);
                self.queries.remove(i);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Refused (nothing listens there) or another error: next server.
            Err(_) => self.ask_next(epoll, i),
        }
    }

    /// Moves on from nameservers that did not answer in time; returns when
    /// the next deadline is.
    pub fn housekeeping(&mut self, epoll: &Epoll, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for i in self.queries.indices() {
            let late = self
                .queries
                .get_index_mut(i)
                .is_some_and(|q| q.deadline <= now);
            if late {
                self.ask_next(epoll, i);
            }
            if let Some(q) = self.queries.get_index_mut(i) {
                next = Some(next.map_or(q.deadline, |n| n.min(q.deadline)));
            }
        }
        next
    }
}
