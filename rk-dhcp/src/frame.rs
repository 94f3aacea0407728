//! Ethernet + IPv4 + UDP framing of DHCP messages, for transports that carry
//! raw ethernet frames (a tap-like link such as vpnkit's) instead of UDP
//! datagrams. A client on such a link has no IP stack below it, so it wraps
//! each [`crate::Transmit`] itself and picks DHCP replies out of the frames
//! it receives.

use crate::message::{CLIENT_PORT, SERVER_PORT};
use std::net::Ipv4Addr;

/// The ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Header sizes and numbers that frame code on a raw ethernet link needs
/// (here, and vpnkit's segmentation offload).
pub const ETH_HEADER: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// Frame addresses of one DHCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

impl Addresses {
    /// For a client message: from `client_mac`/`client_ip` (0.0.0.0 while
    /// it has no address) to the broadcast addresses, or to a server whose
    /// MAC the caller learned from an earlier reply.
    pub fn from_client(
        client_mac: [u8; 6],
        client_ip: Ipv4Addr,
        server: Option<([u8; 6], Ipv4Addr)>,
    ) -> Self {
        let (dst_mac, dst_ip) = server.unwrap_or((BROADCAST_MAC, Ipv4Addr::BROADCAST));
        Addresses {
            src_mac: client_mac,
            dst_mac,
            src_ip: client_ip,
            dst_ip,
        }
    }
}

/// Wraps a DHCP client message (UDP 68 → 67) in UDP, IPv4 and ethernet.
pub fn encapsulate(a: &Addresses, dhcp: &[u8]) -> Vec<u8> {
    encapsulate_ports(a, CLIENT_PORT, SERVER_PORT, dhcp)
}

/// Wraps `payload` in UDP (`src_port` → `dst_port`), IPv4 and ethernet.
pub fn encapsulate_ports(a: &Addresses, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HEADER + payload.len();
    let ip_len = IPV4_HEADER + udp_len;
    let mut f = Vec::with_capacity(ETH_HEADER + ip_len);
    f.extend_from_slice(&a.dst_mac);
    f.extend_from_slice(&a.src_mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    // IPv4 header: version 4, IHL 5, no options, TTL 64, don't fragment.
    let mut ip = [0u8; IPV4_HEADER];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&a.src_ip.octets());
    ip[16..20].copy_from_slice(&a.dst_ip.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = [0u8; UDP_HEADER];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = udp_checksum(a.src_ip, a.dst_ip, &udp, payload);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(payload);
    f
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub addresses: Addresses,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// The DHCP reply in `frame` if it is IPv4/UDP to the client port with
/// valid lengths and checksums; `None` for anything else.
pub fn decapsulate(frame: &[u8]) -> Option<Datagram<'_>> {
    let d = udp_in_frame(frame)?;
    (d.dst_port == CLIENT_PORT && d.src_port == SERVER_PORT).then_some(d)
}

/// Any IPv4/UDP datagram in `frame` (unfragmented, checksums valid).
pub fn udp_in_frame(frame: &[u8]) -> Option<Datagram<'_>> {
    let eth = frame.get(..ETH_HEADER)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_HEADER..];
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HEADER || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if total < ihl + UDP_HEADER || total > ip.len() || fragmented || ip[9] != IPPROTO_UDP {
        return None;
    }
    if checksum(&[&ip[..ihl]]) != 0 {
        return None;
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HEADER || udp_len > udp.len() {
        return None;
    }
    let (header, payload) = udp[..udp_len].split_at(UDP_HEADER);
    let sent_sum = u16::from_be_bytes([header[6], header[7]]);
    if sent_sum != 0 {
        // Summing the datagram with its checksum in place gives 0 (or 0xffff
        // folded) when it is intact.
        let mut zeroed = [0u8; UDP_HEADER];
        zeroed.copy_from_slice(header);
        zeroed[6..8].copy_from_slice(&[0, 0]);
        if udp_checksum(src_ip, dst_ip, &zeroed, payload) != sent_sum {
            return None;
        }
    }
    let mut src_mac = [0u8; 6];
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&eth[0..6]);
    src_mac.copy_from_slice(&eth[6..12]);
    Some(Datagram {
        addresses: Addresses {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
        },
        src_port: u16::from_be_bytes([header[0], header[1]]),
        dst_port: u16::from_be_bytes([header[2], header[3]]),
        payload,
    })
}

fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, header: &[u8], payload: &[u8]) -> u16 {
    let len = ((header.len() + payload.len()) as u16).to_be_bytes();
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, IPPROTO_UDP, len[0], len[1]][..],
    ]
    .concat();
    match checksum(&[&pseudo, header, payload]) {
        // 0 means "no checksum" in UDP over IPv4; all ones stands for it.
        0 => 0xffff,
        s => s,
    }
}

/// The internet checksum (RFC 1071) over the concatenation of `parts`;
/// every part but the last has an even length.
fn checksum(parts: &[&[u8]]) -> u16 {
    !fold(parts.iter().fold(0, |acc, part| ones_sum(part, acc)))
}

/// Adds `data` to a ones'-complement sum as big-endian 16-bit words (taken
/// four bytes at a time; an odd tail is padded with zero). `data` must
/// start at an even offset of the checksummed bytes.
pub fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 4];
        w[..rest.len()].copy_from_slice(rest);
        acc += u64::from(u32::from_be_bytes(w));
    }
    acc
}

/// Folds a sum to 16 bits with end-around carry.
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_a_frame() {
        let client = [2, 0, 0, 0, 0, 7];
        let a = Addresses::from_client(client, Ipv4Addr::UNSPECIFIED, None);
        let payload = b"hello dhcp, odd length";
        let f = encapsulate_ports(&a, SERVER_PORT, CLIENT_PORT, payload);
        assert_eq!(&f[..6], &BROADCAST_MAC);
        let d = decapsulate(&f).expect("a valid frame");
        assert_eq!(d.payload, payload);
        assert_eq!(d.addresses, a);
        // A client message is not a reply.
        assert!(decapsulate(&encapsulate(&a, payload)).is_none());
    }

    #[test]
    fn corrupted_frames_are_dropped() {
        let a = Addresses::from_client(
            [2, 0, 0, 0, 0, 7],
            Ipv4Addr::new(10, 0, 3, 5),
            Some(([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 3, 1))),
        );
        let good = encapsulate_ports(&a, SERVER_PORT, CLIENT_PORT, b"payload");
        let mut bad_payload = good.clone();
        *bad_payload.last_mut().unwrap() ^= 1;
        assert!(decapsulate(&bad_payload).is_none());
        let mut bad_ip = good.clone();
        bad_ip[ETH_HEADER + 8] = 1; // TTL changed, header checksum stale
        assert!(decapsulate(&bad_ip).is_none());
        assert!(decapsulate(&good[..30]).is_none());
        assert!(decapsulate(&[]).is_none());
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2, complement 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), 0x220d);
    }
}
