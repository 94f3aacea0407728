//! One relay for forwarded ports, used by the builtin port driver's
//! worker (`rootlesskit-port-builtin`) and by rk-pasta's own implicit
//! forwarding: one epoll over the host's listening TCP and bound UDP
//! sockets, every relayed connection and every UDP flow, all
//! non-blocking, on one thread whatever the number of connections.
//!
//! - TCP: each accepted connection is joined to a new connection inside
//!   the namespace; each direction is spliced through a pipe (see
//!   [`splice`]), so the relay never looks at the bytes.
//! - UDP: datagrams to a host port go, per client address, through a
//!   socket of their own inside (a "flow"), so that answers find their way
//!   back; they go back from the host's port.
//!
//! What differs between the users is where sockets inside come from and
//! whether they carry the client's address: that is the [`Inside`] trait.
//! The caller's own descriptors (a control channel, a stop signal) join the
//! same epoll with [`Relay::watch`], and [`Relay::turn`] reports them.

mod net;
mod splice;

pub use net::{accept, connect, reset_on_close, set_nodelay};

use crate::epoll::{self, Epoll, ET, IN, OUT, RDHUP};
use splice::{Conn, Pipes, State};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Connections accepted, or datagrams read, per wake-up of one socket.
const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 65536;
/// Flows per forwarded UDP port; the one idle longest makes room.
pub const MAX_FLOWS_PER_PORT: usize = 1024;
/// How long listeners rest when the process is out of descriptors or
/// memory (the connections wait in the backlog meanwhile).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// Tokens below this are the caller's ([`Relay::watch`]).
pub const FIRST_TOKEN: u64 = 16;

/// Where the relay's sockets inside come from.
pub trait Inside {
    /// A new socket inside for `target`'s family, non-blocking and
    /// close-on-exec: TCP if `stream`, else UDP.
    fn socket(&mut self, target: SocketAddr, stream: bool) -> io::Result<OwnedFd>;

    /// Binds `fd`, about to connect to `to`, to the client's address
    /// `from` where that can be done, so that the server inside sees the
    /// client. Returns the client address when a route back to it was set
    /// up for this socket, to [`release`](Self::release) when it closes; a
    /// UDP socket with one stays unconnected and sends with sendto (a
    /// server bound to a wildcard address answers a non-local client from
    /// the address routing picks, which a connected socket would refuse).
    fn bind_client(&mut self, _: BorrowedFd, _to: SocketAddr, _from: SocketAddr) -> Option<IpAddr> {
        None
    }

    /// A socket [`bind_client`](Self::bind_client) routed `client` for is
    /// closed: the route back may go.
    fn release(&mut self, _client: IpAddr) {}
}

/// A socket inside, connected or connecting.
struct InsideSocket {
    fd: OwnedFd,
    /// TCP: the connect is still in progress.
    connecting: bool,
    /// The client address routed back to this socket.
    routed: Option<IpAddr>,
}

/// A forwarded port: where its connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The caller's name for the port (to [`Relay::stop`] it).
    pub tag: u64,
    pub target: SocketAddr,
    /// Ask [`Inside::bind_client`] to keep the client's address.
    pub keep_client_address: bool,
}

/// How much the relay holds, and how.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections and UDP flows at most; at the limit the listeners rest
    /// (or refuse, see [`Relay::set_refuse_when_full`]).
    pub capacity: usize,
    /// A UDP client silent this long is forgotten.
    pub flow_idle: Duration,
    /// Other processes accept on the same listeners: wake only one of
    /// them per connection (EPOLLEXCLUSIVE).
    pub shared_listeners: bool,
}

struct UdpPort {
    fwd: Forward,
    sock: OwnedFd,
    /// Client address → slot of its flow.
    flows: HashMap<SocketAddr, usize>,
}

struct Flow {
    tag: u64,
    /// Slot of the [`UdpPort`].
    owner: usize,
    client: SocketAddr,
    target: SocketAddr,
    sock: OwnedFd,
    last: Instant,
    routed: Option<IpAddr>,
}

enum Entry {
    Listener { fwd: Forward, sock: OwnedFd },
    Conn(Box<Conn>),
    Udp(UdpPort),
    Flow(Flow),
}

impl Entry {
    fn tag(&self) -> u64 {
        match self {
            Entry::Listener { fwd, .. } => fwd.tag,
            Entry::Conn(c) => c.tag,
            Entry::Udp(u) => u.fwd.tag,
            Entry::Flow(f) => f.tag,
        }
    }

    /// The host socket of a forwarded port (not of a connection or flow).
    fn port_socket(&self) -> Option<&OwnedFd> {
        match self {
            Entry::Listener { sock, .. } | Entry::Udp(UdpPort { sock, .. }) => Some(sock),
            _ => None,
        }
    }
}

/// The caller's tokens that were ready in a [`Relay::turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready(u16);

impl Ready {
    pub fn contains(self, token: u64) -> bool {
        token < FIRST_TOKEN && self.0 & (1 << token) != 0
    }
}

pub struct Relay<I> {
    epoll: Epoll,
    inside: I,
    limits: Limits,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    pipes: Pipes,
    /// Slots that ran out of budget: run again without waiting.
    run_again: Vec<usize>,
    datagram: Vec<u8>,
    events: Vec<epoll::Event>,
    /// Connections and flows open now, and how many of them are flows.
    active: usize,
    flows: usize,
    /// Whether the listeners are in the epoll set.
    accepting: bool,
    /// Accept even when full, to refuse at once (reset) rather than leave
    /// clients waiting in the backlog.
    refuse_when_full: bool,
    backoff_until: Option<Instant>,
    next_sweep: Instant,
}

fn token(slot: usize, side: u64) -> u64 {
    FIRST_TOKEN + ((slot as u64) << 1 | side)
}

/// Which directions of a connection an event can have moved: (host→inside,
/// inside→host). Readable host or writable inside moves the first;
/// readable inside or writable host the second; errors and hang-ups both.
fn directions(ready: Option<(u64, u32)>) -> (bool, bool) {
    let Some((side, ev)) = ready else {
        return (true, true);
    };
    if ev & !(IN | OUT) != 0 {
        return (true, true);
    }
    let (readable, writable) = (ev & IN != 0, ev & OUT != 0);
    if side == 0 {
        (readable, writable)
    } else {
        (writable, readable)
    }
}

impl<I: Inside> Relay<I> {
    pub fn new(inside: I, limits: Limits) -> io::Result<Relay<I>> {
        Ok(Relay {
            epoll: Epoll::new()?,
            inside,
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            pipes: Pipes::default(),
            run_again: Vec::new(),
            datagram: vec![0u8; MAX_DATAGRAM],
            events: epoll::events(256),
            active: 0,
            flows: 0,
            accepting: true,
            refuse_when_full: false,
            backoff_until: None,
            next_sweep: Instant::now() + Self::sweep_interval(&limits),
        })
    }

    fn sweep_interval(limits: &Limits) -> Duration {
        (limits.flow_idle / 18).max(Duration::from_millis(100))
    }

    /// Adds the caller's `fd` (readable) to the epoll set; [`Relay::turn`]
    /// reports `token`, which must be below [`FIRST_TOKEN`].
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        if token >= FIRST_TOKEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("relay: caller tokens are below {FIRST_TOKEN}, not {token}"),
            ));
        }
        self.epoll.add(fd, IN, token)
    }

    pub fn inside(&mut self) -> &mut I {
        &mut self.inside
    }

    /// Connections and UDP flows open now.
    pub fn active(&self) -> usize {
        self.active
    }

    pub fn capacity(&self) -> usize {
        self.limits.capacity
    }

    /// At capacity, accept and reset new connections (`true`) instead of
    /// leaving them in the backlog for another relay with room (`false`).
    pub fn set_refuse_when_full(&mut self, refuse: bool) {
        self.refuse_when_full = refuse;
        self.sync_listeners();
    }

    /// Accepts connections on `sock` (a listening TCP socket) for `fwd`.
    pub fn listen(&mut self, sock: OwnedFd, fwd: Forward) -> io::Result<()> {
        crate::fdio::set_nonblocking(&sock)?;
        let raw = sock.as_raw_fd();
        let at = self.insert(Entry::Listener { fwd, sock });
        if self.accepting {
            // SAFETY: the descriptor belongs to the entry just inserted.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            if let Err(e) = self.epoll.add(fd, self.listener_events(), token(at, 0)) {
                self.close(at);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Receives datagrams on `sock` (a bound UDP socket) for `fwd`.
    pub fn receive(&mut self, sock: OwnedFd, fwd: Forward) -> io::Result<()> {
        crate::fdio::set_nonblocking(&sock)?;
        let raw = sock.as_raw_fd();
        let at = self.insert(Entry::Udp(UdpPort {
            fwd,
            sock,
            flows: HashMap::new(),
        }));
        // SAFETY: the descriptor belongs to the entry just inserted.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if let Err(e) = self.epoll.add(fd, IN, token(at, 0)) {
            self.close(at);
            return Err(e);
        }
        Ok(())
    }

    /// Stops forwarding the ports tagged `tag`: their host sockets close,
    /// and their UDP flows; their open TCP connections too unless
    /// `keep_connections`.
    pub fn stop(&mut self, tag: u64, keep_connections: bool) {
        let slots: Vec<usize> = (0..self.slots.len())
            .filter(|&i| match &self.slots[i] {
                Some(e) if e.tag() == tag => !keep_connections || e.port_socket().is_some(),
                _ => false,
            })
            .collect();
        for slot in slots {
            self.close(slot);
        }
    }

    /// Waits for events at most `wait` (`None`: until there are some),
    /// relays what they allow, and returns which of the caller's tokens
    /// were ready.
    pub fn turn(&mut self, wait: Option<Duration>) -> io::Result<Ready> {
        let now = Instant::now();
        let mut deadline = wait.map(|w| now + w);
        if self.flows > 0 {
            deadline = Some(deadline.map_or(self.next_sweep, |d| d.min(self.next_sweep)));
        }
        if let Some(b) = self.backoff_until {
            deadline = Some(deadline.map_or(b, |d| d.min(b)));
        }
        let timeout = if !self.run_again.is_empty() {
            0
        } else {
            epoll::timeout_ms(deadline.map(|d| d.saturating_duration_since(now)))
        };
        let mut events = std::mem::take(&mut self.events);
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        };
        let mut ready = Ready::default();
        for ev in &events[..n] {
            let (tok, bits) = (ev.u64, ev.events);
            if tok < FIRST_TOKEN {
                ready.0 |= 1 << tok;
            } else {
                let raw = tok - FIRST_TOKEN;
                self.run((raw >> 1) as usize, Some((raw & 1, bits)));
            }
        }
        self.events = events;
        for slot in std::mem::take(&mut self.run_again) {
            self.run(slot, None);
        }
        if self.flows > 0 && Instant::now() >= self.next_sweep {
            self.sweep_flows();
        }
        self.sync_listeners();
        Ok(ready)
    }

    fn listener_events(&self) -> u32 {
        if self.limits.shared_listeners {
            IN | EXCLUSIVE
        } else {
            IN
        }
    }

    /// Keeps the listeners in the epoll set exactly while this relay takes
    /// connections: not while it rests after running out of descriptors,
    /// nor while it is full (unless it refuses): a level-triggered listener
    /// would spin the loop, and with shared listeners another relay with
    /// room should get the connection.
    fn sync_listeners(&mut self) {
        let now = Instant::now();
        if self.backoff_until.is_some_and(|t| now >= t) {
            self.backoff_until = None;
        }
        let take = self.backoff_until.is_none()
            && (self.active < self.limits.capacity || self.refuse_when_full);
        if take == self.accepting {
            return;
        }
        self.accepting = take;
        let events = self.listener_events();
        for (i, e) in self.slots.iter().enumerate() {
            if let Some(Entry::Listener { sock, .. }) = e {
                if take {
                    let _ = self.epoll.add(sock.as_fd(), events, token(i, 0));
                } else {
                    self.epoll.delete(sock.as_fd());
                }
            }
        }
    }

    fn insert(&mut self, e: Entry) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(e);
                i
            }
            None => {
                self.slots.push(Some(e));
                self.slots.len() - 1
            }
        }
    }

    /// Closes a slot's sockets (which also takes them out of the epoll set).
    fn close(&mut self, slot: usize) {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        match entry {
            Entry::Conn(c) => {
                self.active -= 1;
                if let Some(ip) = c.routed {
                    self.inside.release(ip);
                }
            }
            Entry::Flow(f) => {
                self.active -= 1;
                self.flows -= 1;
                if let Some(ip) = f.routed {
                    self.inside.release(ip);
                }
                if let Some(Some(Entry::Udp(u))) = self.slots.get_mut(f.owner) {
                    if u.flows.get(&f.client) == Some(&slot) {
                        u.flows.remove(&f.client);
                    }
                }
            }
            Entry::Udp(u) => {
                for (_, flow) in u.flows {
                    self.close(flow);
                }
            }
            Entry::Listener { .. } => {}
        }
    }

    /// `ready`: the side (0 host, 1 inside) and the epoll events that woke
    /// the slot; `None` runs everything.
    fn run(&mut self, slot: usize, ready: Option<(u64, u32)>) {
        match self.slots.get_mut(slot) {
            Some(Some(Entry::Listener { .. })) => self.accept(slot),
            Some(Some(Entry::Conn(c))) => match c.pump(&mut self.pipes, directions(ready)) {
                State::Open => {}
                State::Busy => self.run_again.push(slot),
                State::Closed => self.close(slot),
            },
            Some(Some(Entry::Udp(_))) => self.datagrams_from_clients(slot),
            Some(Some(Entry::Flow(_))) => self.datagrams_from_inside(slot),
            _ => {}
        }
    }

    /// A socket inside to `target` (TCP if `stream`), bound to `client`
    /// where the forward keeps client addresses and [`Inside`] can.
    fn open_inside(
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

    fn full(&self) -> bool {
        self.active >= self.limits.capacity
    }

    fn accept(&mut self, slot: usize) {
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

    /// Datagrams from clients on the host: each client address gets a
    /// flow (its own socket inside), so that answers find their way back.
    fn datagrams_from_clients(&mut self, slot: usize) {
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
    fn datagrams_from_inside(&mut self, slot: usize) {
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
    fn sweep_flows(&mut self) {
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

#[cfg(test)]
mod tests;
