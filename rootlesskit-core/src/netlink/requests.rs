//! The rtnetlink requests the core needs: find a link, set it up, add an
//! address, add a default route.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::socket::{Failure, RouteSocket};
use super::NetlinkError;

/// An interface found in the socket's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) name: String,
    pub(super) index: u32,
}

/// Looks an interface up by name (RTM_GETLINK with IFLA_IFNAME).
pub(super) fn find_link(socket: &mut RouteSocket, name: &str) -> Result<Link, NetlinkError> {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    let replies = socket
        .request(RouteNetlinkMessage::GetLink(message), 0)
        .map_err(|failure| match failure.raw_os_error() {
            Some(libc::ENODEV) => NetlinkError::NoSuchInterface(name.to_owned()),
            _ => failure.during(format!("look up interface {name}")),
        })?;
    let index = replies.iter().find_map(|reply| match reply {
        RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
        _ => None,
    });
    match index {
        Some(index) => Ok(Link {
            name: name.to_owned(),
            index,
        }),
        None => Err(NetlinkError::UnexpectedReply {
            operation: format!("look up interface {name}"),
            detail: "the kernel acknowledged without describing the link".to_owned(),
        }),
    }
}

/// Sets the UP flag and, if given, the MTU, in one RTM_SETLINK (the kernel
/// applies the MTU before the flags).
pub(super) fn set_link_up(
    socket: &mut RouteSocket,
    link: &Link,
    mtu: Option<u32>,
) -> Result<(), NetlinkError> {
    let mut message = LinkMessage::default();
    message.header.index = link.index;
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    if let Some(mtu) = mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    socket
        .request(RouteNetlinkMessage::SetLink(message), 0)
        .map(drop)
        .map_err(|failure| {
            let operation = match mtu {
                Some(mtu) => format!("set the MTU of {} to {mtu} and bring it up", link.name),
                None => format!("bring up {}", link.name),
            };
            failure.during(operation)
        })
}

/// Adds `address/prefix_len` to the link; an existing one is kept.
pub(super) fn add_address(
    socket: &mut RouteSocket,
    link: &Link,
    address: IpAddr,
    prefix_len: u8,
) -> Result<(), NetlinkError> {
    let mut message = AddressMessage::default();
    message.header.family = address_family(address);
    message.header.prefix_len = prefix_len;
    message.header.index = link.index;
    message.header.scope = AddressScope::Universe;
    if address.is_ipv6() {
        // Nobody else is on this link to collide with, and a tentative
        // address cannot be bound for about a second after it is added.
        message.header.flags = AddressHeaderFlags::Nodad;
    }
    // Like `ip addr add`: IFA_LOCAL is the interface's own address,
    // IFA_ADDRESS the same address as there is no point-to-point peer.
    message.attributes.push(AddressAttribute::Local(address));
    message.attributes.push(AddressAttribute::Address(address));
    create(socket, RouteNetlinkMessage::NewAddress(message)).map_err(|failure| {
        failure.during(format!(
            "add address {address}/{prefix_len} to {}",
            link.name
        ))
    })
}

/// Adds a default route via `gateway` out of the link; an existing default
/// route is kept.
pub(super) fn add_default_route(
    socket: &mut RouteSocket,
    link: &Link,
    gateway: IpAddr,
) -> Result<(), NetlinkError> {
    let mut message = RouteMessage::default();
    message.header.address_family = address_family(gateway);
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    // RTPROT_BOOT is what `ip route add` uses for administrator-made routes.
    message.header.protocol = RouteProtocol::Boot;
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    message
        .attributes
        .push(RouteAttribute::Gateway(gateway.into()));
    message.attributes.push(RouteAttribute::Oif(link.index));
    create(socket, RouteNetlinkMessage::NewRoute(message)).map_err(|failure| {
        failure.during(format!("add default route via {gateway} dev {}", link.name))
    })
}

/// Sends a creating request, treating "already exists" as success so that
/// configuring twice is harmless.
fn create(socket: &mut RouteSocket, message: RouteNetlinkMessage) -> Result<(), Failure> {
    match socket.request(message, NLM_F_CREATE | NLM_F_EXCL) {
        Err(failure) if failure.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        result => result.map(drop),
    }
}

fn address_family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
