//! rk-vpnkit: `vpnkit_offload`, the packets the child's kernel hands the
//! tap with a virtio-net header (TCP super-packets to cut into segments,
//! checksums left to the device), put on the wire to the vpnkit peer by
//! [`rk_vpnkit::offload::to_wire`]. Root in the child writes what it likes
//! to its tap, header included (`PACKET_VNET_HDR`).

use rk_vpnkit::framing::FrameBatch;
use rk_vpnkit::offload::{to_wire, VnetHdr, VNET_HDR_LEN};

const ETH: usize = 14;
const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The ones' complement sum of `b` (an odd last byte padded with zero),
/// folded to 16 bits, starting from `sum`.
fn ones(b: &[u8], mut sum: u64) -> u16 {
    for pair in b.chunks(2) {
        sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The frames of `batch` (each `u16` little-endian length, then the
/// bytes), appended to `out`; the batch is left empty.
fn drain(batch: &mut FrameBatch, out: &mut Vec<Vec<u8>>) {
    let mut rest = batch.bytes();
    while !rest.is_empty() {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        out.push(rest[2..2 + n].to_vec());
        rest = &rest[2 + n..];
    }
    batch.clear();
}

/// The headers of a TCP super-packet as its bytes lay them out: IP header
/// length and where the payload starts; `None` where the packet is not
/// plain TCP of the family the header names.
fn tcp_headers(p: &[u8], v6: bool) -> Option<(usize, usize)> {
    if p.len() < ETH + 40 {
        return None;
    }
    let ip_len = match (v6, be16(p, 12), p[ETH] >> 4) {
        (true, 0x86dd, 6) if p[ETH + 6] == 6 => 40,
        (false, 0x0800, 4) if p[ETH + 9] == 6 => usize::from(p[ETH] & 0x0f) * 4,
        _ => return None,
    };
    let tcp = ETH + ip_len;
    if ip_len < 20 || p.len() < tcp + 20 {
        return None;
    }
    let headers = tcp + usize::from(p[tcp + 12] >> 4) * 4;
    (headers >= tcp + 20 && headers <= p.len()).then_some((ip_len, headers))
}

/// Bytes 0..10 are the virtio-net header (native byte order, as the tap
/// writes it), byte 10 picks the batch's size (0: the smallest, one frame
/// of any length; n: n × 4 KiB), the rest is the packet.
///
/// A packet that is refused puts nothing on the wire. One that is taken
/// gives as many frames as `to_wire` says. Without segmentation that is
/// the packet itself, with its checksum finished where the header asks
/// (the ones' complement of the sum from `csum_start` to the end, 0 sent
/// as 0xffff). With TCP segmentation: the payload in order, `gso_size`
/// bytes per segment but the last; each segment with the packet's headers,
/// its own lengths, sequence number and (IPv4) identification, FIN and
/// PSH only on the last, CWR only on the first, and valid IPv4 and TCP
/// checksums.
pub fn offload(input: &[u8]) {
    if input.len() < VNET_HDR_LEN + 1 {
        return;
    }
    let mut raw = [0u8; VNET_HDR_LEN];
    raw.copy_from_slice(&input[..VNET_HDR_LEN]);
    let hdr = VnetHdr::parse(&raw);
    let mut batch = FrameBatch::new(usize::from(input[VNET_HDR_LEN]) * 4096);
    let original = &input[VNET_HDR_LEN + 1..];
    let mut packet = original.to_vec();
    let mut out = Vec::new();
    let mut flush = |b: &mut FrameBatch| -> Result<(), ()> {
        drain(b, &mut out);
        Ok(())
    };
    let result = to_wire(&hdr, &mut packet, &mut batch, &mut flush).expect("flush never fails");
    drain(&mut batch, &mut out);

    let n = match result {
        Ok(n) => n,
        Err(e) => {
            assert!(
                out.is_empty(),
                "refused ({e}) after putting {} frames on the wire",
                out.len()
            );
            return;
        }
    };
    assert_eq!(out.len(), n, "frames put on the wire");
    match hdr.gso_type & !GSO_ECN {
        0 => {
            let mut expected = original.to_vec();
            if hdr.flags & NEEDS_CSUM != 0 {
                let start = usize::from(hdr.csum_start);
                let field = start + usize::from(hdr.csum_offset);
                assert!(
                    field + 2 <= original.len(),
                    "a checksum field beyond the packet"
                );
                let sum = match !ones(&original[start..], 0) {
                    0 => 0xffff,
                    s => s,
                };
                expected[field..field + 2].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(out, [expected]);
        }
        gso @ (GSO_TCPV4 | GSO_TCPV6) => segments(original, hdr.gso_size, gso == GSO_TCPV6, &out),
        other => panic!("segmentation type {other:#x} taken"),
    }
}

fn segments(original: &[u8], mss: u16, v6: bool, out: &[Vec<u8>]) {
    let (ip_len, headers) = tcp_headers(original, v6).expect("taken, so plain TCP");
    let mss = usize::from(mss);
    assert!(mss > 0, "segment size 0 taken");
    let tcp = ETH + ip_len;
    let payload = &original[headers..];
    assert_eq!(out.len(), payload.len().div_ceil(mss).max(1));
    let mut joined = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        let last = i + 1 == out.len();
        assert!(seg.len() >= headers);
        let chunk = &seg[headers..];
        assert!(
            chunk.len() == mss || (last && chunk.len() <= mss),
            "segment {i}: {} bytes",
            chunk.len()
        );
        joined.extend_from_slice(chunk);
        let tcp_len = seg.len() - tcp;
        // What may differ from the packet's headers: lengths, IPv4
        // identification and checksum, sequence number, flags, checksum.
        let mut head = seg[..headers].to_vec();
        let mut want = original[..headers].to_vec();
        if v6 {
            assert_eq!(usize::from(be16(seg, ETH + 4)), tcp_len);
        } else {
            assert_eq!(usize::from(be16(seg, ETH + 2)), ip_len + tcp_len);
            assert_eq!(
                be16(seg, ETH + 4),
                be16(original, ETH + 4).wrapping_add(i as u16)
            );
            assert_eq!(
                ones(&seg[ETH..tcp], 0),
                0xffff,
                "segment {i}: IPv4 header checksum"
            );
            for at in [2, 3, 4, 5, 10, 11] {
                head[ETH + at] = 0;
                want[ETH + at] = 0;
            }
        }
        if v6 {
            head[ETH + 4..ETH + 6].fill(0);
            want[ETH + 4..ETH + 6].fill(0);
        }
        assert_eq!(
            be32(seg, tcp + 4),
            be32(original, tcp + 4).wrapping_add((i * mss) as u32)
        );
        let mut flags = original[tcp + 13];
        if !last {
            flags &= !(0x01 | 0x08);
        }
        if i > 0 {
            flags &= !0x80;
        }
        assert_eq!(seg[tcp + 13], flags, "segment {i}: flags");
        let addresses = if v6 {
            &seg[ETH + 8..ETH + 40]
        } else {
            &seg[ETH + 12..ETH + 20]
        };
        let pseudo = u64::from(ones(addresses, 6 + tcp_len as u64));
        assert_eq!(
            ones(&seg[tcp..], pseudo),
            0xffff,
            "segment {i}: TCP checksum"
        );
        for at in [4, 5, 6, 7, 13, 16, 17] {
            head[tcp + at] = 0;
            want[tcp + at] = 0;
        }
        assert_eq!(head, want, "segment {i}: the packet's headers");
    }
    assert_eq!(joined, payload, "the payload, in order");
}
