//! Frames the NAT writes to the guest itself, outside smoltcp's sockets:
//! ICMP echo replies from the host's ping sockets and ICMP errors for UDP
//! destinations the host found closed.

use crate::device::{TapDevice, ETHERNET_HEADER};
use crate::plan::GATEWAY_MAC;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpProtocol, IpRepr,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An ICMP or ICMPv6 message.
enum Icmp<'a> {
    V4(Icmpv4Repr<'a>),
    V6(Icmpv6Repr<'a>),
}

/// Sends the guest an IP packet from `src` to `dst` (of the message's
/// family) carrying `icmp`.
fn send_icmp(dev: &mut TapDevice, guest_mac: [u8; 6], src: IpAddr, dst: IpAddr, icmp: &Icmp<'_>) {
    let caps = ChecksumCapabilities::default();
    let (protocol, ethertype, icmp_len) = match icmp {
        Icmp::V4(m) => (IpProtocol::Icmp, EthernetProtocol::Ipv4, m.buffer_len()),
        Icmp::V6(m) => (IpProtocol::Icmpv6, EthernetProtocol::Ipv6, m.buffer_len()),
    };
    let ip = IpRepr::new(src.into(), dst.into(), protocol, icmp_len, 64);
    let eth = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: EthernetAddress(guest_mac),
        ethertype,
    };
    let icmp_at = ETHERNET_HEADER + ip.header_len();
    dev.send_frame(icmp_at + icmp_len, |buf| {
        eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        ip.emit(&mut buf[ETHERNET_HEADER..], &caps);
        let body = &mut buf[icmp_at..];
        match (icmp, src, dst) {
            (Icmp::V4(m), _, _) => m.emit(&mut Icmpv4Packet::new_unchecked(body), &caps),
            (Icmp::V6(m), IpAddr::V6(s), IpAddr::V6(d)) => {
                m.emit(&s, &d, &mut Icmpv6Packet::new_unchecked(body), &caps)
            }
            _ => {}
        }
    });
}

/// An echo reply (ICMP or ICMPv6) from `from` to the guest.
pub fn echo_reply(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    from: IpAddr,
    to: IpAddr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) {
    let icmp = match (from, to) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Icmp::V4(Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        }),
        (IpAddr::V6(_), IpAddr::V6(_)) => Icmp::V6(Icmpv6Repr::EchoReply {
            ident,
            seq_no,
            data,
        }),
        _ => return,
    };
    send_icmp(dev, guest_mac, from, to, &icmp);
}

/// "Port unreachable" for a UDP datagram the guest sent from `guest` to
/// `dest`, so that its socket sees ECONNREFUSED as it would on a wire.
pub fn udp_port_unreachable(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    dest: SocketAddr,
    guest: SocketAddr,
) {
    let mut data = [0u8; 8];
    data[0..2].copy_from_slice(&guest.port().to_be_bytes());
    data[2..4].copy_from_slice(&dest.port().to_be_bytes());
    data[4..6].copy_from_slice(&8u16.to_be_bytes());
    let header = IpRepr::new(guest.ip().into(), dest.ip().into(), IpProtocol::Udp, 8, 64).into();
    let quote = Quote {
        header,
        data,
        data_len: 8,
    };
    unreachable(dev, guest_mac, dest.ip(), &quote, Why::Port);
}

/// What an ICMP error quotes of the packet it is about: its IP header and
/// the first 8 bytes of its payload (the ports, and TCP's sequence number,
/// by which the guest's kernel finds the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    header: QuotedHeader,
    data: [u8; 8],
    data_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotedHeader {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

impl From<IpRepr> for QuotedHeader {
    fn from(r: IpRepr) -> QuotedHeader {
        match r {
            IpRepr::Ipv4(h) => QuotedHeader::V4(h),
            IpRepr::Ipv6(h) => QuotedHeader::V6(h),
        }
    }
}

impl Quote {
    /// The quote of `frame` (an ethernet frame carrying IPv4 or IPv6), if
    /// it is one.
    pub fn of(frame: &[u8]) -> Option<Quote> {
        let packet = frame.get(ETHERNET_HEADER..)?;
        let (src, dst, next_header, hop_limit, payload) = match packet.first()? >> 4 {
            4 => Ipv4Packet::new_checked(packet).ok().map(|ip| {
                let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
                (s, d, ip.next_header(), ip.hop_limit(), ip.payload())
            })?,
            6 => Ipv6Packet::new_checked(packet).ok().map(|ip| {
                let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
                (s, d, ip.next_header(), ip.hop_limit(), ip.payload())
            })?,
            _ => return None,
        };
        let header = IpRepr::new(src, dst, next_header, payload.len(), hop_limit).into();
        let data_len = payload.len().min(8);
        let mut data = [0u8; 8];
        data[..data_len].copy_from_slice(&payload[..data_len]);
        Some(Quote {
            header,
            data,
            data_len,
        })
    }
}

/// "Destination unreachable: communication administratively prohibited"
/// (ICMP type 3 code 13, ICMPv6 type 1 code 1) from the gateway (`router`
/// or `router6`) for the guest's packet `quote`: its `connect()` fails at
/// once with EHOSTUNREACH, its ping says "Packet filtered".
pub fn prohibited(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    router: Ipv4Addr,
    router6: Option<Ipv6Addr>,
    quote: &Quote,
) {
    let from = match quote.header {
        QuotedHeader::V4(_) => IpAddr::V4(router),
        QuotedHeader::V6(_) => match router6 {
            Some(r) => IpAddr::V6(r),
            None => return,
        },
    };
    unreachable(dev, guest_mac, from, quote, Why::Prohibited);
}

/// Which "destination unreachable".
#[derive(Clone, Copy)]
enum Why {
    Port,
    Prohibited,
}

/// "Destination unreachable" (`why`) from `from` about the guest's packet
/// `quote`, to its sender.
fn unreachable(dev: &mut TapDevice, guest_mac: [u8; 6], from: IpAddr, quote: &Quote, why: Why) {
    let data = &quote.data[..quote.data_len];
    let port = matches!(why, Why::Port);
    let (to, icmp) = match quote.header {
        QuotedHeader::V4(header) => (IpAddr::V4(header.src_addr), {
            use Icmpv4DstUnreachable::{CommProhibited, PortUnreachable};
            let reason = if port {
                PortUnreachable
            } else {
                CommProhibited
            };
            Icmp::V4(Icmpv4Repr::DstUnreachable {
                reason,
                header,
                data,
            })
        }),
        QuotedHeader::V6(header) => (IpAddr::V6(header.src_addr), {
            use Icmpv6DstUnreachable::{AdminProhibit, PortUnreachable};
            let reason = if port { PortUnreachable } else { AdminProhibit };
            Icmp::V6(Icmpv6Repr::DstUnreachable {
                reason,
                header,
                data,
            })
        }),
    };
    send_icmp(dev, guest_mac, from, to, &icmp);
}

/// Which IPv4 datagram a fragment belongs to: (source, destination,
/// identification).
pub type FragmentKey = (Ipv4Addr, Ipv4Addr, u16);

/// For an IPv4 UDP fragment (the first or a later one): its datagram, and
/// whether more fragments follow. (IPv6 fragments are put together before
/// anything looks at them: see `reassembly`.)
pub fn fragment_of(frame: &[u8]) -> Option<(FragmentKey, bool)> {
    let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER..)?).ok()?;
    if ip.next_header() != IpProtocol::Udp || !(ip.more_frags() || ip.frag_offset() != 0) {
        return None;
    }
    let key = (ip.src_addr(), ip.dst_addr(), ip.ident());
    Some((key, ip.more_frags()))
}
