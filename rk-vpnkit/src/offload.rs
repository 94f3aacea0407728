//! Segmentation and checksum offload between the child's TCP stack and the
//! pump.
//!
//! The tap is opened with a virtio-net header (`IFF_VNET_HDR`) and with
//! checksum and TCP segmentation offload on. The child's kernel then hands
//! the pump TCP super-packets of up to 64 KiB, with the TCP checksum left
//! for the device to fill in, instead of one system call per 1500-byte
//! frame. vpnkit only takes frames that fit its MTU, with finished
//! checksums, so the pump does what a network card would: cut each
//! super-packet into MSS-sized segments with their own IP and TCP headers,
//! and finish checksums.

use crate::framing::FrameBatch;
use rk_dhcp::frame::{fold, ones_sum};
use rk_dhcp::frame::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HEADER as ETH_LEN, IPPROTO_TCP};

/// `struct virtio_net_hdr` (no `num_buffers`): the tap's default header size.
pub const VNET_HDR_LEN: usize = 10;
/// What precedes every frame written to the tap: no offload, checksums
/// complete (the kernel still verifies them).
pub const PLAIN_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header as the tap writes it (native byte order, the legacy
    /// virtio-net convention the tap uses unless told otherwise).
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }
}

/// Why a packet from the tap could not be put on the wire (it is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("malformed offload packet: {0}")]
    Malformed(&'static str),
    #[error("unsupported segmentation type {0:#x}")]
    UnsupportedGso(u8),
}

/// Puts one packet read from the tap on the wire: appends its frame (or its
/// segments) to `batch`, calling `flush` whenever the batch has no room for
/// the next one. `flush` must empty the batch. Returns the frames added.
pub fn to_wire<E>(
    hdr: &VnetHdr,
    packet: &mut [u8],
    batch: &mut FrameBatch,
    flush: &mut dyn FnMut(&mut FrameBatch) -> Result<(), E>,
) -> Result<Result<usize, OffloadError>, E> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                if let Err(e) = finish_checksum(hdr, packet) {
                    return Ok(Err(e));
                }
            }
            if batch.room() < packet.len() {
                flush(batch)?;
            }
            match batch.frame_mut(packet.len()) {
                Some(out) => out.copy_from_slice(packet),
                None => {
                    return Ok(Err(OffloadError::Malformed(
                        "frame longer than 65535 bytes",
                    )))
                }
            }
            Ok(Ok(1))
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(hdr, packet, batch, flush),
        other => Ok(Err(OffloadError::UnsupportedGso(other))),
    }
}

/// Fills in the checksum the kernel left to the device: the field holds the
/// pseudo-header sum; the sum from `csum_start` to the end goes in its place.
fn finish_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > packet.len() {
        return Err(OffloadError::Malformed("checksum offset beyond the packet"));
    }
    let sum = !fold(ones_sum(&packet[start..], 0));
    // As the kernel does: a computed 0 is sent as 0xffff (the same value in
    // ones' complement, and UDP's "no checksum" otherwise).
    let sum = if sum == 0 { 0xffff } else { sum };
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// The parts of a TCP super-packet that every segment repeats.
struct TcpLayout {
    v6: bool,
    ip_len: usize,
    tcp_at: usize,
    headers: usize,
}

fn tcp_layout(packet: &[u8], v6: bool) -> Result<TcpLayout, OffloadError> {
    let bad = OffloadError::Malformed;
    if packet.len() < ETH_LEN + 40 {
        return Err(bad("too short for IP and TCP headers"));
    }
    let ethertype = u16::from_be_bytes([packet[12], packet[13]]);
    let ip = &packet[ETH_LEN..];
    let (ip_len, proto) = if v6 {
        if ethertype != ETHERTYPE_IPV6 || ip[0] >> 4 != 6 {
            return Err(bad("TCPv6 segmentation of a packet that is not IPv6"));
        }
        (40, ip[6])
    } else {
        if ethertype != ETHERTYPE_IPV4 || ip[0] >> 4 != 4 {
            return Err(bad("TCPv4 segmentation of a packet that is not IPv4"));
        }
        (usize::from(ip[0] & 0x0f) * 4, ip[9])
    };
    if proto != IPPROTO_TCP || ip_len < 20 {
        return Err(bad("segmentation of a packet that is not plain TCP"));
    }
    let tcp_at = ETH_LEN + ip_len;
    if packet.len() < tcp_at + 20 {
        return Err(bad("truncated TCP header"));
    }
    let headers = tcp_at + usize::from(packet[tcp_at + 12] >> 4) * 4;
    if headers > packet.len() || headers < tcp_at + 20 {
        return Err(bad("bad TCP header length"));
    }
    Ok(TcpLayout {
        v6,
        ip_len,
        tcp_at,
        headers,
    })
}

fn segment_tcp<E>(
    hdr: &VnetHdr,
    packet: &[u8],
    batch: &mut FrameBatch,
    flush: &mut dyn FnMut(&mut FrameBatch) -> Result<(), E>,
) -> Result<Result<usize, OffloadError>, E> {
    let l = match tcp_layout(packet, hdr.gso_type & !GSO_ECN == GSO_TCPV6) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Ok(Err(OffloadError::Malformed("segment size 0")));
    }
    let (head, payload) = packet.split_at(l.headers);
    let ip_at = ETH_LEN;
    let ip_id = u16::from_be_bytes([head[ip_at + 4], head[ip_at + 5]]);
    let seq = u32::from_be_bytes(head[l.tcp_at + 4..l.tcp_at + 8].try_into().unwrap());
    let flags = head[l.tcp_at + 13];
    let tcp_header_len = l.headers - l.tcp_at;
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = l.headers + chunk.len();
        if batch.room() < len {
            flush(batch)?;
        }
        let Some(out) = batch.frame_mut(len) else {
            return Ok(Err(OffloadError::Malformed(
                "segment longer than 65535 bytes",
            )));
        };
        out[..l.headers].copy_from_slice(head);
        out[l.headers..].copy_from_slice(chunk);
        let tcp_len = tcp_header_len + chunk.len();
        let ip = &mut out[ip_at..l.tcp_at];
        if l.v6 {
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        } else {
            ip[2..4].copy_from_slice(&((l.ip_len + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let sum = !fold(ones_sum(ip, 0));
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let pseudo = pseudo_header_sum(&out[ip_at..l.tcp_at], l.v6, tcp_len);
        let tcp = &mut out[l.tcp_at..];
        let seq_i = seq.wrapping_add((i * mss) as u32);
        tcp[4..8].copy_from_slice(&seq_i.to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        tcp[13] = f;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let sum = !fold(ones_sum(tcp, pseudo));
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(Ok(count))
}

/// The TCP pseudo-header's contribution to the checksum.
fn pseudo_header_sum(ip: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addresses = if v6 { &ip[8..40] } else { &ip[12..20] };
    ones_sum(addresses, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        // A textbook header whose checksum is 0xb861.
        let mut h = hex("450000730000400040110000c0a80001c0a800c7");
        assert_eq!(!fold(ones_sum(&h, 0)), 0xb861);
        h[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(fold(ones_sum(&h, 0)), 0xffff);
        // Odd lengths pad with a zero byte.
        assert_eq!(fold(ones_sum(&[0x01], 0)), 0x0100);
        assert_eq!(fold(ones_sum(&[0x01, 0x02, 0x03], 0)), 0x0402);
    }

    fn valid_ipv4_header(frame: &[u8]) -> bool {
        let ihl = usize::from(frame[ETH_LEN] & 0x0f) * 4;
        fold(ones_sum(&frame[ETH_LEN..ETH_LEN + ihl], 0)) == 0xffff
    }

    fn valid_tcp(frame: &[u8], v6: bool) -> bool {
        let ip_len = if v6 {
            40
        } else {
            usize::from(frame[ETH_LEN] & 0x0f) * 4
        };
        let tcp = &frame[ETH_LEN + ip_len..];
        let pseudo = pseudo_header_sum(&frame[ETH_LEN..ETH_LEN + ip_len], v6, tcp.len());
        fold(ones_sum(tcp, pseudo)) == 0xffff
    }

    /// An ethernet + IP + TCP (with 12 bytes of options) super-packet.
    fn super_packet(v6: bool, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
        if v6 {
            p.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            p.extend_from_slice(&[0x60, 0, 0, 0, 0xff, 0xff, IPPROTO_TCP, 64]);
            p.extend_from_slice(&[0xfd; 16]);
            p.extend_from_slice(&[0xfe; 16]);
        } else {
            p.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            p.extend_from_slice(&[
                0x45,
                0,
                0xff,
                0xff,
                0x12,
                0x34,
                0x40,
                0,
                64,
                IPPROTO_TCP,
                0,
                0,
            ]);
            p.extend_from_slice(&[192, 168, 127, 3, 192, 168, 127, 254]);
        }
        // ports, seq 0xfffffc00 (wraps), ack, doff 8, flags, window,
        // checksum (pseudo-header sum, as the kernel leaves it), urgent
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0xff, 0xff, 0xfc, 0x00, 0, 0, 0, 7]);
        p.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0xab, 0xcd, 0, 0]);
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    fn run(hdr: VnetHdr, packet: &mut [u8], batch_size: usize) -> (Vec<Vec<u8>>, usize) {
        let mut batch = FrameBatch::new(batch_size);
        let mut flushed: Vec<u8> = Vec::new();
        let mut flushes = 0;
        let mut flush = |b: &mut FrameBatch| -> Result<(), ()> {
            flushed.extend_from_slice(b.bytes());
            flushes += 1;
            b.clear();
            Ok(())
        };
        let n = to_wire(&hdr, packet, &mut batch, &mut flush)
            .unwrap()
            .unwrap();
        flushed.extend_from_slice(batch.bytes());
        let mut frames = Vec::new();
        let mut rest = &flushed[..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            frames.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        assert_eq!(frames.len(), n);
        (frames, flushes)
    }

    fn check_segments(v6: bool) {
        // The MSS of a 1500-byte MTU with TCP timestamps.
        let mss: usize = if v6 { 1428 } else { 1448 };
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let flags = 0x10 | TCP_PSH | TCP_FIN | TCP_CWR;
        let mut packet = super_packet(v6, &payload, flags);
        let headers = packet.len() - payload.len();
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 | GSO_ECN },
            gso_size: mss as u16,
            csum_start: (headers - 32) as u16,
            csum_offset: 16,
        };
        let (frames, _) = run(hdr, &mut packet, 0);
        assert_eq!(frames.len(), 4);
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let seg = &f[headers..];
            assert_eq!(seg.len(), if i < 3 { mss } else { 5000 - 3 * mss });
            assert!(valid_tcp(f, v6), "segment {i}: bad TCP checksum");
            let tcp = &f[headers - 32..];
            let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
            assert_eq!(seq, 0xffff_fc00u32.wrapping_add((mss * i) as u32));
            let fl = tcp[13];
            assert_eq!(fl & (TCP_FIN | TCP_PSH) != 0, i == 3, "segment {i}");
            assert_eq!(fl & TCP_CWR != 0, i == 0, "segment {i}");
            assert_eq!(fl & 0x10, 0x10, "ACK kept");
            if v6 {
                let plen = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]);
                assert_eq!(usize::from(plen), 32 + seg.len());
            } else {
                assert!(valid_ipv4_header(f), "segment {i}: bad IP checksum");
                let total = u16::from_be_bytes([f[ETH_LEN + 2], f[ETH_LEN + 3]]);
                assert_eq!(usize::from(total), 20 + 32 + seg.len());
                let id = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]);
                assert_eq!(id, 0x1234 + i as u16);
            }
            assert!(f.len() <= 1514);
            joined.extend_from_slice(seg);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn tcpv4_super_packet_becomes_valid_segments() {
        check_segments(false);
    }

    #[test]
    fn tcpv6_super_packet_becomes_valid_segments() {
        check_segments(true);
    }

    #[test]
    fn segments_that_do_not_fit_flush_the_batch_first() {
        let payload = vec![7u8; 60_000];
        let mut packet = super_packet(false, &payload, 0x10);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: 500,
            csum_start: 34,
            csum_offset: 16,
        };
        // 120 segments of 500 bytes and their headers do not fit in a
        // batch of one maximal record.
        let (frames, flushes) = run(hdr, &mut packet, 0);
        assert_eq!(frames.len(), 120);
        assert!(flushes >= 1);
        assert!(frames.iter().all(|f| valid_tcp(f, false)));
    }

    #[test]
    fn partial_checksum_of_a_plain_frame_is_finished() {
        // UDP 192.168.127.3:5000 → .254:53, payload "hello", the checksum
        // field holding the pseudo-header sum as the kernel leaves it.
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        p.extend_from_slice(&[0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[192, 168, 127, 3, 192, 168, 127, 254]);
        p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 13, 0, 0]);
        p.extend_from_slice(b"hello");
        let pseudo = fold(ones_sum(&p[26..34], 17 + 13));
        p[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            gso_size: 0,
            csum_start: 34,
            csum_offset: 6,
        };
        let (frames, _) = run(hdr, &mut p, 0);
        let f = &frames[0];
        let udp_sum = fold(ones_sum(&f[34..], ones_sum(&f[26..34], 17 + 13)));
        assert_eq!(udp_sum, 0xffff, "UDP checksum must verify");
    }

    #[test]
    fn malformed_packets_are_refused_not_panicking() {
        let mut short = vec![0u8; 30];
        let gso = VnetHdr {
            flags: 0,
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            csum_start: 0,
            csum_offset: 0,
        };
        let mut batch = FrameBatch::new(0);
        let mut flush = |b: &mut FrameBatch| -> Result<(), ()> {
            b.clear();
            Ok(())
        };
        assert!(to_wire(&gso, &mut short, &mut batch, &mut flush)
            .unwrap()
            .is_err());
        let mut udp = super_packet(false, &[1, 2, 3], 0x10);
        udp[ETH_LEN + 9] = 17;
        assert!(to_wire(&gso, &mut udp, &mut batch, &mut flush)
            .unwrap()
            .is_err());
        let zero_mss = VnetHdr { gso_size: 0, ..gso };
        let mut tcp = super_packet(false, &[1, 2, 3], 0x10);
        assert!(to_wire(&zero_mss, &mut tcp, &mut batch, &mut flush)
            .unwrap()
            .is_err());
        let csum_out_of_range = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            gso_size: 0,
            csum_start: 60,
            csum_offset: 16,
        };
        assert!(
            to_wire(&csum_out_of_range, &mut short, &mut batch, &mut flush)
                .unwrap()
                .is_err()
        );
        let udp_gso = VnetHdr { gso_type: 5, ..gso };
        assert_eq!(
            to_wire(&udp_gso, &mut tcp, &mut batch, &mut flush).unwrap(),
            Err(OffloadError::UnsupportedGso(5))
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn header_fields_in_native_order() {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = 1;
        b[1] = GSO_TCPV4;
        b[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        b[6..8].copy_from_slice(&34u16.to_ne_bytes());
        b[8..10].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(
            VnetHdr::parse(&b),
            VnetHdr {
                flags: 1,
                gso_type: GSO_TCPV4,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16
            }
        );
    }
}
