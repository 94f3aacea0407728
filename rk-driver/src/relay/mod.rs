//! One relay for forwarded ports, used by the builtin port driver's
//! worker (`rootlesskit-port-builtin`) and by rk-pasta's own implicit
//! forwarding: one epoll over the host's listening TCP and bound UDP
//! sockets, every relayed connection and every UDP flow, all
//! non-blocking, on one thread whatever the number of connections.
//!
//! - TCP: each accepted connection is joined to a new connection inside
//!   the namespace; each direction is spliced through a pipe (see
//!   `splice.rs`), so the relay never looks at the bytes.
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
mod tcp;
mod udp;

pub use net::{accept, connect, reset_on_close, set_nodelay};

use crate::epoll::{self, Epoll, IN, OUT};
use splice::{Conn, Pipes, State};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};
use udp::{Flow, UdpPort};

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

    fn full(&self) -> bool {
        self.active >= self.limits.capacity
    }
}

#[cfg(test)]
mod tests;
