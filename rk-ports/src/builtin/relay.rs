//! A worker's event loop: one epoll over the control channel, the host
//! sockets it was given, and every relayed connection and UDP flow.

use super::pipes::PipePool;
use super::source::Inside;
use super::tcp::{would_block, Conn, State};
use super::udp::{Flow, UdpPort, FLOW_TIMEOUT, MAX_FLOWS_PER_PORT};
use super::wire::{FromWorker, ToWorker};
use crate::sys::{Epoll, ET, EXCLUSIVE, IN, OUT, RDHUP};
use rk_driver::{Channel, ChannelError};
use socket2::{SockAddr, Socket};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const CONTROL: u64 = u64::MAX;
/// Connections accepted per listener wake-up before others get a turn.
const ACCEPT_BATCH: usize = 64;
/// Datagrams read per socket wake-up.
const DATAGRAM_BATCH: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Listener {
    port: i64,
    sock: Socket,
    target: SocketAddr,
    preserve: bool,
}

enum Entry {
    Listener(Listener),
    Conn(Box<Conn>),
    Udp(Box<UdpPort>),
    Flow(Flow),
}

impl Entry {
    fn port(&self) -> i64 {
        match self {
            Entry::Listener(l) => l.port,
            Entry::Conn(c) => c.port,
            Entry::Udp(u) => u.port,
            Entry::Flow(f) => f.port,
        }
    }
}

pub struct Relay {
    epoll: Epoll,
    control: Channel,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    pipes: PipePool,
    inside: Inside,
    capacity: usize,
    /// Connections and UDP flows open now.
    active: usize,
    busy: bool,
    full: bool,
    paused: bool,
    refuse_when_full: bool,
    run_again: Vec<usize>,
    datagram: Vec<u8>,
    last_sweep: Instant,
}

fn token(slot: usize, side: u64) -> u64 {
    ((slot as u64) << 1) | side
}

impl Relay {
    pub fn new(control: Channel, capacity: usize, inside: Inside) -> std::io::Result<Relay> {
        let epoll = Epoll::new()?;
        epoll.add(control.as_fd(), IN, CONTROL)?;
        Ok(Relay {
            epoll,
            control,
            slots: Vec::new(),
            free: Vec::new(),
            pipes: PipePool::default(),
            inside,
            capacity,
            active: 0,
            busy: false,
            full: false,
            paused: false,
            refuse_when_full: false,
            run_again: Vec::new(),
            datagram: vec![0u8; 65536],
            last_sweep: Instant::now(),
        })
    }

    /// Tells the parent the worker is ready; `false` if it is gone.
    pub fn ready(&self) -> bool {
        self.control
            .send(
                &FromWorker::Ready {
                    capacity: self.capacity,
                },
                &[],
            )
            .is_ok()
    }

    /// Serves until the parent goes away.
    pub fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let timeout = if !self.run_again.is_empty() {
                0
            } else if self.has_flows() {
                SWEEP_EVERY.as_millis() as i32
            } else {
                -1
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("[rootlesskit:port-worker] error: epoll: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let tok = ev.u64;
                if tok == CONTROL {
                    if !self.on_control() {
                        return;
                    }
                } else {
                    self.on_event((tok >> 1) as usize, Some((tok & 1, ev.events)));
                }
            }
            for slot in std::mem::take(&mut self.run_again) {
                self.on_event(slot, None);
            }
            if self.has_flows() && self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep_flows();
            }
            self.update_load();
        }
    }

    fn has_flows(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Some(Entry::Udp(u)) if !u.flows.is_empty()))
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

    /// Drops an entry (closing its sockets, which also takes them out of
    /// the epoll set).
    fn close(&mut self, slot: usize) {
        let Some(e) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        match e {
            Entry::Conn(c) => {
                self.active -= 1;
                if let Some(ip) = c.routed {
                    self.inside.release(ip);
                }
            }
            Entry::Flow(f) => {
                self.active -= 1;
                if let Some(ip) = f.routed {
                    self.inside.release(ip);
                }
                if let Some(Some(Entry::Udp(u))) = self.slots.get_mut(f.owner) {
                    u.flows.remove(&f.client);
                }
            }
            Entry::Udp(u) => {
                for (_, flow) in u.flows {
                    self.close(flow);
                }
            }
            Entry::Listener(_) => {}
        }
    }

    /// `ready` is the side (0 host, 1 inside) and epoll events that woke
    /// us; `None` runs everything.
    fn on_event(&mut self, slot: usize, ready: Option<(u64, u32)>) {
        let Some(Some(entry)) = self.slots.get_mut(slot) else {
            return;
        };
        match entry {
            Entry::Listener(_) => self.accept(slot),
            Entry::Conn(c) => match c.pump(&mut self.pipes, directions(ready)) {
                State::Open => {}
                State::Busy => self.run_again.push(slot),
                State::Closed => self.close(slot),
            },
            Entry::Udp(_) => self.datagrams_from_clients(slot),
            Entry::Flow(_) => self.datagrams_from_inside(slot),
        }
    }

    fn accept(&mut self, slot: usize) {
        for _ in 0..ACCEPT_BATCH {
            if self.active >= self.capacity && !self.refuse_when_full {
                self.pause();
                return;
            }
            let Some(Some(Entry::Listener(l))) = self.slots.get(slot) else {
                return;
            };
            let (host, peer) = match l.sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok(x) => x,
                Err(e) if would_block(&e) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.pause();
                    return;
                }
                // ECONNABORTED and the like concern that one connection.
                Err(_) => continue,
            };
            let (port, target, preserve) = (l.port, l.target, l.preserve);
            if self.active >= self.capacity {
                // Full, and no other worker will take it: refuse cleanly.
                let _ = host.set_linger(Some(Duration::ZERO));
                continue;
            }
            let _ = host.set_tcp_nodelay(true);
            let source = if preserve { peer.as_socket() } else { None };
            let (inside, connecting, routed) = match self.inside.connect_tcp(target, source) {
                Ok(x) => x,
                Err(_) => {
                    // Nothing listens inside: the client sees a reset, as
                    // it would connecting there directly.
                    let _ = host.set_linger(Some(Duration::ZERO));
                    continue;
                }
            };
            let mut conn = Box::new(Conn::new(port, host, inside, connecting));
            conn.routed = routed;
            let host_fd = conn.host.as_raw_fd();
            let inside_fd = conn.inside.as_raw_fd();
            let at = self.insert(Entry::Conn(conn));
            self.active += 1;
            let flags = IN | OUT | RDHUP | ET;
            // SAFETY: the descriptors belong to the entry just inserted.
            let (h, i) = unsafe {
                (
                    std::os::fd::BorrowedFd::borrow_raw(host_fd),
                    std::os::fd::BorrowedFd::borrow_raw(inside_fd),
                )
            };
            if self.epoll.add(h, flags, token(at, 0)).is_err()
                || self.epoll.add(i, flags, token(at, 1)).is_err()
            {
                self.close(at);
            }
        }
        // More may be waiting; the listener is level-triggered and wakes us again.
    }

    fn pause(&mut self) {
        if self.paused {
            return;
        }
        self.paused = true;
        for e in self.slots.iter().flatten() {
            if let Entry::Listener(l) = e {
                self.epoll.delete(l.sock.as_fd());
            }
        }
    }

    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        for (i, e) in self.slots.iter().enumerate() {
            if let Some(Entry::Listener(l)) = e {
                let _ = self.epoll.add(l.sock.as_fd(), IN | EXCLUSIVE, token(i, 0));
            }
        }
    }

    /// Tells the parent when the worker gets busy (so it can start
    /// another) or is no longer; resumes accepting when there is room.
    fn update_load(&mut self) {
        let busy = if self.busy {
            self.active * 10 >= self.capacity * 6
        } else {
            self.active * 10 >= self.capacity * 8
        };
        let full = self.active >= self.capacity;
        if busy != self.busy || full != self.full {
            self.busy = busy;
            self.full = full;
            let _ = self.control.send(
                &FromWorker::Load {
                    active: self.active,
                    busy,
                    full,
                },
                &[],
            );
        }
        self.listen_if_room();
    }

    /// Keeps the listeners registered exactly while this worker takes
    /// connections: a full worker must not be woken for a connection that
    /// another worker with room could take (EPOLLEXCLUSIVE wakes only some).
    fn listen_if_room(&mut self) {
        let take = self.active < self.capacity || self.refuse_when_full;
        if take {
            self.resume();
        } else {
            self.pause();
        }
    }

    /// One message from the parent; `false` when the parent is gone.
    fn on_control(&mut self) -> bool {
        let (msg, mut fds): (ToWorker, Vec<OwnedFd>) = match self.control.recv(None) {
            Ok(m) => m,
            Err(ChannelError::Closed) => return false,
            Err(ChannelError::Decode(e)) => {
                eprintln!("[rootlesskit:port-worker] error: bad message from the parent: {e}");
                return true;
            }
            Err(_) => return false,
        };
        let reply = match msg {
            ToWorker::Add {
                id,
                udp,
                target,
                preserve_source,
            } => match fds.pop() {
                Some(fd) => match self.add(id, udp, target, preserve_source, fd) {
                    Ok(()) => FromWorker::Added { id },
                    Err(e) => FromWorker::Failed {
                        id,
                        message: e.to_string(),
                    },
                },
                None => FromWorker::Failed {
                    id,
                    message: "add without a socket".into(),
                },
            },
            ToWorker::Remove { id } => {
                let slots: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| self.slots[i].as_ref().is_some_and(|e| e.port() == id))
                    .collect();
                for s in slots {
                    self.close(s);
                }
                FromWorker::Removed { id }
            }
            ToWorker::Limit { refuse_when_full } => {
                self.refuse_when_full = refuse_when_full;
                self.listen_if_room();
                return true;
            }
            ToWorker::Start { .. } => FromWorker::Failed {
                id: 0,
                message: "start again: the worker has already started".into(),
            },
        };
        self.control.send(&reply, &[]).is_ok()
    }

    fn add(
        &mut self,
        port: i64,
        udp: bool,
        target: SocketAddr,
        preserve: bool,
        fd: OwnedFd,
    ) -> std::io::Result<()> {
        let sock = Socket::from(fd);
        sock.set_nonblocking(true)?;
        let raw = sock.as_raw_fd();
        let (entry, flags) = if udp {
            (
                Entry::Udp(Box::new(UdpPort::new(port, sock, target, preserve))),
                IN,
            )
        } else {
            (
                Entry::Listener(Listener {
                    port,
                    sock,
                    target,
                    preserve,
                }),
                IN | EXCLUSIVE,
            )
        };
        let at = self.insert(entry);
        if udp || !self.paused {
            // SAFETY: the descriptor belongs to the entry just inserted.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            if let Err(e) = self.epoll.add(fd, flags, token(at, 0)) {
                self.close(at);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Datagrams from clients on the host: each client address gets a flow
    /// (its own socket inside), so that answers find their way back.
    fn datagrams_from_clients(&mut self, slot: usize) {
        for _ in 0..DATAGRAM_BATCH {
            let Some(Some(Entry::Udp(u))) = self.slots.get(slot) else {
                return;
            };
            // SAFETY: recv_from only writes initialised bytes into the buffer.
            let buf = unsafe {
                &mut *(self.datagram.as_mut_slice() as *mut [u8]
                    as *mut [std::mem::MaybeUninit<u8>])
            };
            let (n, from) = match u.sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if would_block(&e) => return,
                Err(_) => continue,
            };
            let Some(client) = from.as_socket() else {
                continue;
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
                let _ = match f.routed {
                    Some(_) => f
                        .sock
                        .send_to(&self.datagram[..n], &SockAddr::from(f.target)),
                    None => f.sock.send(&self.datagram[..n]),
                };
            }
        }
    }

    fn new_flow(&mut self, owner: usize, client: SocketAddr) -> Option<usize> {
        let Some(Some(Entry::Udp(u))) = self.slots.get(owner) else {
            return None;
        };
        let (port, target, preserve) = (u.port, u.target, u.preserve);
        if u.flows.len() >= MAX_FLOWS_PER_PORT {
            // Make room: the flow idle the longest goes.
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
        if self.active >= self.capacity {
            return None;
        }
        let source = if preserve { Some(client) } else { None };
        let (sock, routed) = self.inside.connect_udp(target, source).ok()?;
        let raw = sock.as_raw_fd();
        let at = self.insert(Entry::Flow(Flow {
            port,
            owner,
            client,
            target,
            sock,
            last: Instant::now(),
            routed,
        }));
        self.active += 1;
        if let Some(Some(Entry::Udp(u))) = self.slots.get_mut(owner) {
            u.flows.insert(client, at);
        }
        // SAFETY: the descriptor belongs to the entry just inserted.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        if self.epoll.add(fd, IN, token(at, 1)).is_err() {
            self.close(at);
            return None;
        }
        Some(at)
    }

    /// Answers from inside go back to the flow's client.
    fn datagrams_from_inside(&mut self, slot: usize) {
        for _ in 0..DATAGRAM_BATCH {
            let Some(Some(Entry::Flow(f))) = self.slots.get_mut(slot) else {
                return;
            };
            let n = match (&f.sock).recv_from_buf(&mut self.datagram) {
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                // ECONNREFUSED: nothing listens inside (yet); keep the flow.
                Err(_) => return,
            };
            f.last = Instant::now();
            let (owner, client) = (f.owner, f.client);
            if let Some(Some(Entry::Udp(u))) = self.slots.get(owner) {
                let _ = u.sock.send_to(&self.datagram[..n], &SockAddr::from(client));
            }
        }
    }

    fn sweep_flows(&mut self) {
        self.last_sweep = Instant::now();
        let idle: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Some(Entry::Flow(f)) if f.last.elapsed() >= FLOW_TIMEOUT => Some(i),
                _ => None,
            })
            .collect();
        for i in idle {
            self.close(i);
        }
    }
}

/// Which directions of a connection an event can move: (host→inside,
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

/// `recv` into a plain byte buffer.
trait RecvBuf {
    fn recv_from_buf(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl RecvBuf for &Socket {
    fn recv_from_buf(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(&mut &**self, buf)
    }
}
