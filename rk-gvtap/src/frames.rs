//! Frames the NAT writes to the guest itself, outside smoltcp's sockets:
//! ICMP echo replies from the host's ping sockets and ICMP errors for UDP
//! destinations the host found closed.

use crate::device::{TapDevice, ETHERNET_HEADER};
use crate::plan::GATEWAY_MAC;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};
use std::net::{Ipv4Addr, SocketAddrV4};

const IPV4_HEADER: usize = 20;

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

/// An echo reply from `from` to the guest.
pub fn echo_reply(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    from: Ipv4Addr,
    to: Ipv4Addr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) {
    let icmp = Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
    };
    send_icmp(dev, guest_mac, from, to, &icmp);
}

/// "Port unreachable" for a UDP datagram the guest sent from `guest` to
/// `dest`, so that its socket sees ECONNREFUSED as it would on a wire.
pub fn udp_port_unreachable(
    dev: &mut TapDevice,
    guest_mac: [u8; 6],
    dest: SocketAddrV4,
    guest: SocketAddrV4,
) {
    let mut udp_header = [0u8; 8];
    udp_header[0..2].copy_from_slice(&guest.port().to_be_bytes());
    udp_header[2..4].copy_from_slice(&dest.port().to_be_bytes());
    udp_header[4..6].copy_from_slice(&8u16.to_be_bytes());
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::PortUnreachable,
        header: Ipv4Repr {
            src_addr: *guest.ip(),
            dst_addr: *dest.ip(),
            next_header: IpProtocol::Udp,
            payload_len: 8,
            hop_limit: 64,
        },
        data: &udp_header,
    };
    send_icmp(dev, guest_mac, *dest.ip(), *guest.ip(), &icmp);
}

/// What an ICMP error quotes of the packet it is about: its IP header and
/// the first 8 bytes of its payload (the ports, and TCP's sequence number,
/// by which the guest's kernel finds the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    header: Ipv4Repr,
    data: [u8; 8],
    data_len: usize,
}

impl Quote {
    /// The quote of `frame` (an ethernet frame carrying IPv4), if it is one.
    pub fn of(frame: &[u8]) -> Option<Quote> {
        let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER..)?).ok()?;
        let payload = ip.payload();
        let data_len = payload.len().min(8);
        let mut data = [0u8; 8];
        data[..data_len].copy_from_slice(&payload[..data_len]);
        Some(Quote {
            header: Ipv4Repr {
                src_addr: ip.src_addr(),
                dst_addr: ip.dst_addr(),
                next_header: ip.next_header(),
                payload_len: payload.len(),
                hop_limit: ip.hop_limit(),
            },
            data,
            data_len,
        })
    }
}

/// "Destination unreachable: communication administratively prohibited"
/// from `router` (the gateway) for the guest's packet `quote`: its
/// `connect()` fails at once with EHOSTUNREACH, its ping says "Packet
/// filtered".
pub fn prohibited(dev: &mut TapDevice, guest_mac: [u8; 6], router: Ipv4Addr, quote: &Quote) {
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::CommProhibited,
        header: quote.header,
        data: &quote.data[..quote.data_len],
    };
    send_icmp(dev, guest_mac, router, quote.header.src_addr, &icmp);
}

/// For an IPv4 UDP fragment (the first or a later one): (source,
/// destination, identification), and whether more fragments follow.
pub fn fragment_of(frame: &[u8]) -> Option<((Ipv4Addr, Ipv4Addr, u16), bool)> {
    let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER..)?).ok()?;
    if ip.next_header() != IpProtocol::Udp || !(ip.more_frags() || ip.frag_offset() != 0) {
        return None;
    }
    Some(((ip.src_addr(), ip.dst_addr(), ip.ident()), ip.more_frags()))
}
