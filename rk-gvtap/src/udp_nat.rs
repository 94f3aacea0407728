//! UDP through the NAT. A flow is one (guest address, destination) pair and
//! owns a host UDP socket connected to the destination, so that only its
//! answers come back, and an ICMP "port unreachable" outside turns into one
//! inside. smoltcp sockets, one per destination endpoint the guest talks to,
//! take the guest's datagrams (reassembling fragments) and send the answers
//! with the destination as their source (fragmenting them to the MTU).
//!
//! Forwarded host ports (`--port-driver=gvisor-tap-vsock`, `udp*`) make
//! flows the other way: each client of the port's host socket is a flow
//! whose stack endpoint is the client itself when the guest can answer it
//! (see `policy::visible_client`), else a port of the gateway. The guest's
//! answers to that endpoint go back through the port's socket to the
//! client.

use crate::epoll::{self, Epoll, Token};
use crate::net::Net;
use crate::ratelog::RateLog;
use crate::slab::Slab;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::{self, UdpMetadata};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KIND: u8 = 3;
/// At most this many UDP flows at once; datagrams of more are dropped.
pub const MAX_FLOWS: usize = 1024;
/// A flow with no datagram either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for flows to port 53 (DNS asks once and is done).
pub const DNS_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const LARGEST_DATAGRAM: usize = 65535;
/// Gateway ports for flows from forwarded ports' clients.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Datagrams read from a forwarded port per round.
const FORWARD_BATCH: usize = 256;

/// smoltcp UDP socket buffers: room for a few of the largest datagrams.
pub fn new_smol_socket() -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; 64],
            vec![0; 2 * LARGEST_DATAGRAM],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; 64],
            vec![0; 2 * LARGEST_DATAGRAM],
        ),
    )
}

struct Listener {
    handle: SocketHandle,
    flows: usize,
    created: Instant,
}

/// A stack UDP socket whose payload buffers are anonymous mappings, as a
/// TCP flow's are (see `mapped_alloc`): pages cost memory only once a
/// datagram touches them, and a flood of new destinations costs a page or
/// two per socket, not a malloc header page per buffer (measured: 18 MiB
/// for 1024 flows through malloc). `None` if there is no memory for it.
fn new_mapped_socket() -> Option<udp::Socket<'static>> {
    let buffer = || crate::mapped_alloc::zeroed_buffer(2 * LARGEST_DATAGRAM);
    let (rx, tx) = (buffer()?, buffer()?);
    // Slots for datagrams: the guest's are relayed one at a time, as each
    // reaches the stack; the host's wait for the tap (reading stops when
    // the slots are full).
    let sock = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], rx),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 32], tx),
    );
    Some(sock)
}

enum HostSide {
    /// A socket of its own, connected to the destination.
    Connected(UdpSocket),
    /// Forwarded port `id`'s socket; the guest's answers go to `client`.
    Forward {
        id: i64,
        socket: Arc<UdpSocket>,
        client: SocketAddr,
    },
}

struct Flow {
    /// The guest's end.
    guest: SocketAddr,
    /// The other end as the guest sees it (the stack's endpoint).
    dest: SocketAddr,
    host: HostSide,
    last: Instant,
    idle_limit: Duration,
}

/// A forwarded port whose datagrams could not all be taken yet.
struct PendingForward {
    id: i64,
    socket: Arc<UdpSocket>,
    target: SocketAddrV4,
}

pub struct UdpNat {
    listeners: HashMap<SocketAddr, Listener>,
    flows: Slab<Flow>,
    by_key: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Flows of forwarded ports, by (port id, client).
    by_client: HashMap<(i64, SocketAddr), u32>,
    pending: Vec<PendingForward>,
    next_port: u16,
    readable: Vec<u32>,
    scratch: Vec<u8>,
    max_flows: usize,
    limit_log: RateLog,
}

impl UdpNat {
    pub fn new(max_flows: usize) -> UdpNat {
        UdpNat {
            listeners: HashMap::new(),
            flows: Slab::default(),
            by_key: HashMap::new(),
            by_client: HashMap::new(),
            pending: Vec::new(),
            next_port: 0,
            readable: Vec::new(),
            scratch: vec![0; LARGEST_DATAGRAM],
            max_flows,
            limit_log: RateLog::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether a stack socket takes datagrams to `endpoint` already (the
    /// destination of a flow out, or the endpoint of a forwarded port's
    /// client).
    pub fn has_listener(&self, endpoint: SocketAddr) -> bool {
        self.listeners.contains_key(&endpoint)
    }

    /// A datagram to `dest` is about to reach the stack: make sure a socket
    /// takes it. `false` if the flow limit keeps it out: the caller drops
    /// it, so that a flood of new destinations makes no stack sockets
    /// either.
    pub fn before_datagram(&mut self, net: &mut Net, dest: SocketAddr) -> bool {
        if !self.listeners.contains_key(&dest)
            && (self.flows.len() >= self.max_flows || self.listeners.len() >= self.max_flows + 64)
        {
            self.limit_log.log(format_args!(
                "UDP to {dest} dropped: {} flows open, the limit",
                self.flows.len()
            ));
            return false;
        }
        self.ensure_listener(net, dest)
    }

    fn ensure_listener(&mut self, net: &mut Net, dest: SocketAddr) -> bool {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.listeners.entry(dest) {
            let Some(mut sock) = new_mapped_socket() else {
                return false;
            };
            let endpoint = IpListenEndpoint {
                addr: Some(dest.ip().into()),
                port: dest.port(),
            };
            if sock.bind(endpoint).is_err() {
                return false;
            }
            slot.insert(Listener {
                handle: net.sockets.add(sock),
                flows: 0,
                created: Instant::now(),
            });
        }
        true
    }

    /// Datagrams wait on forwarded port `id`'s `socket`: relay them to
    /// `target` inside, as far as the stack has room.
    pub fn relay_forwarded(
        &mut self,
        net: &mut Net,
        id: i64,
        socket: Arc<UdpSocket>,
        target: SocketAddrV4,
    ) {
        if self.read_forward(net, id, &socket, target) && !self.pending.iter().any(|p| p.id == id) {
            self.pending.push(PendingForward { id, socket, target });
        }
    }

    /// Relays datagrams from a forwarded port; `true` if some are left (no
    /// room in the stack, or the round's share was used).
    fn read_forward(
        &mut self,
        net: &mut Net,
        id: i64,
        socket: &Arc<UdpSocket>,
        target: SocketAddrV4,
    ) -> bool {
        let now = Instant::now();
        for _ in 0..FORWARD_BATCH {
            // Peek first: the client decides the flow, and a datagram the
            // stack has no room for stays in the kernel's queue.
            let (len, client) = match socket.peek_from(&mut self.scratch) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    if socket.recv_from(&mut self.scratch).is_err() {
                        return false;
                    }
                    continue;
                }
            };
            let index = match self.by_client.get(&(id, client)) {
                Some(&i) => Some(i),
                None => self.open_forward_flow(net, id, socket, client, target),
            };
            let Some(flow) = index.and_then(|i| self.flows.get_index_mut(i)) else {
                // No flow (the limit): drop the datagram.
                let _ = socket.recv_from(&mut self.scratch);
                continue;
            };
            let Some(listener) = self.listeners.get(&flow.dest) else {
                let _ = socket.recv_from(&mut self.scratch);
                continue;
            };
            let sock = net.sockets.get_mut::<udp::Socket>(listener.handle);
            if !sock.can_send() || sock.payload_send_capacity() - sock.send_queue() < len {
                return true;
            }
            let Ok((len, _)) = socket.recv_from(&mut self.scratch) else {
                return false;
            };
            flow.last = now;
            let meta = UdpMetadata {
                endpoint: IpEndpoint::new(flow.guest.ip().into(), flow.guest.port()),
                local_address: Some(flow.dest.ip().into()),
                meta: Default::default(),
            };
            let _ = sock.send_slice(&self.scratch[..len], meta);
        }
        true
    }

    /// A new client of forwarded port `id`.
    fn open_forward_flow(
        &mut self,
        net: &mut Net,
        id: i64,
        socket: &Arc<UdpSocket>,
        client: SocketAddr,
        target: SocketAddrV4,
    ) -> Option<u32> {
        if self.flows.len() >= self.max_flows {
            self.limit_log.log(format_args!(
                "UDP from {client} to forwarded port {id} dropped: {} flows open, the limit",
                self.max_flows
            ));
            return None;
        }
        let gateway = net.plan.gateway;
        let shown: SocketAddr = crate::policy::visible_client(&net.plan, client)
            .map(SocketAddr::V4)
            .filter(|c| !self.listeners.contains_key(c))
            .or_else(|| self.free_gateway_port(gateway))?;
        let target = SocketAddr::V4(target);
        if !self.ensure_listener(net, shown) {
            return None;
        }
        let (index, _) = self.flows.insert(Flow {
            guest: target,
            dest: shown,
            host: HostSide::Forward {
                id,
                socket: socket.clone(),
                client,
            },
            last: Instant::now(),
            idle_limit: IDLE_TIMEOUT,
        });
        self.by_key.insert((target, shown), index);
        self.by_client.insert((id, client), index);
        if let Some(l) = self.listeners.get_mut(&shown) {
            l.flows += 1;
        }
        Some(index)
    }

    /// A gateway endpoint no stack socket uses.
    fn free_gateway_port(&mut self, gateway: Ipv4Addr) -> Option<SocketAddr> {
        for _ in 0..EPHEMERAL_PORTS.len() {
            self.next_port = if self.next_port >= *EPHEMERAL_PORTS.end()
                || self.next_port < *EPHEMERAL_PORTS.start()
            {
                *EPHEMERAL_PORTS.start()
            } else {
                self.next_port + 1
            };
            let ep = SocketAddr::V4(SocketAddrV4::new(gateway, self.next_port));
            if !self.listeners.contains_key(&ep) {
                return Some(ep);
            }
        }
        None
    }

    /// Forwarded port `id` was removed: its flows end.
    pub fn remove_forward(&mut self, id: i64) {
        self.pending.retain(|p| p.id != id);
        for i in self.flows.indices() {
            let of_port = self
                .flows
                .get_index_mut(i)
                .is_some_and(|f| matches!(f.host, HostSide::Forward { id: fid, .. } if fid == id));
            if of_port {
                self.remove_flow(i);
            }
        }
    }

    fn remove_flow(&mut self, i: u32) {
        if let Some(f) = self.flows.remove(i) {
            self.by_key.remove(&(f.guest, f.dest));
            if let HostSide::Forward { id, client, .. } = f.host {
                self.by_client.remove(&(id, client));
            }
            if let Some(l) = self.listeners.get_mut(&f.dest) {
                l.flows -= 1;
            }
        }
    }

    /// The stack took a datagram to `dest`: relay it to the host now, so
    /// that a burst never overflows the socket's receive buffer.
    pub fn after_datagram(
        &mut self,
        net: &mut Net,
        epoll: &Epoll,
        dest: SocketAddr,
        target: impl Fn(IpAddr, SocketAddr) -> Option<SocketAddr>,
    ) {
        self.drain_guest(net, epoll, dest, &target, Instant::now());
    }

    pub fn on_event(&mut self, token: Token) {
        if self.flows.get_mut(token.index, token.generation).is_some() {
            self.readable.push(token.index);
        }
    }

    /// Relays the host's answers to the guest; `true` if work is left for
    /// the next round (the stack's send buffer was full).
    pub fn service(&mut self, net: &mut Net) -> bool {
        let now = Instant::now();
        let mut more = false;
        for p in std::mem::take(&mut self.pending) {
            if self.read_forward(net, p.id, &p.socket, p.target) {
                self.pending.push(p);
                more = true;
            }
        }
        let mut ready = std::mem::take(&mut self.readable);
        ready.sort_unstable();
        ready.dedup();
        let mut keep = Vec::new();
        for i in ready.drain(..) {
            if self.drain_host(net, i, now) {
                keep.push(i);
                more = true;
            }
        }
        self.readable = keep;
        more
    }

    fn drain_guest(
        &mut self,
        net: &mut Net,
        epoll: &Epoll,
        dest: SocketAddr,
        target: &impl Fn(IpAddr, SocketAddr) -> Option<SocketAddr>,
        now: Instant,
    ) {
        let Some(listener) = self.listeners.get(&dest) else {
            return;
        };
        let handle = listener.handle;
        loop {
            let sock = net.sockets.get_mut::<udp::Socket>(handle);
            let Ok((payload, meta)) = sock.recv() else {
                break;
            };
            let guest = SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port);
            let key = (guest, dest);
            let index = match self.by_key.get(&key) {
                Some(&i) => i,
                None => match self.open_flow(epoll, guest, dest, target) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let Some(flow) = self.flows.get_index_mut(index) else {
                continue;
            };
            flow.last = now;
            let sent = match &flow.host {
                HostSide::Connected(host) => host.send(payload),
                HostSide::Forward { socket, client, .. } => socket.send_to(payload, client),
            };
            match sent {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    if let Some(mac) = net.guest_mac {
                        crate::frames::udp_port_unreachable(&mut net.dev, mac, dest, guest);
                    }
                }
                // A full host queue drops the datagram, as a router would.
                Err(_) => {}
            }
        }
    }

    fn open_flow(
        &mut self,
        epoll: &Epoll,
        guest: SocketAddr,
        dest: SocketAddr,
        target: &impl Fn(IpAddr, SocketAddr) -> Option<SocketAddr>,
    ) -> Option<u32> {
        let to = target(guest.ip(), dest)?;
        if self.flows.len() >= self.max_flows {
            self.limit_log.log(format_args!(
                "UDP flow {guest} -> {dest} dropped: {} flows open, the limit",
                self.max_flows
            ));
            return None;
        }
        let host = match connected_udp(to) {
            Ok(s) => s,
            Err(e) => {
                self.limit_log
                    .log(format_args!("UDP flow {guest} -> {dest}: host socket: {e}"));
                return None;
            }
        };
        let (index, generation) = self.flows.vacant();
        epoll
            .add(
                host.as_raw_fd(),
                epoll::IN | epoll::ET,
                Token::new(KIND, index, generation),
            )
            .ok()?;
        let idle_limit = if dest.port() == 53 {
            DNS_IDLE_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        self.flows.insert(Flow {
            guest,
            dest,
            host: HostSide::Connected(host),
            last: Instant::now(),
            idle_limit,
        });
        self.by_key.insert((guest, dest), index);
        if let Some(l) = self.listeners.get_mut(&dest) {
            l.flows += 1;
        }
        Some(index)
    }

    /// Answers from the host to the guest; `true` if the stack had no room.
    fn drain_host(&mut self, net: &mut Net, i: u32, now: Instant) -> bool {
        let Some(flow) = self.flows.get_index_mut(i) else {
            return false;
        };
        let Some(listener) = self.listeners.get(&flow.dest) else {
            return false;
        };
        let HostSide::Connected(host) = &flow.host else {
            return false;
        };
        // Errors (ICMP errors queued on the socket) are consumed by the read
        // that reports them; more datagrams may follow.
        let mut errors = 0;
        while errors < 16 {
            let sock = net.sockets.get_mut::<udp::Socket>(listener.handle);
            if !sock.can_send()
                || sock.payload_send_capacity() - sock.send_queue() < LARGEST_DATAGRAM
            {
                return true;
            }
            match host.recv(&mut self.scratch) {
                Ok(n) => {
                    flow.last = now;
                    let meta = UdpMetadata {
                        endpoint: IpEndpoint::new(flow.guest.ip().into(), flow.guest.port()),
                        local_address: Some(flow.dest.ip().into()),
                        meta: Default::default(),
                    };
                    let _ = sock.send_slice(&self.scratch[..n], meta);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    if let Some(mac) = net.guest_mac {
                        crate::frames::udp_port_unreachable(
                            &mut net.dev,
                            mac,
                            flow.dest,
                            flow.guest,
                        );
                    }
                }
                Err(_) => errors += 1,
            }
        }
        false
    }

    /// Closes idle flows and sockets nobody uses any more.
    pub fn housekeeping(&mut self, net: &mut Net, now: Instant) {
        for i in self.flows.indices() {
            let idle = self
                .flows
                .get_index_mut(i)
                .is_some_and(|f| now.duration_since(f.last) > f.idle_limit);
            if idle {
                self.remove_flow(i);
            }
        }
        self.listeners.retain(|_, l| {
            let unused = l.flows == 0 && now.duration_since(l.created) > Duration::from_secs(1);
            if unused {
                net.sockets.remove(l.handle);
            }
            !unused
        });
    }
}

/// A non-blocking UDP socket connected to `to`.
pub fn connected_udp(to: SocketAddr) -> io::Result<UdpSocket> {
    if !crate::policy::host_may_reach(to) {
        return Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
    }
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any)?;
    s.set_nonblocking(true)?;
    s.connect(to)?;
    Ok(s)
}
