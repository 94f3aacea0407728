//! rk-gvtap: `gvtap_classify`, the first look at each raw ethernet frame the
//! guest writes to the tap, before smoltcp sees it
//! ([`rk_gvtap::classify::classify`]). The engine slices the frame with the
//! offsets it returns, opens host sockets for the addresses in it, and
//! answers ARP for the target in it.

use rk_gvtap::classify::Frame;
use std::net::{Ipv4Addr, SocketAddrV4};

const ETH: usize = 14;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Checks the addresses of a TCP or UDP frame against its bytes: IPv4 with
/// `proto`, not a later fragment, ports at the start of the transport header.
fn check_ports(f: &[u8], proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> usize {
    assert_eq!(be16(f, 12), 0x0800);
    let ip = &f[ETH..];
    assert_eq!(ip[0] >> 4, 4);
    assert_eq!(ip[9], proto);
    assert_eq!(be16(ip, 6) & 0x1fff, 0, "a later fragment has no ports");
    let l4 = ETH + usize::from(ip[0] & 0x0f) * 4;
    assert!(l4 + 4 <= f.len());
    assert_eq!(*src.ip(), ipv4_at(ip, 12));
    assert_eq!(*dst.ip(), ipv4_at(ip, 16));
    assert_eq!(src.port(), be16(f, l4));
    assert_eq!(dst.port(), be16(f, l4 + 2));
    l4
}

pub fn classify(f: &[u8]) {
    let (kind, mac) = rk_gvtap::classify::classify(f);
    if f.len() < ETH {
        assert_eq!(kind, Frame::Other);
        return;
    }
    assert_eq!(&mac, &f[6..12], "the sender's MAC");
    match kind {
        Frame::TcpSyn { src, dst } | Frame::Tcp { src, dst } => {
            let l4 = check_ports(f, 6, src, dst);
            assert!(l4 + 20 <= f.len(), "a TCP header is 20 bytes or more");
            let flags = f[l4 + 13];
            let syn = flags & 0x02 != 0 && flags & 0x10 == 0 && flags & 0x04 == 0;
            assert_eq!(
                matches!(kind, Frame::TcpSyn { .. }),
                syn,
                "flags {flags:#x}"
            );
        }
        Frame::Udp { src, dst } => {
            check_ports(f, 17, src, dst);
        }
        Frame::EchoRequest {
            src,
            dst,
            ident,
            seq,
            icmp_offset,
            icmp_len,
        } => {
            assert_eq!(be16(f, 12), 0x0800);
            let ip = &f[ETH..];
            assert_eq!(ip[9], 1);
            assert_eq!((src, dst), (ipv4_at(ip, 12), ipv4_at(ip, 16)));
            assert_eq!(icmp_offset, ETH + usize::from(ip[0] & 0x0f) * 4);
            // The engine hands f[icmp_offset..icmp_offset + icmp_len] to the
            // ping socket.
            let end = icmp_offset.checked_add(icmp_len).expect("no overflow");
            assert!(
                end <= f.len(),
                "{icmp_offset}+{icmp_len} beyond {}",
                f.len()
            );
            assert!(icmp_len >= 8, "an echo request has an 8-byte header");
            assert_eq!(
                end,
                ETH + usize::from(be16(ip, 2)),
                "ends with the IP packet"
            );
            assert_eq!(f[icmp_offset], 8, "type echo request");
            assert_eq!(ident, be16(f, icmp_offset + 4));
            assert_eq!(seq, be16(f, icmp_offset + 6));
        }
        Frame::ArpRequest { target } => {
            assert_eq!(be16(f, 12), 0x0806);
            let arp = &f[ETH..];
            assert_eq!(be16(arp, 6), 1, "operation request");
            let (hlen, plen) = (usize::from(arp[4]), usize::from(arp[5]));
            assert_eq!(plen, 4);
            let at = 8 + 2 * hlen + plen;
            assert!(at + 4 <= arp.len());
            assert_eq!(target, ipv4_at(arp, at));
        }
        Frame::Other => {}
    }
}
