//! TCP through the NAT: every connection the guest opens is terminated by a
//! smoltcp socket and relayed to a host socket connected to the destination
//! (or to the host's loopback for the gateway, or to a nameserver).
//!
//! On a new SYN, a smoltcp socket starts listening on the exact destination
//! with its SYN-ACK held back, and a non-blocking connect() starts on the
//! host. Only when the host's connect succeeds does the guest get its
//! SYN-ACK; if it fails, the guest gets a RST: "connection refused" inside
//! means refused outside, and it comes as fast as the host's own answer.

use crate::epoll::{self, Epoll, Token};
use crate::net::Net;
use crate::ratelog::RateLog;
use crate::slab::Slab;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use socket2::{Domain, SockRef, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub const KIND: u8 = 2;
/// At most this many TCP connections at once; more are refused (RST).
pub const MAX_FLOWS: usize = 4096;
/// What a flow holds for the guest (host → guest data not yet
/// acknowledged). Larger than the receive side: host→guest through the
/// port driver went from 14.4 to 23.3 Gbit/s and from 50 to 28 ms of
/// driver CPU per Gbit with 2 MiB instead of 512 KiB (1 MiB: 19.0 and
/// 34; 4 MiB: 20.9 and 32), while the receive side's size made no
/// difference to guest → host. Pages cost memory only once touched
/// (see `mapped_alloc`), but a guest that does not read lets the host fill
/// them: only the first [`LARGE_SEND_FLOWS`] flows open at once get one,
/// the rest the receive side's size, which bounds what a flood of
/// connections to a published port can pin beyond that.
const SEND_BUFFER: usize = 2 * 1024 * 1024;
const LARGE_SEND_FLOWS: usize = 64;
/// A host connect() that has not finished by then is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);
/// The same for the stack's connects into the guest (forwarded ports).
const INBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Gateway ports for connections into the guest.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// (the guest's end, the other end as the guest sees it).
type Key = (SocketAddr, SocketAddr);

struct Flow {
    key: Key,
    host: TcpStream,
    handle: SocketHandle,
    connected: bool,
    /// Opened by the stack towards the guest (a forwarded port).
    inbound: bool,
    started: Instant,
    /// Further addresses to try if the connect fails (DNS over TCP).
    fallbacks: Vec<SocketAddr>,
    readable: bool,
    writable: bool,
    host_eof: bool,
    host_write_shut: bool,
    /// The host reset the connection while it was being set up.
    reset_by_host: bool,
    dirty: bool,
    finished: bool,
}

impl Flow {
    fn new(key: Key, host: TcpStream, handle: SocketHandle) -> Flow {
        Flow {
            key,
            host,
            handle,
            connected: false,
            inbound: false,
            started: Instant::now(),
            fallbacks: Vec::new(),
            readable: false,
            writable: false,
            host_eof: false,
            host_write_shut: false,
            reset_by_host: false,
            dirty: false,
            finished: false,
        }
    }
}

pub struct TcpNat {
    flows: Slab<Flow>,
    by_key: HashMap<Key, u32>,
    dirty: Vec<u32>,
    finished: Vec<u32>,
    /// The receive (guest → host) buffer of a flow.
    buffer_size: usize,
    max_flows: usize,
    next_port: u16,
    limit_log: RateLog,
    error_log: RateLog,
}

impl TcpNat {
    pub fn new(mtu: u32, max_flows: usize) -> TcpNat {
        let mss = mtu as usize - 40;
        TcpNat {
            flows: Slab::default(),
            by_key: HashMap::new(),
            dirty: Vec::new(),
            finished: Vec::new(),
            buffer_size: (mss * 8).clamp(256 * 1024, 1024 * 1024),
            max_flows,
            next_port: 0,
            limit_log: RateLog::new(),
            error_log: RateLog::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Notes that a segment of the flow `src → dst` arrived.
    pub fn mark(&mut self, src: SocketAddr, dst: SocketAddr) {
        if let Some(&i) = self.by_key.get(&(src, dst)) {
            self.mark_index(i);
        }
    }

    fn mark_index(&mut self, i: u32) {
        if let Some(f) = self.flows.get_index_mut(i) {
            if !f.dirty {
                f.dirty = true;
                self.dirty.push(i);
            }
        }
    }

    /// A SYN from `src` to `dst` that must reach `targets` (in order).
    /// Prepares a listening socket before the stack sees the SYN; returns the
    /// new flow's index, or `None` when the SYN is left to the stack (it
    /// answers RST where nothing listens).
    pub fn on_syn(
        &mut self,
        net: &mut Net,
        epoll: &Epoll,
        src: SocketAddr,
        dst: SocketAddr,
        targets: &[SocketAddr],
    ) -> Option<u32> {
        if let Some(&i) = self.by_key.get(&(src, dst)) {
            if !self.is_over(net, i) {
                // A retransmitted SYN: the socket in SYN-RECEIVED takes it.
                self.mark_index(i);
                return None;
            }
            // The guest reuses the address and port of a connection that
            // just ended (after a reset there is no TIME-WAIT), before that
            // flow was reaped: retire it now.
            self.remove(net, i);
        }
        if self.flows.len() >= self.max_flows {
            self.limit_log.log(format_args!(
                "TCP connection {src} -> {dst} refused: {} connections open, the limit",
                self.max_flows
            ));
            return None;
        }
        let (host, connected, fallbacks) = match connect_first(targets) {
            Ok(v) => v,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE)
                {
                    self.limit_log.log(format_args!(
                        "TCP connection {src} -> {dst} refused: out of file descriptors ({e})"
                    ));
                }
                return None;
            }
        };
        let mut sock = self.new_socket(src, dst)?;
        sock.pause_synack(!connected);
        let listen = IpListenEndpoint {
            addr: Some(dst.ip().into()),
            port: dst.port(),
        };
        if sock.listen(listen).is_err() {
            return None;
        }
        let mut flow = Flow::new((src, dst), host, net.sockets.add(sock));
        flow.connected = connected;
        flow.fallbacks = fallbacks;
        self.insert(net, epoll, flow)
    }

    /// A connection from `client` accepted on a forwarded host port: the
    /// stack connects to `target` inside, from the client's own address
    /// when the guest can answer it (see `policy::visible_client`), else
    /// from the gateway. If the guest refuses, the host side gets a reset.
    pub fn open_inbound(
        &mut self,
        net: &mut Net,
        epoll: &Epoll,
        host: TcpStream,
        client: SocketAddr,
        target: SocketAddrV4,
    ) {
        if self.flows.len() >= self.max_flows {
            self.limit_log.log(format_args!(
                "forwarded connection to {target} refused: {} connections open, the limit",
                self.max_flows
            ));
            let _ = SockRef::from(&host).set_linger(Some(Duration::ZERO));
            return;
        }
        let shown = crate::policy::visible_client(&net.plan, client)
            .filter(|c| !self.by_key.contains_key(&(target.into(), (*c).into())));
        let Some(local) = shown.or_else(|| self.free_local_endpoint(net.plan.gateway, target))
        else {
            return;
        };
        let Some(mut sock) = self.new_socket(local.into(), target.into()) else {
            return;
        };
        let remote = IpEndpoint::new((*target.ip()).into(), target.port());
        let local_listen = IpListenEndpoint {
            addr: Some((*local.ip()).into()),
            port: local.port(),
        };
        if sock
            .connect(net.iface.context(), remote, local_listen)
            .is_err()
        {
            return;
        }
        let key = (target.into(), local.into());
        let mut flow = Flow::new(key, host, net.sockets.add(sock));
        flow.connected = true;
        flow.inbound = true;
        // The host may have sent already: look once the guest answers.
        flow.readable = true;
        flow.writable = true;
        self.insert(net, epoll, flow);
    }

    /// A gateway port for a connection into the guest not used by another.
    fn free_local_endpoint(
        &mut self,
        gateway: std::net::Ipv4Addr,
        target: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        for _ in 0..EPHEMERAL_PORTS.len() {
            self.next_port = if self.next_port >= *EPHEMERAL_PORTS.end()
                || self.next_port < *EPHEMERAL_PORTS.start()
            {
                *EPHEMERAL_PORTS.start()
            } else {
                self.next_port + 1
            };
            let local = SocketAddrV4::new(gateway, self.next_port);
            if !self.by_key.contains_key(&(target.into(), local.into())) {
                return Some(local);
            }
        }
        None
    }

    /// A stack socket with its buffers; `None` (logged) if memory is short.
    fn new_socket(&mut self, a: SocketAddr, b: SocketAddr) -> Option<tcp::Socket<'static>> {
        let buffer = crate::mapped_alloc::zeroed_buffer;
        let send = send_buffer_size(self.flows.len(), self.buffer_size);
        let (Some(rx), Some(tx)) = (buffer(self.buffer_size), buffer(send)) else {
            self.error_log.log(format_args!(
                "TCP connection {a} -> {b} refused: no memory for its buffers"
            ));
            return None;
        };
        let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        sock.set_nagle_enabled(false);
        Some(sock)
    }

    /// Registers the flow's host socket and files the flow.
    fn insert(&mut self, net: &mut Net, epoll: &Epoll, flow: Flow) -> Option<u32> {
        let (index, generation) = self.flows.vacant();
        if let Err(e) = epoll.add(
            flow.host.as_raw_fd(),
            epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET,
            Token::new(KIND, index, generation),
        ) {
            self.error_log.log(format_args!("epoll: {e}"));
            drop(net.sockets.remove(flow.handle));
            drop(flow);
            return None;
        }
        let key = flow.key;
        let inserted = self.flows.insert(flow);
        debug_assert_eq!(inserted, (index, generation));
        self.by_key.insert(key, index);
        self.mark_index(index);
        Some(index)
    }

    /// After the stack saw the SYN for flow `i`: its socket must have taken
    /// it. Otherwise the listening socket could catch another guest's SYN.
    pub fn after_syn(&mut self, net: &mut Net, i: u32) {
        let Some(f) = self.flows.get_index_mut(i) else {
            return;
        };
        let sock = net.sockets.get_mut::<tcp::Socket>(f.handle);
        let remote_ok = sock
            .remote_endpoint()
            .is_some_and(|r| r.addr == f.key.0.ip().into() && r.port == f.key.0.port());
        if sock.state() != State::SynReceived || !remote_ok {
            sock.abort();
            self.finish(i);
        }
    }

    /// An epoll event on flow `token`'s host socket.
    pub fn on_event(&mut self, net: &mut Net, epoll: &Epoll, token: Token, events: u32) {
        let Some(f) = self.flows.get_mut(token.index, token.generation) else {
            return;
        };
        if events & (epoll::IN | epoll::RDHUP | epoll::HUP | epoll::ERR) != 0 {
            f.readable = true;
        }
        if events & (epoll::OUT | epoll::ERR | epoll::HUP) != 0 {
            f.writable = true;
        }
        if !f.connected && events & (epoll::OUT | epoll::ERR | epoll::HUP) != 0 {
            self.on_connect_result(net, epoll, token.index);
        }
        self.mark_index(token.index);
    }

    fn on_connect_result(&mut self, net: &mut Net, epoll: &Epoll, i: u32) {
        let generation = self.flows.generation(i);
        let Some(f) = self.flows.get_index_mut(i) else {
            return;
        };
        let failed = match f.host.take_error() {
            Ok(None) => f.host.peer_addr().is_err(),
            // Connected, then reset before we looked: the guest gets its
            // connection, then the reset, as it would on a wire.
            Ok(Some(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                f.reset_by_host = true;
                false
            }
            _ => true,
        };
        if !failed {
            f.connected = true;
            net.sockets
                .get_mut::<tcp::Socket>(f.handle)
                .pause_synack(false);
            return;
        }
        // Try the next nameserver, if this was DNS over TCP.
        while !f.fallbacks.is_empty() {
            let next = f.fallbacks.remove(0);
            let Ok((host, connected)) = start_connect(next) else {
                continue;
            };
            let token = Token::new(KIND, i, generation);
            let interest = epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET;
            if epoll.add(host.as_raw_fd(), interest, token).is_err() {
                continue;
            }
            // The old socket leaves epoll as it is closed here.
            f.host = host;
            f.connected = connected;
            f.readable = false;
            f.writable = false;
            if connected {
                net.sockets
                    .get_mut::<tcp::Socket>(f.handle)
                    .pause_synack(false);
            }
            return;
        }
        // Refused (or unreachable) outside: RST inside.
        net.sockets.get_mut::<tcp::Socket>(f.handle).abort();
        self.finish(i);
    }

    fn finish(&mut self, i: u32) {
        if let Some(f) = self.flows.get_index_mut(i) {
            if !f.finished {
                f.finished = true;
                self.finished.push(i);
            }
        }
    }

    /// Moves data for every flow that something happened to.
    pub fn service(&mut self, net: &mut Net) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            if let Some(f) = self.flows.get_index_mut(i) {
                f.dirty = false;
            }
            self.service_one(net, i);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            // Reuse the allocation.
            self.dirty = dirty;
        }
    }

    fn service_one(&mut self, net: &mut Net, i: u32) {
        let Some(f) = self.flows.get_index_mut(i) else {
            return;
        };
        if f.finished {
            return;
        }
        let sock = net.sockets.get_mut::<tcp::Socket>(f.handle);
        if !f.connected {
            // The guest gave up (RST) while the host's connect was pending.
            if sock.state() == State::Closed {
                self.finish(i);
            }
            return;
        }
        let mut abort = f.reset_by_host && sock.may_send();

        // Guest to host.
        while !abort && f.writable && sock.can_recv() {
            match sock.recv(|buf| match (&f.host).write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => f.writable = false,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => {
                    abort = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !abort
            && !f.host_write_shut
            && matches!(
                sock.state(),
                State::CloseWait | State::LastAck | State::Closing | State::TimeWait
            )
            && !sock.can_recv()
        {
            // The guest sent FIN and everything before it went out.
            let _ = f.host.shutdown(Shutdown::Write);
            f.host_write_shut = true;
        }

        // Host to guest.
        while !abort
            && f.readable
            && !f.host_eof
            && sock.may_send()
            && sock.send_queue() < sock.send_capacity()
        {
            match sock.send(|buf| match (&f.host).read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(0)) => {
                    f.host_eof = true;
                    // FIN after whatever is still queued.
                    sock.close();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => f.readable = false,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => abort = true,
                Err(_) => break,
            }
        }

        if abort {
            // The host reset the connection: reset the guest's too.
            sock.abort();
        }
        match sock.state() {
            State::Closed | State::TimeWait => {
                if !(f.host_eof && f.host_write_shut) {
                    // Ended by a reset (either side) or a timeout: pass the
                    // reset on to the host instead of a clean FIN.
                    let _ = SockRef::from(&f.host).set_linger(Some(Duration::ZERO));
                }
                self.finish(i);
            }
            _ => {}
        }
    }

    /// Whether flow `i` has ended (or its stack socket has), so that a new
    /// SYN with its addresses starts a new connection.
    fn is_over(&mut self, net: &Net, i: u32) -> bool {
        let Some(f) = self.flows.get_index_mut(i) else {
            return true;
        };
        f.finished
            || matches!(
                net.sockets.get::<tcp::Socket>(f.handle).state(),
                State::Closed | State::TimeWait
            )
    }

    fn remove(&mut self, net: &mut Net, i: u32) {
        if let Some(f) = self.flows.remove(i) {
            if !(f.host_eof && f.host_write_shut) {
                let _ = SockRef::from(&f.host).set_linger(Some(Duration::ZERO));
            }
            drop(net.sockets.remove(f.handle));
            self.by_key.remove(&f.key);
        }
    }

    /// Removes flows that ended, after the stack sent their last segment.
    pub fn reap(&mut self, net: &mut Net) {
        for i in std::mem::take(&mut self.finished) {
            // The slot may hold a new flow already (see `on_syn`).
            if self.flows.get_index_mut(i).is_some_and(|f| f.finished) {
                self.remove(net, i);
            }
        }
    }

    /// Once a second: flows whose state changed by a timer (stack timeouts,
    /// connects that never finish).
    pub fn housekeeping(&mut self, net: &mut Net, now: Instant) {
        for i in self.flows.indices() {
            let Some(f) = self.flows.get_index_mut(i) else {
                continue;
            };
            if !f.connected && now.duration_since(f.started) > CONNECT_TIMEOUT {
                net.sockets.get_mut::<tcp::Socket>(f.handle).abort();
                self.finish(i);
                continue;
            }
            let state = net.sockets.get::<tcp::Socket>(f.handle).state();
            if f.inbound
                && state == State::SynSent
                && now.duration_since(f.started) > INBOUND_CONNECT_TIMEOUT
            {
                net.sockets.get_mut::<tcp::Socket>(f.handle).abort();
            }
            if matches!(state, State::Closed | State::TimeWait | State::SynSent) {
                self.mark_index(i);
            }
        }
    }
}

/// The send buffer of a new flow when `open` flows exist and the receive
/// buffer is `receive` bytes.
fn send_buffer_size(open: usize, receive: usize) -> usize {
    if open < LARGE_SEND_FLOWS {
        SEND_BUFFER.max(receive)
    } else {
        receive
    }
}

/// Starts a connect to the first of `targets` that does not fail at once;
/// returns the socket, whether it is connected already, and the addresses
/// left to try.
fn connect_first(targets: &[SocketAddr]) -> io::Result<(TcpStream, bool, Vec<SocketAddr>)> {
    let mut last = io::Error::from(io::ErrorKind::ConnectionRefused);
    for (n, &t) in targets.iter().enumerate() {
        match start_connect(t) {
            Ok((s, connected)) => return Ok((s, connected, targets[n + 1..].to_vec())),
            Err(e) => {
                let fd_shortage =
                    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                last = e;
                if fd_shortage {
                    break;
                }
            }
        }
    }
    Err(last)
}

fn start_connect(target: SocketAddr) -> io::Result<(TcpStream, bool)> {
    if !crate::policy::host_may_reach(target) {
        return Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH));
    }
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    let _ = s.set_tcp_nodelay(true);
    let connected = match s.connect(&target.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    Ok((TcpStream::from(s), connected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_flows_get_large_send_buffers() {
        let receive = 512 * 1024;
        assert_eq!(send_buffer_size(0, receive), SEND_BUFFER);
        assert_eq!(send_buffer_size(LARGE_SEND_FLOWS - 1, receive), SEND_BUFFER);
        assert_eq!(send_buffer_size(LARGE_SEND_FLOWS, receive), receive);
        assert_eq!(send_buffer_size(4000, receive), receive);
        // Never smaller than the receive side.
        assert_eq!(send_buffer_size(0, 4 * SEND_BUFFER), 4 * SEND_BUFFER);
    }
}
