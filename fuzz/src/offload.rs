//! rk-vpnkit's offloads, both ways:
//!
//! - `vpnkit_offload`: the packets the child's kernel hands the tap with a
//!   virtio-net header (TCP super-packets to cut into segments, checksums
//!   left to the device), put on the wire to the vpnkit peer by
//!   [`rk_vpnkit::offload::to_wire`]. Root in the child writes what it
//!   likes to its tap, header included (`PACKET_VNET_HDR`).
//! - `vpnkit_coalesce`: the frames vpnkit sends, joined into super-packets
//!   for the tap by [`Coalescer`].

use crate::{be16, ETH};
use rk_vpnkit::coalesce::{Coalescer, TapWriter};
use rk_vpnkit::framing::FrameBatch;
use rk_vpnkit::offload::{to_wire, VnetHdr, PLAIN_VNET_HDR, VNET_HDR_LEN};

const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

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

/// Each step of `vpnkit_coalesce`'s input: a `u16` little-endian length,
/// then that many bytes (or what is left) as one frame from vpnkit.
pub fn frames_of(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        out.push(rest[2..2 + n].to_vec());
        rest = &rest[2 + n..];
    }
    out
}

/// Makes an IPv4 frame's total length and checksums right (the fuzzer
/// rarely guesses them, and only such segments are joined).
fn fix_ipv4(f: &mut [u8]) {
    if f.len() < ETH + 20 || be16(f, 12) != 0x0800 || f.len() - ETH > 65535 {
        return;
    }
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    if ihl < 20 || ETH + ihl > f.len() {
        return;
    }
    let total = (f.len() - ETH) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    f[ETH + 10..ETH + 12].fill(0);
    let sum = !ones(&f[ETH..ETH + ihl], 0);
    f[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
    let tcp = ETH + ihl;
    if f[ETH + 9] == 6 && f.len() >= tcp + 20 {
        f[tcp + 16..tcp + 18].fill(0);
        let pseudo = u64::from(ones(&f[ETH + 12..ETH + 20], 6 + (f.len() - tcp) as u64));
        let sum = !ones(&f[tcp..], pseudo);
        f[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
    }
}

struct Recorder(Vec<([u8; VNET_HDR_LEN], Vec<u8>)>);

impl TapWriter for Recorder {
    fn write_packet(&mut self, vnet_hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) {
        self.0.push((*vnet_hdr, packet.to_vec()));
    }
}

/// A frame with its IPv4 identification and header checksum cleared, when
/// it has an IPv4 header: what a segment cut again from a joined packet
/// may not give back (the packet carries the first segment's).
fn without_ip_id(f: &[u8]) -> Vec<u8> {
    let mut f = f.to_vec();
    if f.len() >= ETH + 20 && be16(&f, 12) == 0x0800 {
        for at in [4, 5, 10, 11] {
            f[ETH + at] = 0;
        }
    }
    f
}

/// Byte 0, bit 0: make every frame's IPv4 lengths and checksums right;
/// the rest: frames from vpnkit (see `frames_of`), pushed in order, then
/// a flush.
///
/// What the tap gets, cut again the way the child's kernel would read it
/// (`to_wire`, the mirror), is exactly the frames vpnkit sent, in order,
/// but for the IPv4 identification of joined segments: a frame that is not
/// joined goes to the tap unchanged with a plain header; a joined packet
/// has a valid IPv4 header, its TCP checksum left partial, and fits in an
/// IPv4 packet.
pub fn coalesce(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut frames = frames_of(rest);
    if mode & 1 != 0 {
        frames.iter_mut().for_each(|f| fix_ipv4(f));
    }
    let mut tap = Recorder(Vec::new());
    let mut c = Coalescer::default();
    for f in &frames {
        c.push(f, &mut tap);
    }
    c.flush(&mut tap);

    let mut again = Vec::new();
    for (raw, packet) in &tap.0 {
        let hdr = VnetHdr::parse(raw);
        if *raw == PLAIN_VNET_HDR {
            again.push(packet.clone());
            continue;
        }
        assert!(
            packet.len() <= ETH + 65535,
            "joined packet of {} bytes",
            packet.len()
        );
        assert_eq!(
            ones(&packet[ETH..ETH + 20], 0),
            0xffff,
            "joined packet's IPv4 checksum"
        );
        let mut copy = packet.clone();
        let mut batch = FrameBatch::new(0);
        let mut cut = Vec::new();
        let mut flush = |b: &mut FrameBatch| -> Result<(), ()> {
            drain(b, &mut cut);
            Ok(())
        };
        let n = to_wire(&hdr, &mut copy, &mut batch, &mut flush)
            .expect("flush never fails")
            .unwrap_or_else(|e| panic!("a joined packet the kernel's reading refuses: {e}"));
        drain(&mut batch, &mut cut);
        assert!(n >= 2, "a joined packet of {n} segment");
        again.extend(cut);
    }
    assert_eq!(
        again.len(),
        frames.len(),
        "frames cut again from what the tap got"
    );
    for (i, (got, sent)) in again.iter().zip(&frames).enumerate() {
        let (got, sent) = (without_ip_id(got), without_ip_id(sent));
        if got != sent {
            let at = got.iter().zip(&sent).position(|(a, b)| a != b);
            panic!(
                "frame {i} cut again differs from the one sent ({} and {} bytes, first difference at {at:?})",
                got.len(),
                sent.len()
            );
        }
    }
}
