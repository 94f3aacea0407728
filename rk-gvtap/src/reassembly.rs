//! Putting the guest's fragmented IPv6 datagrams together before the NAT
//! and the stack see them (smoltcp reassembles IPv4 only). The guest's
//! kernel fragments a UDP datagram or an echo request larger than the
//! interface's MTU; once all fragments are there, the whole packet goes
//! through the same path as an unfragmented one.
//!
//! Bounded: at most [`MAX_DATAGRAMS`] datagrams wait at once (the oldest
//! goes when a new one needs room), each at most 64 KiB, for at most
//! [`TIMEOUT`]; overlapping fragments discard their datagram (RFC 8200).
//! An atomic fragment (offset 0, no more to come) is a whole packet of its
//! own and leaves any datagram pending under its identification alone
//! (RFC 6946).

use crate::tcp_frame::ETHERNET_HEADER;
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

pub const MAX_DATAGRAMS: usize = 16;
pub const TIMEOUT: Duration = Duration::from_secs(30);
const IPV6_HEADER: usize = 40;
const FRAGMENT_HEADER: usize = 8;
const FRAGMENT: u8 = 44;
/// The largest payload an IPv6 header can announce.
const MAX_PAYLOAD: usize = 65535;

type Key = (Ipv6Addr, Ipv6Addr, u32);

struct Partial {
    /// The ethernet and IPv6 headers of the first fragment seen, with the
    /// next header the fragments carry.
    head: [u8; ETHERNET_HEADER + IPV6_HEADER],
    data: Vec<u8>,
    /// Byte ranges received, in arrival order.
    ranges: Vec<(usize, usize)>,
    /// Known once the last fragment has arrived.
    total: Option<usize>,
    started: Instant,
}

#[derive(Default)]
pub struct Reassembly {
    partial: HashMap<Key, Partial>,
}

/// What to do with a frame.
pub enum Outcome {
    /// Not an IPv6 fragment: use the frame as it is.
    NotFragment,
    /// A fragment was kept (or dropped); nothing to hand on yet.
    Held,
    /// The datagram is complete: this frame (ethernet, IPv6 header without
    /// a fragment header, the whole payload) replaces the fragment.
    Complete(Vec<u8>),
}

impl Reassembly {
    /// Datagrams being put together.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// Looks at an ethernet frame from the guest.
    pub fn add(&mut self, frame: &[u8], now: Instant) -> Outcome {
        let ip = ETHERNET_HEADER;
        if frame.len() < ip + IPV6_HEADER + FRAGMENT_HEADER
            || frame[12..14] != [0x86, 0xdd]
            || frame[ip] >> 4 != 6
            || frame[ip + 6] != FRAGMENT
        {
            return Outcome::NotFragment;
        }
        let payload_len = usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
        let end_of_packet = ip + IPV6_HEADER + payload_len;
        if payload_len < FRAGMENT_HEADER || end_of_packet > frame.len() {
            return Outcome::Held;
        }
        let f = ip + IPV6_HEADER;
        let next_header = frame[f];
        let field = u16::from_be_bytes([frame[f + 2], frame[f + 3]]);
        let (offset, more) = (usize::from(field & !7), field & 1 != 0);
        let ident = u32::from_be_bytes([frame[f + 4], frame[f + 5], frame[f + 6], frame[f + 7]]);
        let body = &frame[f + FRAGMENT_HEADER..end_of_packet];
        let end = offset + body.len();
        // Every fragment but the last carries a multiple of 8 bytes.
        if end > MAX_PAYLOAD || (more && !body.len().is_multiple_of(8)) || body.is_empty() {
            return Outcome::Held;
        }
        if offset == 0 && !more {
            // An atomic fragment (RFC 6946): the whole packet, with a
            // fragment header; processed alone, whatever else is pending
            // under its identification.
            return Outcome::Complete(packet(&head_of(frame, next_header), body));
        }
        let addr = |at: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&frame[at..at + 16]);
            Ipv6Addr::from(a)
        };
        let key = (addr(ip + 8), addr(ip + 24), ident);
        if !self.partial.contains_key(&key) && self.partial.len() >= MAX_DATAGRAMS {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.partial.remove(&k);
            }
        }
        let p = self.partial.entry(key).or_insert_with(|| Partial {
            head: head_of(frame, next_header),
            data: Vec::new(),
            ranges: Vec::new(),
            total: None,
            started: now,
        });
        let overlaps = p.ranges.iter().any(|&(s, e)| offset < e && s < end);
        let beyond_total = p.total.is_some_and(|t| end > t || (!more && end != t));
        if overlaps || beyond_total || p.head[ip + 6] != next_header {
            self.partial.remove(&key);
            return Outcome::Held;
        }
        if !more {
            if p.ranges.iter().any(|&(_, e)| e > end) {
                self.partial.remove(&key);
                return Outcome::Held;
            }
            p.total = Some(end);
        }
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[offset..end].copy_from_slice(body);
        p.ranges.push((offset, end));
        let received: usize = p.ranges.iter().map(|&(s, e)| e - s).sum();
        if p.total != Some(received) {
            return Outcome::Held;
        }
        let Some(p) = self.partial.remove(&key) else {
            return Outcome::Held;
        };
        Outcome::Complete(packet(&p.head, &p.data))
    }

    /// Drops datagrams whose fragments did not all come in time.
    pub fn expire(&mut self, now: Instant) {
        self.partial
            .retain(|_, p| now.duration_since(p.started) < TIMEOUT);
    }
}

/// The ethernet and IPv6 headers of a fragment, with the fragment
/// header's next header in place of "fragment".
fn head_of(frame: &[u8], next_header: u8) -> [u8; ETHERNET_HEADER + IPV6_HEADER] {
    let mut head = [0u8; ETHERNET_HEADER + IPV6_HEADER];
    head.copy_from_slice(&frame[..ETHERNET_HEADER + IPV6_HEADER]);
    head[ETHERNET_HEADER + 6] = next_header;
    head
}

/// The whole packet: `head` with its payload length set, then `data`.
fn packet(head: &[u8; ETHERNET_HEADER + IPV6_HEADER], data: &[u8]) -> Vec<u8> {
    let mut whole = Vec::with_capacity(head.len() + data.len());
    whole.extend_from_slice(head);
    let len = ETHERNET_HEADER + 4;
    whole[len..len + 2].copy_from_slice(&(data.len() as u16).to_be_bytes());
    whole.extend_from_slice(data);
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fragments (ethernet frames) of an IPv6 packet with `payload` after
    /// `next_header`, cut into pieces of `chunk` bytes.
    fn fragments(payload: &[u8], next_header: u8, chunk: usize, ident: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < payload.len() {
            let len = chunk.min(payload.len() - done);
            let more = u16::from(done + len < payload.len());
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&((8 + len) as u16).to_be_bytes());
            ip.extend_from_slice(&[FRAGMENT, 64]);
            ip.extend_from_slice(&"fd00::100".parse::<Ipv6Addr>().unwrap().octets());
            ip.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&[next_header, 0]);
            f.extend_from_slice(&(done as u16 | more).to_be_bytes());
            f.extend_from_slice(&ident.to_be_bytes());
            f.extend_from_slice(&payload[done..done + len]);
            out.push(f);
            done += len;
        }
        out
    }

    #[test]
    fn fragments_in_any_order_make_the_whole_packet_once() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut parts = fragments(&payload, 17, 1448, 7);
        parts.reverse();
        let mut r = Reassembly::default();
        let now = Instant::now();
        let mut whole = None;
        for p in &parts {
            match r.add(p, now) {
                Outcome::Complete(w) => whole = Some(w),
                Outcome::Held => {}
                Outcome::NotFragment => panic!("a fragment"),
            }
        }
        let whole = whole.expect("complete");
        assert_eq!(whole[14 + 6], 17, "the fragment header is gone");
        assert_eq!(u16::from_be_bytes([whole[18], whole[19]]), 3000);
        assert_eq!(&whole[54..], &payload[..]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn overlaps_lost_pieces_and_floods_stay_bounded() {
        let payload = vec![1u8; 4000];
        let parts = fragments(&payload, 17, 1448, 9);
        let mut r = Reassembly::default();
        let now = Instant::now();
        assert!(matches!(r.add(&parts[0], now), Outcome::Held));
        // The same piece again overlaps: the datagram is dropped.
        assert!(matches!(r.add(&parts[0], now), Outcome::Held));
        assert_eq!(r.len(), 0);
        for ident in 0..100 {
            let p = fragments(&payload, 17, 1448, ident);
            assert!(matches!(r.add(&p[0], now), Outcome::Held));
        }
        assert_eq!(r.len(), MAX_DATAGRAMS);
        r.expire(now + TIMEOUT);
        assert_eq!(r.len(), 0);
        let mut plain = parts[0].clone();
        plain[14 + 6] = 17;
        assert!(matches!(r.add(&plain, now), Outcome::NotFragment));
    }

    #[test]
    fn an_atomic_fragment_is_a_packet_of_its_own() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let parts = fragments(&payload, 17, 1448, 11);
        let atomic = fragments(b"hello, atomic", 58, 1448, 11);
        assert_eq!(atomic.len(), 1);
        let mut r = Reassembly::default();
        let now = Instant::now();
        assert!(matches!(r.add(&parts[0], now), Outcome::Held));
        // Same identification as the pending datagram: no overlap, no drop.
        let Outcome::Complete(alone) = r.add(&atomic[0], now) else {
            panic!("an atomic fragment is complete at once");
        };
        assert_eq!(alone[14 + 6], 58);
        assert_eq!(u16::from_be_bytes([alone[18], alone[19]]), 13);
        assert_eq!(&alone[54..], b"hello, atomic");
        assert_eq!(r.len(), 1, "the pending datagram is still there");
        let mut whole = None;
        for p in &parts[1..] {
            if let Outcome::Complete(w) = r.add(p, now) {
                whole = Some(w);
            }
        }
        assert_eq!(&whole.expect("complete")[54..], &payload[..]);
    }
}
