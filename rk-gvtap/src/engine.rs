//! The event loop: one thread, one epoll over the tap, every host socket of
//! the NAT and a stop eventfd; smoltcp's own timers give the timeout.
//!
//! Each round: take events; read frames from the tap until it has no more
//! (at most [`TAP_BATCH`], so host sockets get their turn), letting the NAT
//! look at each before the stack does; move data between smoltcp sockets
//! and host sockets for the flows something happened to; let the stack send
//! what it has; reap finished flows; once a second, expire idle flows.
//! Between rounds the thread may keep to one CPU (affinity.rs).

use crate::affinity::{Pinning, ThreadCpus};
use crate::classify::{inspect, Packet};
use crate::dns::{self, Dns};
use crate::epoll::{self, Epoll, Token};
use crate::forward::{self, Control, Forwards, Ready};
use crate::frames::{self, Quote};
use crate::net::Net;
use crate::ping_nat::{self, PingNat};
use crate::plan::NetPlan;
use crate::policy::{ping_route_any, route_any, Route};
use crate::reassembly::{Outcome, Reassembly};
use crate::resolv::ResolvConf;
use crate::tcp_nat::{self, TcpNat};
use crate::udp_nat::{self, UdpNat};
use smoltcp::iface::PollIngressSingleResult;
use smoltcp::time::Instant as SmolInstant;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIND_TAP: u8 = 0;
const KIND_STOP: u8 = 1;
/// Frames read per round before host sockets are looked at again.
const TAP_BATCH: usize = 256;
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Fragmented datagrams remembered at once (the stack reassembles fewer).
const MAX_REASSEMBLIES: usize = 64;

/// Where the NAT sends UDP from the guest to `dst`, if anywhere.
fn nat_target(plan: &NetPlan, guest: IpAddr, dst: SocketAddr) -> Option<SocketAddr> {
    match route_any(plan, guest, dst) {
        Route::Host(to) => Some(to),
        _ => None,
    }
}

/// Flow limits; the defaults are documented in docs/gvisor-tap-vsock.md.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub tcp: usize,
    pub udp: usize,
    pub ping: usize,
    pub dns: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        tcp: tcp_nat::MAX_FLOWS,
        udp: udp_nat::MAX_FLOWS,
        ping: ping_nat::MAX_FLOWS,
        dns: dns::MAX_QUERIES,
    };

    /// `wanted`, shrunk in proportion to what `nofile` descriptors allow:
    /// each flow holds one host socket, and 64 are kept for everything else.
    pub fn fit_nofile(wanted: Limits, nofile: u64) -> Limits {
        let budget = nofile.saturating_sub(64).max(64) as usize;
        let total = wanted.tcp + wanted.udp + wanted.ping + wanted.dns;
        if budget >= total {
            return wanted;
        }
        let scale = |n: usize| (n * budget / total).max(4);
        Limits {
            tcp: scale(wanted.tcp),
            udp: scale(wanted.udp),
            ping: scale(wanted.ping),
            dns: scale(wanted.dns),
        }
    }
}

pub struct Engine {
    /// A copy of `net.plan`, borrowable while `net` is mutably borrowed.
    plan: NetPlan,
    net: Net,
    epoll: Epoll,
    tcp: TcpNat,
    udp: UdpNat,
    ping: PingNat,
    dns: Dns,
    _stop: OwnedFd,
    tap_ready: bool,
    more_work: bool,
    next_housekeeping: Instant,
    dns_deadline: Option<Instant>,
    events: Vec<(Token, u32)>,
    /// Where the datagrams being reassembled go: (source, destination,
    /// identification) of a fragmented UDP datagram → its flow's endpoint.
    fragments: HashMap<frames::FragmentKey, SocketAddr>,
    /// The guest's fragmented IPv6 datagrams being put together.
    reassembly: Reassembly,
    control: Arc<Control>,
    forwards: Forwards,
    debug: bool,
    next_stats: Instant,
    pinning: Pinning<ThreadCpus>,
}

impl Engine {
    pub fn new(
        plan: NetPlan,
        tap: OwnedFd,
        stop: OwnedFd,
        control: Arc<Control>,
        limits: Limits,
        vnet: bool,
        cpus: Option<ThreadCpus>,
    ) -> std::io::Result<Engine> {
        let epoll = Epoll::new(256)?;
        let mut net = Net::new(plan.clone(), tap, vnet);
        let mtu = net.dev.stack_mtu();
        epoll.add(
            net.dev.raw_fd(),
            epoll::IN | epoll::ET,
            Token::new(KIND_TAP, 0, 0),
        )?;
        epoll.add(stop.as_raw_fd(), epoll::IN, Token::new(KIND_STOP, 0, 0))?;
        epoll.add(
            control.wake_fd().as_raw_fd(),
            epoll::IN,
            Token::new(forward::KIND_CONTROL, 0, 0),
        )?;
        let dns = Dns::new(&mut net, ResolvConf::new("/etc/resolv.conf"), limits.dns);
        Ok(Engine {
            plan,
            net,
            epoll,
            tcp: TcpNat::new(mtu, limits.tcp),
            udp: UdpNat::new(limits.udp),
            ping: PingNat::new(limits.ping),
            dns,
            _stop: stop,
            tap_ready: true,
            more_work: false,
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            dns_deadline: None,
            events: Vec::with_capacity(256),
            fragments: HashMap::new(),
            reassembly: Reassembly::default(),
            control,
            forwards: Forwards::default(),
            debug: log::log_enabled!(log::Level::Debug),
            next_stats: Instant::now(),
            pinning: Pinning::new(cpus),
        })
    }

    /// Runs until the stop eventfd is signalled; an error means the network
    /// is gone (the tap failed).
    pub fn run(&mut self) -> Result<(), String> {
        loop {
            let timeout = self.timeout();
            self.events.clear();
            let got = self
                .epoll
                .wait(timeout)
                .map_err(|e| format!("epoll_wait: {e}"))?;
            self.events.extend(got);
            for k in 0..self.events.len() {
                let (token, ev) = self.events[k];
                match token.kind {
                    KIND_TAP => {
                        if ev & (epoll::ERR | epoll::HUP) != 0 && ev & epoll::IN == 0 {
                            return Err("the tap device inside the namespace went away".into());
                        }
                        self.tap_ready = true;
                    }
                    KIND_STOP => return Ok(()),
                    tcp_nat::KIND => self.tcp.on_event(&mut self.net, &self.epoll, token, ev),
                    udp_nat::KIND => self.udp.on_event(token),
                    ping_nat::KIND => self.ping.on_event(token),
                    dns::KIND => self.dns.on_event(token),
                    forward::KIND_CONTROL => {
                        for id in self.forwards.apply(&self.control, &self.epoll) {
                            self.udp.remove_forward(id);
                        }
                    }
                    forward::KIND_LISTENER => match self.forwards.ready(token) {
                        Ready::Tcp(conns) => {
                            for (stream, client, target) in conns {
                                self.tcp.open_inbound(
                                    &mut self.net,
                                    &self.epoll,
                                    stream,
                                    client,
                                    target,
                                );
                            }
                        }
                        Ready::Udp { id, socket, target } => {
                            self.udp.relay_forwarded(&mut self.net, id, socket, target);
                            self.more_work = true;
                        }
                        Ready::Nothing => {}
                    },
                    _ => {}
                }
            }
            let frames = if self.tap_ready { self.ingest()? } else { 0 };
            self.service();
            self.egress();
            self.tcp.reap(&mut self.net);
            let now = Instant::now();
            self.pinning.after_round(now, frames);
            if now >= self.next_housekeeping || self.dns_deadline.is_some_and(|d| d <= now) {
                self.housekeeping(now);
            }
        }
    }

    fn timeout(&mut self) -> Option<Duration> {
        if self.tap_ready || self.more_work {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut t = self.next_housekeeping.saturating_duration_since(now);
        if let Some(d) = self.dns_deadline {
            t = t.min(d.saturating_duration_since(now));
        }
        if let Some(d) = self
            .net
            .iface
            .poll_delay(SmolInstant::now(), &self.net.sockets)
        {
            t = t.min(Duration::from_micros(d.total_micros()));
        }
        Some(t)
    }

    /// Reads and handles frames from the tap; returns how many.
    fn ingest(&mut self) -> Result<usize, String> {
        for n in 0..TAP_BATCH {
            let len = match self.net.dev.read_frame() {
                Ok(Some(len)) => len,
                Ok(None) => {
                    self.tap_ready = false;
                    return Ok(n);
                }
                Err(e) => return Err(format!("reading the tap device: {e}")),
            };
            if self.net.dev.offloads() {
                // The stack sends the guest super-segments (see
                // `tcp_frame::raise_syn_mss`).
                let mtu = self.net.dev.stack_mtu();
                rk_gvtap::tcp_frame::raise_syn_mss(self.net.dev.frame_mut(len), mtu);
            }
            let len = match self.reassembly.add(self.net.dev.frame(len), Instant::now()) {
                Outcome::NotFragment => len,
                Outcome::Held => continue,
                Outcome::Complete(whole) => match self.net.dev.replace_frame(&whole) {
                    Some(len) => len,
                    None => continue,
                },
            };
            let (frame, mac) = inspect(self.net.dev.frame(len));
            let mut new_flow = None;
            let mut udp_dest = None;
            let pass = match frame {
                Packet::ArpRequest { target } => target == self.net.plan.gateway,
                Packet::TcpSyn { src, dst } => {
                    self.note_guest_mac(src.ip(), mac);
                    match route_any(&self.net.plan, src.ip(), dst) {
                        Route::Host(to) => {
                            new_flow = self.tcp.on_syn(&mut self.net, &self.epoll, src, dst, &[to]);
                            true
                        }
                        Route::Dns => {
                            let servers = self.dns.servers();
                            new_flow =
                                self.tcp
                                    .on_syn(&mut self.net, &self.epoll, src, dst, &servers);
                            true
                        }
                        Route::Refuse => true,
                        Route::Unreachable => self.prohibit(len, mac),
                        Route::Drop => false,
                    }
                }
                Packet::Tcp { src, dst } => {
                    self.tcp.mark(src, dst);
                    true
                }
                Packet::Udp { src, dst } => {
                    self.note_guest_mac(src.ip(), mac);
                    let r = route_any(&self.net.plan, src.ip(), dst);
                    let answerable = !matches!(r, Route::Drop | Route::Unreachable);
                    if answerable && self.udp.has_listener(dst) {
                        // A flow's endpoint already (an answer to a client
                        // of a forwarded port, or more to a destination).
                        udp_dest = Some(dst);
                        true
                    } else {
                        match r {
                            Route::Host(_) => {
                                let taken = self.udp.before_datagram(&mut self.net, dst);
                                if taken {
                                    udp_dest = Some(dst);
                                }
                                taken
                            }
                            Route::Dns => {
                                self.dns.mark();
                                true
                            }
                            Route::Refuse => true,
                            Route::Unreachable => self.prohibit(len, mac),
                            Route::Drop => false,
                        }
                    }
                }
                Packet::EchoRequest {
                    src,
                    dst,
                    ident,
                    icmp_offset,
                    icmp_len,
                } => {
                    self.note_guest_mac(src, mac);
                    let gateway = self.is_gateway(dst);
                    match ping_route_any(&self.net.plan, src, dst) {
                        Route::Host(target) => {
                            let icmp =
                                &self.net.dev.frame(len)[icmp_offset..icmp_offset + icmp_len];
                            let handled =
                                self.ping
                                    .on_echo(&self.epoll, src, dst, ident, target.ip(), icmp);
                            // The gateway answers itself when the host cannot.
                            !handled && gateway
                        }
                        Route::Unreachable => self.prohibit(len, mac),
                        // The stack answers for the gateway; nobody is
                        // behind the subnet's other addresses.
                        _ => gateway,
                    }
                }
                Packet::Other => {
                    // A later fragment of a UDP datagram whose first one
                    // went to a flow: once the stack has put the datagram
                    // together, that flow must take it.
                    if let Some((key, more)) = frames::fragment_of(self.net.dev.frame(len)) {
                        udp_dest = self.fragments.get(&key).copied();
                        if !more {
                            self.fragments.remove(&key);
                        }
                    }
                    true
                }
            };
            if let (Some(dest), Some((key, true))) =
                (udp_dest, frames::fragment_of(self.net.dev.frame(len)))
            {
                // The first fragment of a datagram for a flow.
                if self.fragments.len() >= MAX_REASSEMBLIES {
                    self.fragments.clear();
                }
                self.fragments.insert(key, dest);
            }
            if pass {
                self.net.dev.stage(len);
                let r = self.net.iface.poll_ingress_single(
                    SmolInstant::now(),
                    &mut self.net.dev,
                    &mut self.net.sockets,
                );
                let _: PollIngressSingleResult = r;
            }
            if let Some(i) = new_flow {
                self.tcp.after_syn(&mut self.net, i);
            }
            if let Some(dest) = udp_dest {
                let plan = &self.plan;
                self.udp
                    .after_datagram(&mut self.net, &self.epoll, dest, |guest, d| {
                        nat_target(plan, guest, d)
                    });
            }
        }
        Ok(TAP_BATCH)
    }

    /// Answers the frame last read (`len` bytes from `mac`) with ICMP
    /// "administratively prohibited" instead of letting anything send it;
    /// returns `false`: the stack must not see it either.
    fn prohibit(&mut self, len: usize, mac: [u8; 6]) -> bool {
        if let Some(quote) = Quote::of(self.net.dev.frame(len)) {
            let router6 = self.plan.ipv6.map(|p| p.gateway);
            frames::prohibited(&mut self.net.dev, mac, self.plan.gateway, router6, &quote);
        }
        false
    }

    /// Whether `ip` is the gateway's address (IPv4 or IPv6).
    fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a == self.plan.gateway,
            IpAddr::V6(a) => self.plan.ipv6.is_some_and(|p| p.gateway == a),
        }
    }

    fn note_guest_mac(&mut self, src: IpAddr, mac: [u8; 6]) {
        let guest = match src {
            IpAddr::V4(a) => self.plan.contains(a),
            IpAddr::V6(a) => self.plan.ipv6.is_some_and(|p| p.contains(a)),
        };
        if guest && self.net.guest_mac != Some(mac) {
            self.net.guest_mac = Some(mac);
        }
    }

    fn service(&mut self) {
        self.tcp.service(&mut self.net);
        self.more_work = self.udp.service(&mut self.net);
        self.ping.service(&mut self.net);
        self.dns.service(&mut self.net, &self.epoll);
        if self.dns.len() > 0 && self.dns_deadline.is_none() {
            self.dns_deadline = Some(Instant::now() + dns::SERVER_TIMEOUT);
        }
    }

    fn egress(&mut self) {
        let now = SmolInstant::now();
        while self
            .net
            .iface
            .poll_egress(now, &mut self.net.dev, &mut self.net.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged
        {}
    }

    fn housekeeping(&mut self, now: Instant) {
        self.tcp.housekeeping(&mut self.net, now);
        self.udp.housekeeping(&mut self.net, now);
        self.ping.housekeeping(now);
        self.reassembly.expire(now);
        self.dns_deadline = self.dns.housekeeping(&self.epoll, now);
        self.next_housekeeping = now + HOUSEKEEPING;
        self.net.iface.poll_maintenance(SmolInstant::now());
        if self.debug && now >= self.next_stats {
            let (tcp, udp, ping, dns) = self.flow_counts();
            log::debug!(
                "open flows: {tcp} TCP, {udp} UDP, {ping} ping, {dns} DNS queries; IPv6 datagrams in fragments: {}; frames the tap refused: {}; pinned to CPU: {:?}",
                self.reassembly.len(),
                self.net.dev.tx_dropped,
                self.pinning.pinned()
            );
            self.next_stats = now + Duration::from_secs(10);
        }
    }

    /// Open flows: (TCP, UDP, ping, DNS queries).
    fn flow_counts(&self) -> (usize, usize, usize, usize) {
        (
            self.tcp.len(),
            self.udp.len(),
            self.ping.len(),
            self.dns.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_shrink_to_the_descriptors_there_are() {
        assert_eq!(
            Limits::fit_nofile(Limits::DEFAULT, 1 << 20),
            Limits::DEFAULT
        );
        let small = Limits::fit_nofile(Limits::DEFAULT, 1024);
        let total = small.tcp + small.udp + small.ping + small.dns;
        assert!(total <= 1024 - 64, "{small:?}");
        assert!(small.tcp > small.udp && small.udp > small.ping, "{small:?}");
        let tiny = Limits::fit_nofile(Limits::DEFAULT, 10);
        assert!(tiny.tcp >= 4 && tiny.dns >= 4, "{tiny:?}");
    }
}
