//! A first look at each frame from the guest, before the stack sees it: the
//! NAT must open a host connection for a new TCP SYN, a UDP flow for a new
//! datagram, and answers ICMP echo itself.

use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A SYN without ACK: the guest opens a connection.
    TcpSyn {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    /// Any other TCP segment.
    Tcp {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    /// A UDP datagram (or its first fragment).
    Udp {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    /// An ICMP echo request; the ICMP message starts at `icmp_offset`.
    EchoRequest {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
        seq: u16,
        icmp_offset: usize,
        icmp_len: usize,
    },
    /// An ARP request for `target`.
    ArpRequest { target: Ipv4Addr },
    /// Anything else (later fragments, ARP replies, unknown protocols):
    /// the stack decides.
    Other,
}

/// What the NAT needs to know about a frame, IPv4 or IPv6: the variants
/// of [`Frame`] with addresses of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    TcpSyn {
        src: SocketAddr,
        dst: SocketAddr,
    },
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
    },
    /// An ICMP or ICMPv6 echo request; the message starts at `icmp_offset`.
    EchoRequest {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        icmp_offset: usize,
        icmp_len: usize,
    },
    ArpRequest {
        target: Ipv4Addr,
    },
    /// Anything else (neighbour discovery, later fragments, ...): the
    /// stack decides.
    Other,
}

/// Classifies `frame`, IPv4 or IPv6, and returns the sender's MAC with it.
pub fn inspect(frame: &[u8]) -> (Packet, [u8; 6]) {
    let (v4, mac) = classify(frame);
    let packet = match v4 {
        Frame::Other => match EthernetFrame::new_checked(frame) {
            Ok(eth) if eth.ethertype() == EthernetProtocol::Ipv6 => {
                classify_ipv6(eth.payload(), frame.len() - eth.payload().len())
            }
            _ => Packet::Other,
        },
        v4 => v4.into(),
    };
    (packet, mac)
}

/// What [`classify`] found in an IPv4 or ARP frame, as a [`Packet`].
impl From<Frame> for Packet {
    fn from(frame: Frame) -> Packet {
        match frame {
            Frame::TcpSyn { src, dst } => Packet::TcpSyn {
                src: src.into(),
                dst: dst.into(),
            },
            Frame::Tcp { src, dst } => Packet::Tcp {
                src: src.into(),
                dst: dst.into(),
            },
            Frame::Udp { src, dst } => Packet::Udp {
                src: src.into(),
                dst: dst.into(),
            },
            Frame::EchoRequest {
                src,
                dst,
                ident,
                icmp_offset,
                icmp_len,
                ..
            } => Packet::EchoRequest {
                src: src.into(),
                dst: dst.into(),
                ident,
                icmp_offset,
                icmp_len,
            },
            Frame::ArpRequest { target } => Packet::ArpRequest { target },
            Frame::Other => Packet::Other,
        }
    }
}

/// An IPv6 packet whose next header is TCP, UDP or ICMPv6 right away (the
/// guest's kernel adds no extension headers to these; fragments were put
/// together before, see `reassembly`).
fn classify_ipv6(payload: &[u8], ip_offset: usize) -> Packet {
    let Ok(ip) = Ipv6Packet::new_checked(payload) else {
        return Packet::Other;
    };
    if ip.version() != 6 {
        return Packet::Other;
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    let v6 = |a, port| SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0));
    match ip.next_header() {
        IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
            Ok(tcp) => {
                let src = v6(src_ip, tcp.src_port());
                let dst = v6(dst_ip, tcp.dst_port());
                if tcp.syn() && !tcp.ack() && !tcp.rst() {
                    Packet::TcpSyn { src, dst }
                } else {
                    Packet::Tcp { src, dst }
                }
            }
            Err(_) => Packet::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
            Ok(udp) => Packet::Udp {
                src: v6(src_ip, udp.src_port()),
                dst: v6(dst_ip, udp.dst_port()),
            },
            Err(_) => Packet::Other,
        },
        IpProtocol::Icmpv6 => match Icmpv6Packet::new_checked(ip.payload()) {
            Ok(icmp) if icmp.msg_type() == Icmpv6Message::EchoRequest => Packet::EchoRequest {
                src: src_ip.into(),
                dst: dst_ip.into(),
                ident: icmp.echo_ident(),
                icmp_offset: ip_offset + 40,
                icmp_len: ip.payload().len(),
            },
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

/// Classifies `frame` (IPv4 and ARP; IPv6 is [`Frame::Other`] here, see
/// [`inspect`]) and returns the sender's MAC with it.
pub fn classify(frame: &[u8]) -> (Frame, [u8; 6]) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return (Frame::Other, [0; 6]);
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(eth.src_addr().as_bytes());
    let kind = match eth.ethertype() {
        EthernetProtocol::Ipv4 => classify_ipv4(eth.payload(), frame.len() - eth.payload().len()),
        EthernetProtocol::Arp => classify_arp(eth.payload()),
        _ => Frame::Other,
    };
    (kind, mac)
}

fn classify_arp(payload: &[u8]) -> Frame {
    match ArpPacket::new_checked(payload) {
        Ok(arp)
            if arp.operation() == ArpOperation::Request
                && arp.target_protocol_addr().len() == 4 =>
        {
            let t = arp.target_protocol_addr();
            Frame::ArpRequest {
                target: Ipv4Addr::new(t[0], t[1], t[2], t[3]),
            }
        }
        _ => Frame::Other,
    }
}

fn classify_ipv4(payload: &[u8], ip_offset: usize) -> Frame {
    let Ok(ip) = Ipv4Packet::new_checked(payload) else {
        return Frame::Other;
    };
    // new_checked checks lengths only; the stack drops other versions, so
    // the NAT must not act on them (found by fuzzing).
    if ip.version() != 4 || ip.frag_offset() != 0 {
        return Frame::Other;
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    let l4_offset = ip_offset + usize::from(ip.header_len());
    match ip.next_header() {
        IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
            Ok(tcp) => {
                let src = SocketAddrV4::new(src_ip, tcp.src_port());
                let dst = SocketAddrV4::new(dst_ip, tcp.dst_port());
                if tcp.syn() && !tcp.ack() && !tcp.rst() {
                    Frame::TcpSyn { src, dst }
                } else {
                    Frame::Tcp { src, dst }
                }
            }
            Err(_) => Frame::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
            Ok(udp) => Frame::Udp {
                src: SocketAddrV4::new(src_ip, udp.src_port()),
                dst: SocketAddrV4::new(dst_ip, udp.dst_port()),
            },
            // A first fragment may be shorter than the length it announces.
            Err(_) if ip.more_frags() && ip.payload().len() >= 8 => {
                let p = ip.payload();
                Frame::Udp {
                    src: SocketAddrV4::new(src_ip, u16::from_be_bytes([p[0], p[1]])),
                    dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([p[2], p[3]])),
                }
            }
            Err(_) => Frame::Other,
        },
        IpProtocol::Icmp if !ip.more_frags() => match Icmpv4Packet::new_checked(ip.payload()) {
            Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoRequest => Frame::EchoRequest {
                src: src_ip,
                dst: dst_ip,
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq_no(),
                icmp_offset: l4_offset,
                icmp_len: ip.payload().len(),
            },
            _ => Frame::Other,
        },
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_frame::ETHERNET_HEADER;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetAddress, EthernetRepr, Ipv4Repr};

    const IPV4_HEADER: usize = 20;

    /// An ethernet + IPv4 frame carrying `payload`.
    fn ipv4_frame(src: &Ipv4Addr, dst: &Ipv4Addr, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; ETHERNET_HEADER + IPV4_HEADER + payload.len()];
        EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        Ipv4Repr {
            src_addr: *src,
            dst_addr: *dst,
            next_header: proto,
            payload_len: payload.len(),
            hop_limit: 64,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[ETHERNET_HEADER..]),
            &ChecksumCapabilities::default(),
        );
        buf[ETHERNET_HEADER + IPV4_HEADER..].copy_from_slice(payload);
        buf
    }

    /// A bare 20-byte TCP header with the given flags byte.
    fn tcp_segment(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&src_port.to_be_bytes());
        t[2..4].copy_from_slice(&dst_port.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&1024u16.to_be_bytes());
        t
    }

    #[test]
    fn syn_is_told_apart_from_other_segments() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 1), 80);
        let syn = ipv4_frame(
            src.ip(),
            dst.ip(),
            IpProtocol::Tcp,
            &tcp_segment(40000, 80, 0x02),
        );
        assert_eq!(classify(&syn).0, Frame::TcpSyn { src, dst });
        let ack = ipv4_frame(
            src.ip(),
            dst.ip(),
            IpProtocol::Tcp,
            &tcp_segment(40000, 80, 0x10),
        );
        assert_eq!(classify(&ack).0, Frame::Tcp { src, dst });
        let synack = ipv4_frame(
            src.ip(),
            dst.ip(),
            IpProtocol::Tcp,
            &tcp_segment(40000, 80, 0x12),
        );
        assert_eq!(classify(&synack).0, Frame::Tcp { src, dst });
    }

    #[test]
    fn udp_and_garbage() {
        let mut udp = vec![0u8; 12];
        udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&12u16.to_be_bytes());
        let a = Ipv4Addr::new(10, 0, 2, 100);
        let b = Ipv4Addr::new(10, 0, 2, 1);
        let f = ipv4_frame(&a, &b, IpProtocol::Udp, &udp);
        assert_eq!(
            classify(&f).0,
            Frame::Udp {
                src: SocketAddrV4::new(a, 5353),
                dst: SocketAddrV4::new(b, 53)
            }
        );
        assert_eq!(classify(&f[..20]).0, Frame::Other);
        assert_eq!(classify(&[]).0, Frame::Other);
        let mut not_v4 = f.clone();
        not_v4[ETHERNET_HEADER] = 0x65;
        assert_eq!(classify(&not_v4).0, Frame::Other);
    }
}
