//! rk-gvtap: `gvtap_classify`, the first look at each raw ethernet frame the
//! guest writes to the tap, before smoltcp sees it
//! ([`rk_gvtap::classify::classify`]). The engine slices the frame with the
//! offsets it returns, opens host sockets for the addresses in it, and
//! answers ARP for the target in it.

use crate::{be16, ETH};
use rk_gvtap::classify::Frame;
use std::net::{Ipv4Addr, SocketAddrV4};

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

/// `gvtap_inspect`: [`rk_gvtap::classify::inspect`], IPv4 and IPv6, on
/// every frame the engine reads (after reassembly). IPv4 and ARP frames get
/// what [`classify`] gives them (and its properties); an IPv6 frame is TCP,
/// UDP or an echo request exactly when its bytes say so with the transport
/// header right after the IPv6 header (no extension headers: those and
/// fragments are the stack's), and the addresses, ports, flags, identifier
/// and the ICMPv6 slice the engine hands to the ping socket match them.
pub fn inspect(f: &[u8]) {
    use rk_gvtap::classify::Packet;
    let (packet, mac) = rk_gvtap::classify::inspect(f);
    let (v4, v4_mac) = rk_gvtap::classify::classify(f);
    assert_eq!(mac, v4_mac);
    classify(f);
    if f.len() < ETH || be16(f, 12) != 0x86dd {
        let lifted: Packet = v4.into();
        assert_eq!(packet, lifted, "IPv4 and ARP as classify has them");
        return;
    }
    assert_eq!(v4, Frame::Other, "IPv6 is not classify's");
    assert_eq!(packet, ipv6_reference(f), "IPv6 frame {f:02x?}");
    if let Packet::EchoRequest {
        icmp_offset,
        icmp_len,
        ..
    } = packet
    {
        // The engine hands f[icmp_offset..icmp_offset + icmp_len] to the
        // ping socket.
        let end = icmp_offset.checked_add(icmp_len).expect("no overflow");
        assert!(
            end <= f.len(),
            "{icmp_offset}+{icmp_len} beyond {}",
            f.len()
        );
    }
}

/// What an IPv6 frame (ethertype 0x86dd, at least 14 bytes) is, read from
/// its bytes (RFC 8200, 9293, 768, 4443) without smoltcp.
fn ipv6_reference(f: &[u8]) -> rk_gvtap::classify::Packet {
    use rk_gvtap::classify::Packet;
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
    const L4: usize = ETH + 40;
    let ip = &f[ETH..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Packet::Other;
    }
    let payload_len = usize::from(be16(ip, 4));
    if ip.len() < 40 + payload_len {
        return Packet::Other;
    }
    // The transport message: the IPv6 payload, without ethernet padding.
    let l4 = &f[L4..L4 + payload_len];
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let (src, dst) = (addr(8), addr(24));
    let sock = |a, port| SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0));
    match ip[6] {
        6 if l4.len() >= 20 => {
            let header = usize::from(l4[12] >> 4) * 4;
            if header < 20 || header > l4.len() {
                return Packet::Other;
            }
            let (src, dst) = (sock(src, be16(l4, 0)), sock(dst, be16(l4, 2)));
            let flags = l4[13];
            // SYN without ACK or RST.
            if flags & 0x02 != 0 && flags & 0x14 == 0 {
                Packet::TcpSyn { src, dst }
            } else {
                Packet::Tcp { src, dst }
            }
        }
        17 if l4.len() >= 8 => {
            let length = usize::from(be16(l4, 4));
            if length < 8 || length > l4.len() {
                return Packet::Other;
            }
            Packet::Udp {
                src: sock(src, be16(l4, 0)),
                dst: sock(dst, be16(l4, 2)),
            }
        }
        58 if l4.len() >= 8 && l4[0] == 128 => Packet::EchoRequest {
            src: src.into(),
            dst: dst.into(),
            ident: be16(l4, 4),
            icmp_offset: L4,
            icmp_len: l4.len(),
        },
        _ => Packet::Other,
    }
}

/// `gvtap_reassembly`: [`rk_gvtap::reassembly::Reassembly`], which puts the
/// guest's IPv6 fragments together before anything else looks at them.
///
/// The input is a list of steps, each starting with a byte whose low two
/// bits pick its kind:
/// - 0: a raw frame: a little-endian `u16` length, then that many bytes
///   (or what is left);
/// - 1 and 2: a well-formed fragment (ethernet + IPv6 + fragment header)
///   of one of 32 datagrams (more than can wait at once), from 5 bytes:
///   datagram (bits 0-4: the identification and, bit 4, the source
///   address) and next header (bit 5: UDP or TCP); offset (13 bits, in
///   8-byte units) with the M flag (bit 0); the length in 8-byte units;
///   up to 7 more bytes (bits 0-2); its bytes are a function of the
///   datagram and of their place in it, so that every datagram has one
///   content however it is cut;
/// - 3: the clock moves on by the next byte in seconds, and `expire` runs.
///
/// Each frame comes 1 µs after the previous one. A model of the rules in
/// the module's documentation (RFC 8200: a datagram with overlapping or
/// inconsistent fragments goes; at most 16 wait, the oldest goes first;
/// 30 s each) gives the outcome each frame must have, and the complete
/// datagram's bytes; each complete datagram also goes through the
/// properties of [`inspect`], as in the engine.
pub fn reassembly(input: &[u8]) {
    reassembly_outcomes(input);
}

/// How many frames of a [`reassembly`] input were not fragments, were
/// held, and completed a datagram (checking the same properties).
pub fn reassembly_outcomes(input: &[u8]) -> Outcomes {
    use rk_gvtap::reassembly::{Outcome, Reassembly};
    use std::time::{Duration, Instant};
    let mut outcomes = Outcomes::default();
    let base = Instant::now();
    let mut tick = Duration::ZERO;
    let mut real = Reassembly::default();
    let mut model = Model::default();
    let mut rest = input;
    while let Some((&op, after)) = rest.split_first() {
        rest = after;
        let frame = match op & 3 {
            0 => {
                let len = match rest {
                    [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
                    _ => 0,
                };
                let data = rest.get(2..).unwrap_or(&[]);
                let (frame, after) = data.split_at(len.min(data.len()));
                rest = after;
                frame.to_vec()
            }
            3 => {
                let secs = rest.first().copied().unwrap_or(0);
                rest = rest.get(1..).unwrap_or(&[]);
                tick += Duration::from_secs(u64::from(secs));
                real.expire(base + tick);
                model.expire(tick);
                assert_eq!(real.len(), model.datagrams.len(), "after expiry");
                continue;
            }
            _ => {
                let Some((step, after)) = rest.split_first_chunk::<5>() else {
                    break;
                };
                rest = after;
                well_formed_fragment(step)
            }
        };
        tick += Duration::from_micros(1);
        let expected = model.add(&frame, tick);
        let got = real.add(&frame, base + tick);
        match (&got, &expected) {
            (Outcome::NotFragment, Expected::NotFragment) => outcomes.not_fragment += 1,
            (Outcome::Held, Expected::Held) => outcomes.held += 1,
            (Outcome::Complete(whole), Expected::Complete(want)) => {
                assert_eq!(whole, want, "the complete datagram");
                inspect(whole);
                outcomes.complete += 1;
            }
            (got, _) => panic!(
                "{} where the model has {}, for the frame of {} bytes {:02x?}",
                match got {
                    Outcome::NotFragment => "NotFragment",
                    Outcome::Held => "Held",
                    Outcome::Complete(_) => "Complete",
                },
                match expected {
                    Expected::NotFragment => "NotFragment",
                    Expected::Held => "Held",
                    Expected::Complete(_) => "Complete",
                },
                frame.len(),
                &frame[..frame.len().min(FRAG_HEAD)],
            ),
        }
        assert!(real.len() <= rk_gvtap::reassembly::MAX_DATAGRAMS);
        assert_eq!(real.len(), model.datagrams.len(), "datagrams waiting");
    }
    outcomes
}

/// What became of the frames of a [`reassembly`] input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    pub not_fragment: usize,
    pub held: usize,
    pub complete: usize,
}

const FRAG_HEAD: usize = ETH + 40 + 8;

/// A fragment described by 5 bytes (see [`reassembly`]).
fn well_formed_fragment(step: &[u8; 5]) -> Vec<u8> {
    let datagram = step[0] & 0x1f;
    let next_header = if step[0] & 0x20 == 0 { 17 } else { 6 };
    let field = u16::from_be_bytes([step[1], step[2]]) & 0xfff9;
    let offset = usize::from(field & !7);
    let len = usize::from(step[3]) * 8 + usize::from(step[4] & 7);
    let mut f = vec![0u8; FRAG_HEAD];
    f[..6].copy_from_slice(&[0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    f[20] = 44;
    f[21] = 64;
    // fd00::100 or fd00::101 to fd00::1
    f[22] = 0xfd;
    f[36..38].copy_from_slice(&[1, datagram >> 4]);
    f[38] = 0xfd;
    f[53] = 1;
    f[54] = next_header;
    f[56..58].copy_from_slice(&field.to_be_bytes());
    f[58..62].copy_from_slice(&u32::from(datagram & 0xf).to_be_bytes());
    f.extend((offset..offset + len).map(|i| (i * 7 + usize::from(datagram) * 13) as u8));
    f
}

#[derive(Debug)]
enum Expected {
    NotFragment,
    Held,
    Complete(Vec<u8>),
}

struct Datagram {
    key: [u8; 36],
    /// Ethernet and IPv6 headers of the first fragment, next header
    /// patched in.
    head: Vec<u8>,
    next_header: u8,
    /// Offset, bytes.
    pieces: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
    started: std::time::Duration,
}

/// The reassembly rules, datagram by datagram, in a plain list.
#[derive(Default)]
struct Model {
    datagrams: Vec<Datagram>,
}

impl Model {
    fn expire(&mut self, now: std::time::Duration) {
        self.datagrams
            .retain(|d| now - d.started < rk_gvtap::reassembly::TIMEOUT);
    }

    fn add(&mut self, f: &[u8], now: std::time::Duration) -> Expected {
        if f.len() < FRAG_HEAD || be16(f, 12) != 0x86dd || f[14] >> 4 != 6 || f[20] != 44 {
            return Expected::NotFragment;
        }
        let payload_len = usize::from(be16(f, 18));
        if payload_len < 8 || ETH + 40 + payload_len > f.len() {
            return Expected::Held;
        }
        let body = &f[FRAG_HEAD..ETH + 40 + payload_len];
        let next_header = f[54];
        let field = usize::from(be16(f, 56));
        let (offset, more) = (field & !7, field & 1 == 1);
        let end = offset + body.len();
        if body.is_empty() || end > 65535 || (more && !body.len().is_multiple_of(8)) {
            return Expected::Held;
        }
        let mut key = [0u8; 36];
        key[..32].copy_from_slice(&f[22..54]);
        key[32..].copy_from_slice(&f[58..62]);
        let at = match self.datagrams.iter().position(|d| d.key == key) {
            Some(at) => at,
            None => {
                if self.datagrams.len() == rk_gvtap::reassembly::MAX_DATAGRAMS {
                    let oldest = (0..self.datagrams.len())
                        .min_by_key(|&i| self.datagrams[i].started)
                        .expect("full");
                    self.datagrams.remove(oldest);
                }
                let mut head = f[..ETH + 40].to_vec();
                head[20] = next_header;
                self.datagrams.push(Datagram {
                    key,
                    head,
                    next_header,
                    pieces: Vec::new(),
                    total: None,
                    started: now,
                });
                self.datagrams.len() - 1
            }
        };
        let d = &mut self.datagrams[at];
        let overlaps = d
            .pieces
            .iter()
            .any(|(s, b)| offset < s + b.len() && *s < end);
        let inconsistent = match d.total {
            Some(t) => end > t || (!more && end != t),
            None => !more && d.pieces.iter().any(|(s, b)| s + b.len() > end),
        };
        if overlaps || inconsistent || d.next_header != next_header {
            self.datagrams.remove(at);
            return Expected::Held;
        }
        d.pieces.push((offset, body.to_vec()));
        if !more {
            d.total = Some(end);
        }
        let Some(total) = d.total else {
            return Expected::Held;
        };
        // Complete when the pieces, in order, cover 0..total.
        d.pieces.sort_by_key(|(s, _)| *s);
        let mut covered = 0;
        for (s, b) in &d.pieces {
            if *s != covered {
                return Expected::Held;
            }
            covered += b.len();
        }
        if covered != total {
            return Expected::Held;
        }
        let d = self.datagrams.remove(at);
        let mut whole = d.head;
        whole[18..20].copy_from_slice(&(total as u16).to_be_bytes());
        whole.resize(ETH + 40 + total, 0);
        for (s, b) in d.pieces {
            whole[ETH + 40 + s..ETH + 40 + s + b.len()].copy_from_slice(&b);
        }
        Expected::Complete(whole)
    }
}
