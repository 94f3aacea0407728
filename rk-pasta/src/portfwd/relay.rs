//! The forwarder's event loop: one epoll over the host's listening TCP and
//! bound UDP sockets, every forwarded connection and every UDP flow, all
//! non-blocking, on one thread whatever the number of connections.
//!
//! TCP: each accepted connection is joined to a new connection inside the
//! namespace; each direction is spliced through a pipe (the bytes never
//! enter user space), a pipe taken from a small pool only while bytes are
//! in flight, so idle connections hold no pipe. UDP: datagrams to the
//! host's port go, per client address, through a socket connected to the
//! server inside (a "flow"); its answers go back from the host's port.

use super::epoll::Epoll;
use super::nshelper::{Kind, NsSockets};
use super::sockets;
use super::splice::{Dir, Pipes, Progress};
use nix::sys::socket::{accept4, listen, setsockopt, sockopt, Backlog, SockFlag, SockType};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A UDP client silent this long is forgotten (pasta uses 180 s).
pub const FLOW_IDLE: Duration = Duration::from_secs(180);
/// Flows per forwarded UDP port; the one idle longest makes room.
const MAX_FLOWS_PER_PORT: usize = 1024;
/// Connections accepted, or datagrams read, per wake-up of one socket.
const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 65536;
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const ET: u32 = libc::EPOLLET as u32;
const RDHUP: u32 = libc::EPOLLRDHUP as u32;

fn would_block(e: nix::Error) -> bool {
    e == nix::Error::EAGAIN
}

struct Conn {
    host: OwnedFd,
    inside: OwnedFd,
    connecting: bool,
    up: Dir,
    down: Dir,
}

struct UdpPort {
    sock: OwnedFd,
    target: SocketAddr,
    flows: HashMap<SocketAddr, usize>,
}

struct Flow {
    owner: usize,
    client: SocketAddr,
    sock: OwnedFd,
    last: Instant,
}

enum Entry {
    Listener { sock: OwnedFd, target: SocketAddr },
    Conn(Box<Conn>),
    Udp(UdpPort),
    Flow(Flow),
}

/// The sockets of one forwarded port, to stop forwarding it.
#[derive(Debug)]
pub struct Forwarded {
    slots: Vec<usize>,
}

/// Tokens below this are the caller's (e.g. a stop signal).
pub const FIRST_TOKEN: u64 = 16;

pub struct Relay {
    epoll: Epoll,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    pipes: Pipes,
    run_again: Vec<usize>,
    datagram: Vec<u8>,
    /// Connections and flows open now.
    pub active: usize,
    /// Listeners taken out of the epoll set while the process is out of
    /// descriptors (else the level-triggered listener would spin the
    /// loop), and when to take them back.
    paused: Vec<(usize, Instant)>,
}

/// How long a listener rests when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn token(slot: usize, side: u64) -> u64 {
    FIRST_TOKEN + ((slot as u64) << 1 | side)
}

impl Relay {
    pub fn new() -> io::Result<Relay> {
        Ok(Relay {
            epoll: Epoll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            pipes: Pipes::default(),
            run_again: Vec::new(),
            datagram: vec![0u8; MAX_DATAGRAM],
            active: 0,
            paused: Vec::new(),
        })
    }

    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Whether work is left over from the last round (wait no longer).
    pub fn has_more(&self) -> bool {
        !self.run_again.is_empty()
    }

    /// When a paused listener is due back, if any is paused.
    pub fn next_resume(&self) -> Option<Instant> {
        self.paused.iter().map(|(_, at)| *at).min()
    }

    /// Takes back the listeners whose rest is over.
    pub fn resume_listeners(&mut self) {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = self.paused.drain(..).partition(|(_, at)| *at <= now);
        self.paused = rest;
        for (slot, _) in due {
            if let Some(Some(Entry::Listener { sock, .. })) = self.slots.get(slot) {
                let _ = self.epoll.add(sock.as_fd(), IN, token(slot, 0));
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
            Entry::Conn(_) => self.active -= 1,
            Entry::Flow(f) => {
                self.active -= 1;
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

    /// Listens on the host's `port` (IPv4, and IPv6 where the host has
    /// it) and joins each connection to `target` inside. Open connections
    /// outlive [`Relay::stop`].
    pub fn forward_tcp(&mut self, port: u16, target: SocketAddr) -> io::Result<Forwarded> {
        let mut slots = Vec::new();
        for (i, addr) in sockets::host_addresses(port).into_iter().enumerate() {
            let sock = match sockets::bound(SockType::Stream, addr)
                .and_then(|fd| Ok(listen(&fd, Backlog::MAXCONN).map(|()| fd)?))
                .and_then(|fd| set_nonblocking(&fd).map(|()| fd))
            {
                Ok(fd) => fd,
                // IPv4 is what matters; a host without IPv6 still forwards.
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            slots.push(self.register(Entry::Listener { sock, target }, IN)?);
        }
        Ok(Forwarded { slots })
    }

    /// Receives datagrams on the host's `port` for `target` inside.
    pub fn forward_udp(&mut self, port: u16, target: SocketAddr) -> io::Result<Forwarded> {
        let mut slots = Vec::new();
        for (i, addr) in sockets::host_addresses(port).into_iter().enumerate() {
            let sock = match sockets::bound(SockType::Datagram, addr)
                .and_then(|fd| set_nonblocking(&fd).map(|()| fd))
            {
                Ok(fd) => fd,
                Err(e) if i == 0 => {
                    self.stop(Forwarded { slots });
                    return Err(e);
                }
                Err(_) => continue,
            };
            let entry = Entry::Udp(UdpPort {
                sock,
                target,
                flows: HashMap::new(),
            });
            slots.push(self.register(entry, IN)?);
        }
        Ok(Forwarded { slots })
    }

    fn register(&mut self, entry: Entry, events: u32) -> io::Result<usize> {
        let raw = match &entry {
            Entry::Listener { sock, .. } => sock.as_raw_fd(),
            Entry::Udp(u) => u.sock.as_raw_fd(),
            _ => unreachable!("only host sockets are registered here"),
        };
        let at = self.insert(entry);
        // SAFETY: the descriptor belongs to the entry just inserted.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if let Err(e) = self.epoll.add(fd, events, token(at, 0)) {
            self.close(at);
            return Err(e);
        }
        Ok(at)
    }

    /// Stops forwarding a port: its host sockets close; TCP connections
    /// already open stay, UDP flows go.
    pub fn stop(&mut self, f: Forwarded) {
        for slot in f.slots {
            self.close(slot);
        }
    }

    /// Handles one epoll event (a token at or above [`FIRST_TOKEN`]).
    pub fn on_event(&mut self, tok: u64, events: u32, ns: &NsSockets) {
        let raw = tok - FIRST_TOKEN;
        self.run((raw >> 1) as usize, Some((raw & 1, events)), ns);
    }

    /// Runs again what ran out of budget last round.
    pub fn run_leftovers(&mut self, ns: &NsSockets) {
        for slot in std::mem::take(&mut self.run_again) {
            self.run(slot, None, ns);
        }
    }

    fn run(&mut self, slot: usize, ready: Option<(u64, u32)>, ns: &NsSockets) {
        match self.slots.get_mut(slot) {
            Some(Some(Entry::Listener { .. })) => self.accept(slot, ns),
            Some(Some(Entry::Conn(c))) => match pump(c, &mut self.pipes, directions(ready)) {
                Step::Open => {}
                Step::Busy => self.run_again.push(slot),
                Step::Closed => self.close(slot),
            },
            Some(Some(Entry::Udp(_))) => self.datagrams_from_clients(slot, ns),
            Some(Some(Entry::Flow(_))) => self.datagrams_from_inside(slot),
            _ => {}
        }
    }

    fn accept(&mut self, slot: usize, ns: &NsSockets) {
        for _ in 0..BATCH {
            let Some(Some(Entry::Listener { sock, target })) = self.slots.get(slot) else {
                return;
            };
            let target = *target;
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let host = match accept4(sock.as_fd(), flags) {
                Ok(fd) => fd,
                Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => continue,
                Err(
                    nix::Error::EMFILE
                    | nix::Error::ENFILE
                    | nix::Error::ENOBUFS
                    | nix::Error::ENOMEM,
                ) => {
                    // The connections wait in the backlog meanwhile.
                    self.epoll.delete(sock.as_fd());
                    self.paused.push((slot, Instant::now() + ACCEPT_BACKOFF));
                    return;
                }
                // EAGAIN: all taken.
                Err(_) => return,
            };
            let inside = match connect_inside(ns, target) {
                Ok(x) => x,
                Err(_) => {
                    // Nobody listens inside (any more): refuse, as a closed
                    // port would.
                    sockets::reset_on_close(&host);
                    continue;
                }
            };
            for fd in [&host, &inside.0] {
                let _ = setsockopt(fd, sockopt::TcpNoDelay, &true);
            }
            let (h, i) = (host.as_raw_fd(), inside.0.as_raw_fd());
            let at = self.insert(Entry::Conn(Box::new(Conn {
                host,
                inside: inside.0,
                connecting: inside.1,
                up: Dir::new(),
                down: Dir::new(),
            })));
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
    }

    fn datagrams_from_clients(&mut self, slot: usize, ns: &NsSockets) {
        for _ in 0..BATCH {
            let Some(Some(Entry::Udp(u))) = self.slots.get(slot) else {
                return;
            };
            let (n, client) = match recv_from(&u.sock, &mut self.datagram, libc::MSG_DONTWAIT) {
                Ok(Some(got)) => got,
                // A datagram without a usable address (or a wake-up with
                // none at all): nothing to answer to.
                Ok(None) => continue,
                Err(e) if would_block(e) => return,
                Err(nix::Error::EINTR | nix::Error::ECONNREFUSED) => continue,
                Err(_) => return,
            };
            let flow = match u.flows.get(&client) {
                Some(&f) => f,
                None => match self.new_flow(slot, client, ns) {
                    Some(f) => f,
                    None => continue,
                },
            };
            if let Some(Some(Entry::Flow(f))) = self.slots.get_mut(flow) {
                f.last = Instant::now();
                let _ = nix::sys::socket::send(
                    f.sock.as_raw_fd(),
                    &self.datagram[..n],
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                );
            }
        }
    }

    fn new_flow(&mut self, owner: usize, client: SocketAddr, ns: &NsSockets) -> Option<usize> {
        let Some(Some(Entry::Udp(u))) = self.slots.get(owner) else {
            return None;
        };
        let target = u.target;
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
        let kind = if target.is_ipv4() {
            Kind::Udp4
        } else {
            Kind::Udp6
        };
        let sock = ns.get(kind).ok()?;
        set_nonblocking(&sock).ok()?;
        sockets::connect_to(&sock, target).ok()?;
        let raw = sock.as_raw_fd();
        let at = self.insert(Entry::Flow(Flow {
            owner,
            client,
            sock,
            last: Instant::now(),
        }));
        self.active += 1;
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

    fn datagrams_from_inside(&mut self, slot: usize) {
        for _ in 0..BATCH {
            let Some(Some(Entry::Flow(f))) = self.slots.get_mut(slot) else {
                return;
            };
            let n = match nix::sys::socket::recv(
                f.sock.as_raw_fd(),
                &mut self.datagram,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                // EAGAIN, or ECONNREFUSED: nothing listens inside right
                // now; the flow stays until it is idle.
                Err(_) => return,
            };
            f.last = Instant::now();
            let (owner, client) = (f.owner, f.client);
            if let Some(Some(Entry::Udp(u))) = self.slots.get(owner) {
                let _ = send_to(&u.sock, &self.datagram[..n], client);
            }
        }
    }

    /// Forgets UDP flows idle for `idle` or longer.
    pub fn sweep_flows(&mut self, idle: Duration) {
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

enum Step {
    Open,
    Busy,
    Closed,
}

fn pump(c: &mut Conn, pipes: &mut Pipes, (mut up, mut down): (bool, bool)) -> Step {
    if c.connecting {
        match nix::sys::socket::getsockopt(&c.inside, sockopt::SocketError) {
            Ok(0) => {}
            _ => return reset(c),
        }
        // Still connecting: getpeername fails with ENOTCONN.
        if nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(c.inside.as_raw_fd())
            .is_err()
        {
            return Step::Open;
        }
        c.connecting = false;
        (up, down) = (true, true);
    }
    let idle = Ok(Progress::Blocked);
    let a = if up {
        c.up.pump(&c.host, &c.inside, pipes)
    } else {
        idle
    };
    let b = if down {
        c.down.pump(&c.inside, &c.host, pipes)
    } else {
        Ok(Progress::Blocked)
    };
    match (a, b) {
        (Err(_), _) | (_, Err(_)) => reset(c),
        _ if c.up.shut && c.down.shut => Step::Closed,
        (Ok(Progress::More), _) | (_, Ok(Progress::More)) => Step::Busy,
        _ => Step::Open,
    }
}

/// Aborts both sides with a reset, so that neither peer takes a broken
/// relay for an orderly end.
fn reset(c: &mut Conn) -> Step {
    sockets::reset_on_close(&c.host);
    sockets::reset_on_close(&c.inside);
    Step::Closed
}

/// Which directions an event can have moved: (host→inside, inside→host).
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

/// A non-blocking TCP socket inside, connecting to `target`; `true` while
/// the connect is in progress.
fn connect_inside(ns: &NsSockets, target: SocketAddr) -> io::Result<(OwnedFd, bool)> {
    let kind = if target.is_ipv4() {
        Kind::Tcp4
    } else {
        Kind::Tcp6
    };
    let fd = ns.get(kind)?;
    set_nonblocking(&fd)?;
    match sockets::connect_to(&fd, target) {
        Ok(()) => Ok((fd, false)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((fd, true)),
        Err(e) => Err(e),
    }
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// recvfrom(2) that never trusts an address it was not given: `None` when
/// the kernel returned no address (a socket shut down for reading wakes
/// with 0 bytes and an address length of 0) or one of another family.
pub fn recv_from(
    fd: &OwnedFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> nix::Result<Option<(usize, SocketAddr)>> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the buffer and the address storage are valid for the sizes
    // passed; the kernel writes at most that much.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(nix::Error::last());
    }
    Ok(sockaddr(&storage, len).map(|a| (n as usize, a)))
}

/// The address in `storage`, if `len` covers a whole one.
fn sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say it is a sockaddr_in.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say it is a sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn send_to(fd: &OwnedFd, data: &[u8], to: SocketAddr) -> nix::Result<usize> {
    use nix::sys::socket::{sendto, MsgFlags, SockaddrIn, SockaddrIn6};
    let raw: RawFd = fd.as_raw_fd();
    match to {
        SocketAddr::V4(a) => sendto(raw, data, &SockaddrIn::from(a), MsgFlags::MSG_DONTWAIT),
        SocketAddr::V6(a) => sendto(raw, data, &SockaddrIn6::from(a), MsgFlags::MSG_DONTWAIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_receive_woken_by_shutdown_has_no_address_and_does_not_panic() {
        // What took rk-pasta down (issue 10): after shutdown(SHUT_RD) an
        // unconnected UDP socket wakes with 0 bytes and address length 0.
        let fd = std::sync::Arc::new(OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap()));
        let receiver = std::sync::Arc::clone(&fd);
        let blocked = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            recv_from(&receiver, &mut buf, 0)
        });
        std::thread::sleep(Duration::from_millis(100));
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        assert_eq!(blocked.join().unwrap(), Ok(None));
        // What std's recv_from met in release builds: a family left in
        // the address buffer with a length of 0.
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut stale: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        stale.ss_family = libc::AF_INET as libc::sa_family_t;
        assert_eq!(sockaddr(&stale, 0), None);
    }

    #[test]
    fn a_datagram_comes_with_its_sender() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"hi", s.local_addr().unwrap()).unwrap();
        let fd = OwnedFd::from(s);
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match recv_from(&fd, &mut buf, libc::MSG_DONTWAIT) {
                Ok(Some((n, from))) => {
                    assert_eq!(&buf[..n], b"hi");
                    assert_eq!(from, c.local_addr().unwrap());
                    break;
                }
                Err(nix::Error::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => panic!("{other:?}"),
            }
        }
        // SAFETY: all-zero is a valid sockaddr_storage.
        let zero: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        assert_eq!(sockaddr(&zero, 0), None);
    }
}
