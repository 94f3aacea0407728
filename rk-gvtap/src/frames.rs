//! Frames the NAT writes to the guest itself, outside smoltcp's sockets:
//! ICMP echo replies from the host's ping sockets and ICMP errors for UDP
//! destinations the host found closed.

use crate::device::{TapDevice, ETHERNET_HEADER};
use crate::plan::GATEWAY_MAC;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;

fn send_icmp6(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp: &Icmpv6Repr<'_>,
) {
    let caps = ChecksumCapabilities::default();
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: EthernetAddress(guest_mac),
        ethertype: EthernetProtocol::Ipv6,
    };
    let len = ETHERNET_HEADER + IPV6_HEADER + icmp.buffer_len();
    dev.send_frame(len, |buf| {
        eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[ETHERNET_HEADER..]));
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut buf[ETHERNET_HEADER + IPV6_HEADER..]),
            &caps,
        );
    });
}

fn send_icmp(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp: &Icmpv4Repr<'_>,
) {
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: EthernetAddress(guest_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let len = ETHERNET_HEADER + IPV4_HEADER + icmp.buffer_len();
    dev.send_frame(len, |buf| {
        eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        ip.emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[ETHERNET_HEADER..]),
            &caps,
        );
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[ETHERNET_HEADER + IPV4_HEADER..]),
            &caps,
        );
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
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let icmp = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            send_icmp(dev, guest_mac, from, to, &icmp);
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let icmp = Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            send_icmp6(dev, guest_mac, from, to, &icmp);
        }
        _ => {}
    }
}

/// "Port unreachable" for a UDP datagram the guest sent from `guest` to
/// `dest`, so that its socket sees ECONNREFUSED as it would on a wire.
pub fn udp_port_unreachable(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    dest: SocketAddr,
    guest: SocketAddr,
) {
    let mut udp_header = [0u8; 8];
    udp_header[0..2].copy_from_slice(&guest.port().to_be_bytes());
    udp_header[2..4].copy_from_slice(&dest.port().to_be_bytes());
    udp_header[4..6].copy_from_slice(&8u16.to_be_bytes());
    match (dest.ip(), guest.ip()) {
        (IpAddr::V4(d), IpAddr::V4(g)) => {
            let icmp = Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::PortUnreachable,
                header: Ipv4Repr {
                    src_addr: g,
                    dst_addr: d,
                    next_header: IpProtocol::Udp,
                    payload_len: 8,
                    hop_limit: 64,
                },
                data: &udp_header,
            };
            send_icmp(dev, guest_mac, d, g, &icmp);
        }
        (IpAddr::V6(d), IpAddr::V6(g)) => {
            let icmp = Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::PortUnreachable,
                header: Ipv6Repr {
                    src_addr: g,
                    dst_addr: d,
                    next_header: IpProtocol::Udp,
                    payload_len: 8,
                    hop_limit: 64,
                },
                data: &udp_header,
            };
            send_icmp6(dev, guest_mac, d, g, &icmp);
        }
        _ => {}
    }
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

impl Quote {
    /// The quote of `frame` (an ethernet frame carrying IPv4 or IPv6), if
    /// it is one.
    pub fn of(frame: &[u8]) -> Option<Quote> {
        let packet = frame.get(ETHERNET_HEADER..)?;
        let (header, payload) = match packet.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(packet).ok()?;
                let header = Ipv4Repr {
                    src_addr: ip.src_addr(),
                    dst_addr: ip.dst_addr(),
                    next_header: ip.next_header(),
                    payload_len: ip.payload().len(),
                    hop_limit: ip.hop_limit(),
                };
                (QuotedHeader::V4(header), ip.payload())
            }
            6 => {
                let ip = Ipv6Packet::new_checked(packet).ok()?;
                let header = Ipv6Repr {
                    src_addr: ip.src_addr(),
                    dst_addr: ip.dst_addr(),
                    next_header: ip.next_header(),
                    payload_len: ip.payload().len(),
                    hop_limit: ip.hop_limit(),
                };
                (QuotedHeader::V6(header), ip.payload())
            }
            _ => return None,
        };
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
    let data = &quote.data[..quote.data_len];
    match quote.header {
        QuotedHeader::V4(header) => {
            let icmp = Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::CommProhibited,
                header,
                data,
            };
            send_icmp(dev, guest_mac, router, header.src_addr, &icmp);
        }
        QuotedHeader::V6(header) => {
            let Some(router6) = router6 else { return };
            let icmp = Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::AdminProhibit,
                header,
                data,
            };
            send_icmp6(dev, guest_mac, router6, header.src_addr, &icmp);
        }
    }
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
