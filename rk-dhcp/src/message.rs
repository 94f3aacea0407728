//! DHCP messages on the wire: what the client sends, and what it makes of
//! the server's replies. Stateless; [`crate::Client`] decides when to send
//! which.

use crate::lease::Lease;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;

/// The UDP port servers listen on.
pub const SERVER_PORT: u16 = 67;
/// The UDP port clients listen on.
pub const CLIENT_PORT: u16 = 68;

/// How the client names itself on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `chaddr`: the interface's MAC address.
    pub mac: [u8; 6],
    /// Option 61. Servers key leases by it, so a RELEASE must carry the same
    /// one as the REQUEST. Default: hardware type 1 followed by the MAC.
    pub client_id: Vec<u8>,
    /// Option 12, sent if set (servers such as dnsmasq then answer DNS for it).
    pub hostname: Option<String>,
    /// Ask for broadcast replies while the client has no address (the
    /// BROADCAST flag): a UDP socket on an interface without an address
    /// receives only those. Default: `true`.
    pub broadcast: bool,
}

impl Identity {
    pub fn new(mac: [u8; 6]) -> Self {
        let mut client_id = vec![1];
        client_id.extend_from_slice(&mac);
        Identity {
            mac,
            client_id,
            hostname: None,
            broadcast: true,
        }
    }
}

/// A message the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// DHCPDISCOVER, broadcast. `requested`: an address the client would like
    /// back (option 50); `rapid_commit`: accept an ACK instead of an OFFER
    /// (option 80, RFC 4039).
    Discover {
        requested: Option<Ipv4Addr>,
        rapid_commit: bool,
    },
    /// DHCPREQUEST in SELECTING, broadcast: takes `offered` from `server`.
    Select { offered: Ipv4Addr, server: Ipv4Addr },
    /// DHCPREQUEST in INIT-REBOOT, broadcast: asks for a known address again.
    Reboot { address: Ipv4Addr },
    /// DHCPREQUEST in RENEWING, unicast to the lease's server.
    Renew { address: Ipv4Addr },
    /// DHCPREQUEST in REBINDING, broadcast to any server.
    Rebind { address: Ipv4Addr },
    /// DHCPRELEASE, unicast to the lease's server.
    Release { address: Ipv4Addr, server: Ipv4Addr },
    /// DHCPDECLINE (the address is in use), broadcast.
    Decline { address: Ipv4Addr, server: Ipv4Addr },
}

impl Outgoing {
    /// The DHCP message type name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Outgoing::Discover { .. } => "DHCPDISCOVER",
            Outgoing::Select { .. }
            | Outgoing::Reboot { .. }
            | Outgoing::Renew { .. }
            | Outgoing::Rebind { .. } => "DHCPREQUEST",
            Outgoing::Release { .. } => "DHCPRELEASE",
            Outgoing::Decline { .. } => "DHCPDECLINE",
        }
    }
}

/// Options the client asks for in DISCOVER and REQUEST.
const WANTED: [OptionCode; 9] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

/// Largest reply the client accepts (option 57): an ethernet MTU of 1500
/// minus the IPv4 and UDP headers.
const MAX_REPLY_SIZE: u16 = 1500 - 28;

/// Encodes `what` from `id` with transaction id `xid`; `secs` is the time
/// since the client began this exchange (RFC 2131 `secs` field).
pub fn build(id: &Identity, xid: u32, secs: u16, what: Outgoing) -> Vec<u8> {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let ciaddr = match what {
        Outgoing::Renew { address }
        | Outgoing::Rebind { address }
        | Outgoing::Release { address, .. } => address,
        _ => unspecified,
    };
    let mut msg = Message::new_with_id(xid, ciaddr, unspecified, unspecified, unspecified, &id.mac);
    msg.set_opcode(Opcode::BootRequest);
    let without_address = ciaddr.is_unspecified() && !matches!(what, Outgoing::Decline { .. });
    if id.broadcast && without_address {
        msg.set_flags(Flags::default().set_broadcast());
    }
    if !matches!(what, Outgoing::Release { .. } | Outgoing::Decline { .. }) {
        msg.set_secs(secs);
    }
    let opts = msg.opts_mut();
    let kind = match what {
        Outgoing::Discover { .. } => MessageType::Discover,
        Outgoing::Release { .. } => MessageType::Release,
        Outgoing::Decline { .. } => MessageType::Decline,
        _ => MessageType::Request,
    };
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(id.client_id.clone()));
    match what {
        Outgoing::Discover {
            requested,
            rapid_commit,
        } => {
            if let Some(a) = requested {
                opts.insert(DhcpOption::RequestedIpAddress(a));
            }
            if rapid_commit {
                opts.insert(DhcpOption::RapidCommit);
            }
        }
        Outgoing::Select { offered, server } => {
            opts.insert(DhcpOption::RequestedIpAddress(offered));
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        Outgoing::Reboot { address } => {
            opts.insert(DhcpOption::RequestedIpAddress(address));
        }
        Outgoing::Renew { .. } | Outgoing::Rebind { .. } => {}
        Outgoing::Release { server, .. } => {
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        Outgoing::Decline { address, server } => {
            opts.insert(DhcpOption::RequestedIpAddress(address));
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
    }
    if !matches!(what, Outgoing::Release { .. } | Outgoing::Decline { .. }) {
        opts.insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(MAX_REPLY_SIZE));
        if let Some(h) = &id.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
    }
    // Encoding a message built from valid fields cannot fail.
    msg.to_vec()
        .expect("DHCP messages built here always encode")
}

/// A server's answer that concerns this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    /// `rapid_commit`: the ACK answers a DISCOVER (RFC 4039).
    Ack {
        lease: Lease,
        rapid_commit: bool,
    },
    Nak(Nak),
}

/// A DHCPNAK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nak {
    pub server: Option<Ipv4Addr>,
    /// Option 56, the server's explanation.
    pub message: Option<String>,
}

/// Why a datagram was not taken as a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not a DHCP message: {0}")]
    Malformed(String),
    /// Not a server's reply (a request: the client's own, or another
    /// client's broadcast): ignore it.
    #[error("not for this client")]
    NotForUs,
    /// A server's reply to an earlier transaction of this client (a server
    /// working through a backlog answers requests the client has given
    /// up on): ignore it, but a server is there and working.
    #[error("a reply to an earlier transaction of this client")]
    Stale,
    /// A server's reply to another client (on a shared bridge a server
    /// broadcasts its replies to clients without an address): ignore it,
    /// but a server is there and working.
    #[error("a reply to another client")]
    OtherClient,
    #[error("DHCP message type {0} is not a reply a client handles")]
    Unexpected(String),
    #[error("invalid reply: {0}")]
    Invalid(String),
}

/// Parses `bytes` as a reply to the transaction `xid` of the client with
/// hardware address `mac`.
pub fn parse_reply(bytes: &[u8], mac: &[u8; 6], xid: u32) -> Result<Reply, ReplyError> {
    crate::guard::check(bytes)?;
    let msg = Message::from_bytes(bytes).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    if msg.opcode() != Opcode::BootReply {
        return Err(ReplyError::NotForUs);
    }
    if msg.chaddr().get(..6) != Some(&mac[..]) {
        return Err(ReplyError::OtherClient);
    }
    if msg.xid() != xid {
        return Err(ReplyError::Stale);
    }
    match msg.opts().msg_type() {
        Some(MessageType::Offer) => Ok(Reply::Offer(Lease::from_message(&msg)?)),
        Some(MessageType::Ack) => Ok(Reply::Ack {
            lease: Lease::from_message(&msg)?,
            rapid_commit: msg.opts().contains(OptionCode::RapidCommit),
        }),
        Some(MessageType::Nak) => Ok(Reply::Nak(Nak {
            server: match msg.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
                _ => None,
            },
            message: match msg.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(m)) => Some(m.clone()),
                _ => None,
            },
        })),
        Some(other) => Err(ReplyError::Unexpected(format!("{other:?}"))),
        None => Err(ReplyError::Malformed("no message type (option 53)".into())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);

    /// A server's reply to `xid` as dnsmasq on lxcbr0 sends it.
    pub(crate) fn server_reply(
        kind: MessageType,
        xid: u32,
        yiaddr: Ipv4Addr,
        extra: &[DhcpOption],
    ) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        if kind != MessageType::Nak {
            o.insert(DhcpOption::AddressLeaseTime(3600));
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            o.insert(DhcpOption::Router(vec![SERVER]));
            o.insert(DhcpOption::DomainNameServer(vec![SERVER]));
        }
        for e in extra {
            o.insert(e.clone());
        }
        m.to_vec().unwrap()
    }

    fn decode(bytes: &[u8]) -> Message {
        Message::from_bytes(bytes).unwrap()
    }

    #[test]
    fn discover_is_broadcast_with_client_id_and_wishes() {
        let id = Identity::new(MAC);
        let m = decode(&build(
            &id,
            7,
            3,
            Outgoing::Discover {
                requested: Some(Ipv4Addr::new(10, 0, 3, 9)),
                rapid_commit: true,
            },
        ));
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 7);
        assert_eq!(m.secs(), 3);
        assert!(m.flags().broadcast());
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 2, 0x11, 0x22, 0x33, 0x44, 0x55
            ]))
        );
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 3, 9)))
        );
        assert!(m.opts().contains(OptionCode::RapidCommit));
        assert!(m.opts().contains(OptionCode::ParameterRequestList));
    }

    #[test]
    fn renew_and_release_carry_the_address_in_ciaddr() {
        let id = Identity::new(MAC);
        let a = Ipv4Addr::new(10, 0, 3, 9);
        let renew = decode(&build(&id, 8, 0, Outgoing::Renew { address: a }));
        assert_eq!(renew.ciaddr(), a);
        assert!(!renew.flags().broadcast());
        assert!(!renew.opts().contains(OptionCode::ServerIdentifier));
        assert!(!renew.opts().contains(OptionCode::RequestedIpAddress));
        let release = decode(&build(
            &id,
            9,
            5,
            Outgoing::Release {
                address: a,
                server: SERVER,
            },
        ));
        assert_eq!(release.opts().msg_type(), Some(MessageType::Release));
        assert_eq!(release.ciaddr(), a);
        assert_eq!(release.secs(), 0);
        assert_eq!(
            release.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert!(!release.opts().contains(OptionCode::ParameterRequestList));
    }

    #[test]
    fn select_names_offer_and_server() {
        let id = Identity::new(MAC);
        let a = Ipv4Addr::new(10, 0, 3, 9);
        let m = decode(&build(
            &id,
            1,
            0,
            Outgoing::Select {
                offered: a,
                server: SERVER,
            },
        ));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert!(m.ciaddr().is_unspecified());
        assert!(m.flags().broadcast());
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(a))
        );
    }

    #[test]
    fn offer_parses_into_a_lease() {
        let a = Ipv4Addr::new(10, 0, 3, 77);
        let bytes = server_reply(
            MessageType::Offer,
            42,
            a,
            &[DhcpOption::Renewal(5), DhcpOption::Rebinding(10)],
        );
        let Reply::Offer(l) = parse_reply(&bytes, &MAC, 42).unwrap() else {
            panic!("not an offer");
        };
        assert_eq!(l.cidr(), "10.0.3.77/24");
        assert_eq!(l.router, Some(SERVER));
        assert_eq!(l.dns, vec![SERVER]);
        assert_eq!(l.server, SERVER);
        assert_eq!(l.lease_time, Some(Duration::from_secs(3600)));
        assert_eq!(l.renew_after, Some(Duration::from_secs(5)));
        assert_eq!(l.rebind_after, Some(Duration::from_secs(10)));
    }

    #[test]
    fn replies_to_others_are_not_ours() {
        let a = Ipv4Addr::new(10, 0, 3, 77);
        let bytes = server_reply(MessageType::Ack, 42, a, &[]);
        assert_eq!(parse_reply(&bytes, &MAC, 43), Err(ReplyError::Stale));
        let other_mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            parse_reply(&bytes, &other_mac, 42),
            Err(ReplyError::OtherClient)
        );
        // Another client's broadcast request.
        let req = build(&Identity::new(MAC), 42, 0, Outgoing::Rebind { address: a });
        assert_eq!(parse_reply(&req, &MAC, 42), Err(ReplyError::NotForUs));
        assert!(matches!(
            parse_reply(&[1, 2, 3], &MAC, 42),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn nak_carries_the_servers_message() {
        let bytes = server_reply(
            MessageType::Nak,
            5,
            Ipv4Addr::UNSPECIFIED,
            &[DhcpOption::Message("wrong network".into())],
        );
        assert_eq!(
            parse_reply(&bytes, &MAC, 5),
            Ok(Reply::Nak(Nak {
                server: Some(SERVER),
                message: Some("wrong network".into())
            }))
        );
    }

    #[test]
    fn ack_without_an_address_is_invalid() {
        let bytes = server_reply(MessageType::Ack, 5, Ipv4Addr::UNSPECIFIED, &[]);
        assert!(matches!(
            parse_reply(&bytes, &MAC, 5),
            Err(ReplyError::Invalid(_))
        ));
    }
}
