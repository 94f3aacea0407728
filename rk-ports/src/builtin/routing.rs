//! Local delivery of answers to preserved client addresses.
//!
//! A relay socket inside bound (IP_TRANSPARENT) to a client's address that
//! is not local there, e.g. 192.168.1.50, must still get the server's
//! answers, which the main routing table would send out of the namespace.
//! While a connection or flow from that address is open, a policy rule
//! `to 192.168.1.50 lookup TABLE` sends packets for it to a table whose only
//! route is `local default dev lo src 127.0.0.1`: they are delivered locally, to the
//! transparent socket. Works for TCP and UDP, for servers on the namespace's
//! loopback and behind a bridge inside alike, and needs no iptables.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

/// The routing table holding `local default dev lo` (an unused number).
pub const TABLE: u32 = 0x52b;
/// Rule priorities: this base plus the worker's index.
const PRIORITY_BASE: u32 = 1000;
const LOOPBACK_INDEX: u32 = 1;

pub struct LocalDelivery {
    socket: Socket,
    seq: u32,
    priority: u32,
    tables: [bool; 2],
    refs: HashMap<IpAddr, usize>,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl LocalDelivery {
    pub fn new(worker_index: u32) -> io::Result<LocalDelivery> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(LocalDelivery {
            socket,
            seq: 0,
            priority: PRIORITY_BASE + worker_index,
            tables: [false; 2],
            refs: HashMap::new(),
        })
    }

    /// Answers for `client` are delivered locally until the matching
    /// [`release`](Self::release).
    pub fn acquire(&mut self, client: IpAddr) -> io::Result<()> {
        if let Some(n) = self.refs.get_mut(&client) {
            *n += 1;
            return Ok(());
        }
        let v6 = usize::from(client.is_ipv6());
        if !self.tables[v6] {
            self.add_local_table(client)?;
            self.tables[v6] = true;
        }
        match self.request(
            RouteNetlinkMessage::NewRule(self.rule(client)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        self.refs.insert(client, 1);
        Ok(())
    }

    pub fn release(&mut self, client: IpAddr) {
        let Some(n) = self.refs.get_mut(&client) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.refs.remove(&client);
            let _ = self.request(RouteNetlinkMessage::DelRule(self.rule(client)), 0);
        }
    }

    fn rule(&self, client: IpAddr) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = family(client);
        m.header.dst_len = if client.is_ipv4() { 32 } else { 128 };
        m.header.action = RuleAction::ToTable;
        m.attributes.push(RuleAttribute::Destination(client));
        m.attributes.push(RuleAttribute::Table(TABLE));
        m.attributes.push(RuleAttribute::Priority(self.priority));
        m
    }

    /// `ip route add local default dev lo src 127.0.0.1 table TABLE` (or
    /// `::1`, for the family of `like`).
    fn add_local_table(&mut self, like: IpAddr) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(like);
        m.header.destination_prefix_length = 0;
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Host;
        m.header.kind = RouteType::Local;
        m.attributes.push(RouteAttribute::Table(TABLE));
        m.attributes.push(RouteAttribute::Oif(LOOPBACK_INDEX));
        // Answers from a server bound to a wildcard address then leave from
        // the loopback address; without a preferred source the kernel picks
        // the client's own (non-local) address and refuses (ENETUNREACH).
        let loopback: IpAddr = if like.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        m.attributes
            .push(RouteAttribute::PrefSource(loopback.into()));
        match self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answer = vec![0u8; 8192];
        loop {
            let n = self.socket.recv(&mut &mut answer[..], 0)?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if reply.header.sequence_number != self.seq {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                },
                _ => Ok(()),
            };
        }
    }
}
