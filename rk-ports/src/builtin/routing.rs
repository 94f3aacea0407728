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

use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rk_driver::netlink::{NetlinkError, NetlinkSocket};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

/// The routing table holding `local default dev lo` (an unused number).
pub const TABLE: u32 = 0x52b;
/// Rule priorities: this base plus the worker's index.
const PRIORITY_BASE: u32 = 1000;
const LOOPBACK_INDEX: u32 = 1;

pub struct LocalDelivery {
    /// NETLINK_ROUTE, opened in the child's network namespace.
    socket: NetlinkSocket,
    /// This worker's rule priority.
    priority: u32,
    /// Whether the local table of IPv4 (0) and IPv6 (1) exists.
    tables: [bool; 2],
    /// Open connections and flows per routed client address.
    refs: HashMap<IpAddr, usize>,
}

fn io_error(e: NetlinkError) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(e.to_string()),
    }
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
        Ok(LocalDelivery {
            socket: NetlinkSocket::route()?,
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
        let rule = RouteNetlinkMessage::NewRule(self.rule(client));
        self.socket
            .create(rule, &format!("adding a rule to deliver {client} locally"))
            .map_err(io_error)?;
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
            let rule = RouteNetlinkMessage::DelRule(self.rule(client));
            let _ = self.socket.execute(rule, 0, "deleting a rule");
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
        self.socket
            .create(RouteNetlinkMessage::NewRoute(m), "adding the local table")
            .map_err(io_error)
    }
}
