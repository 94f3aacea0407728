//! Receive coalescing towards the tap, the mirror of `offload`: consecutive
//! TCP segments of one IPv4 flow that vpnkit sends back to back are joined
//! into one super-packet, written to the tap with a virtio-net header that
//! says "TCP, already segmented at this MSS". The child's kernel then takes
//! one packet where it would have taken up to 44, as it does with a network
//! card's receive offload (GRO/LRO), and the pump makes one `write` instead
//! of 44.
//!
//! Only what Linux's GRO would join is joined: plain ACK (or ACK+PSH)
//! segments with payload, no IP options or fragments, the same addresses,
//! TOS, TTL, don't-fragment flag, ports, acknowledgement, window and TCP
//! options, in sequence, every segment but the last exactly one MSS long.
//! Every joined segment's TCP checksum is verified first, since the kernel
//! trusts a super-packet's checksum; anything else passes through
//! untouched, in order.

use crate::offload::{PLAIN_VNET_HDR, VNET_HDR_LEN};
use rk_dhcp::frame::{fold, ones_sum, ETH_HEADER as ETH_LEN, IPPROTO_TCP};

const IP_LEN: usize = 20;
const TCP_AT: usize = ETH_LEN + IP_LEN;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
/// Largest IPv4 packet.
const MAX_IP_PACKET: usize = 65535;

/// Where joined frames go: `write(vnet_header, packet)`.
pub trait TapWriter {
    fn write_packet(&mut self, vnet_hdr: &[u8; VNET_HDR_LEN], packet: &[u8]);
}

/// The segment being grown, if any.
pub struct Coalescer {
    buf: Vec<u8>,
    /// Segments in `buf`; 0 when nothing is pending.
    segments: usize,
    headers: usize,
    mss: usize,
    next_seq: u32,
    /// The last segment was shorter than the MSS or had PSH: nothing more
    /// may be added.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: Vec::with_capacity(ETH_LEN + MAX_IP_PACKET),
            segments: 0,
            headers: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

/// Header length of `frame` if it may be joined with others, else `None`.
fn joinable(frame: &[u8]) -> Option<usize> {
    if frame.len() < TCP_AT + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] != 0x45 || ip[9] != IPPROTO_TCP || fragment != 0 || ETH_LEN + total != frame.len() {
        return None;
    }
    let tcp = &frame[TCP_AT..];
    let headers = TCP_AT + usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if headers < TCP_AT + 20
        || headers >= frame.len()
        || flags & !TCP_PSH != TCP_ACK
        || tcp[18..20] != [0, 0]
    {
        return None;
    }
    // The IP header and the TCP checksum must verify: the super-packet's
    // checksum is not checked again.
    if fold(ones_sum(&ip[..IP_LEN], 0)) != 0xffff {
        return None;
    }
    let tcp_len = frame.len() - TCP_AT;
    let pseudo = ones_sum(&ip[12..20], u64::from(IPPROTO_TCP) + tcp_len as u64);
    if fold(ones_sum(tcp, pseudo)) != 0xffff {
        return None;
    }
    Some(headers)
}

impl Coalescer {
    /// Takes the next frame from vpnkit: joins it to the pending
    /// super-packet, or writes out what is pending and starts anew (or
    /// passes the frame straight through).
    pub fn push(&mut self, frame: &[u8], tap: &mut impl TapWriter) {
        let Some(headers) = joinable(frame) else {
            self.flush(tap);
            tap.write_packet(&PLAIN_VNET_HDR, frame);
            return;
        };
        if self.segments > 0 && !self.fits(frame, headers) {
            self.flush(tap);
        }
        let payload = frame.len() - headers;
        let seq = u32::from_be_bytes(frame[TCP_AT + 4..TCP_AT + 8].try_into().unwrap());
        if self.segments == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(frame);
            self.headers = headers;
            self.mss = payload;
        } else {
            self.buf.extend_from_slice(&frame[headers..]);
            // The super-packet carries PSH if its last segment did.
            self.buf[TCP_AT + 13] |= frame[TCP_AT + 13] & TCP_PSH;
        }
        self.segments += 1;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = payload < self.mss || frame[TCP_AT + 13] & TCP_PSH != 0;
    }

    /// Whether `frame` continues the pending super-packet.
    fn fits(&self, frame: &[u8], headers: usize) -> bool {
        let first = &self.buf;
        let payload = frame.len() - headers;
        !self.closed
            && headers == self.headers
            && payload <= self.mss
            && self.buf.len() - ETH_LEN + payload <= MAX_IP_PACKET
            // Ethernet header, TOS, don't-fragment, TTL and addresses.
            && frame[..ETH_LEN] == first[..ETH_LEN]
            && frame[ETH_LEN + 1] == first[ETH_LEN + 1]
            && frame[ETH_LEN + 6] == first[ETH_LEN + 6]
            && frame[ETH_LEN + 8] == first[ETH_LEN + 8]
            && frame[ETH_LEN + 12..ETH_LEN + 20] == first[ETH_LEN + 12..ETH_LEN + 20]
            // Ports, then (after seq) ack and data offset.
            && frame[TCP_AT..TCP_AT + 4] == first[TCP_AT..TCP_AT + 4]
            && u32::from_be_bytes(frame[TCP_AT + 4..TCP_AT + 8].try_into().unwrap()) == self.next_seq
            && frame[TCP_AT + 8..TCP_AT + 13] == first[TCP_AT + 8..TCP_AT + 13]
            // Window, then options (timestamps included, as GRO requires).
            && frame[TCP_AT + 14..TCP_AT + 16] == first[TCP_AT + 14..TCP_AT + 16]
            && frame[TCP_AT + 20..headers] == first[TCP_AT + 20..headers]
    }

    /// Writes out the pending super-packet (or single segment).
    pub fn flush(&mut self, tap: &mut impl TapWriter) {
        match self.segments {
            0 => return,
            1 => tap.write_packet(&PLAIN_VNET_HDR, &self.buf),
            _ => {
                let hdr = self.finish();
                tap.write_packet(&hdr, &self.buf);
            }
        }
        self.segments = 0;
    }

    /// Fixes the IP length and checksum of a joined packet and leaves the
    /// TCP checksum partial, as a card's receive offload does: the kernel
    /// accepts it as verified.
    fn finish(&mut self) -> [u8; VNET_HDR_LEN] {
        let b = &mut self.buf;
        let total = b.len() - ETH_LEN;
        b[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&(total as u16).to_be_bytes());
        b[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let sum = !fold(ones_sum(&b[ETH_LEN..TCP_AT], 0));
        b[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        let tcp_len = b.len() - TCP_AT;
        let pseudo = fold(ones_sum(
            &b[ETH_LEN + 12..ETH_LEN + 20],
            u64::from(IPPROTO_TCP) + tcp_len as u64,
        ));
        b[TCP_AT + 16..TCP_AT + 18].copy_from_slice(&pseudo.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        hdr[2..4].copy_from_slice(&(self.headers as u16).to_ne_bytes());
        hdr[4..6].copy_from_slice(&(self.mss as u16).to_ne_bytes());
        hdr[6..8].copy_from_slice(&(TCP_AT as u16).to_ne_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
        hdr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{to_wire, VnetHdr};

    #[derive(Default)]
    struct Recorder(Vec<([u8; VNET_HDR_LEN], Vec<u8>)>);

    impl TapWriter for Recorder {
        fn write_packet(&mut self, vnet_hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) {
            self.0.push((*vnet_hdr, packet.to_vec()));
        }
    }

    /// One complete IPv4/TCP segment (timestamps option), checksums valid.
    fn segment(seq: u32, payload: &[u8], flags: u8, ack: u32) -> Vec<u8> {
        let mut f = vec![
            0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd,
        ];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 32 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[192, 168, 127, 254, 192, 168, 127, 3]);
        let ip_sum = !fold(ones_sum(&f[ETH_LEN..TCP_AT], 0));
        f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip_sum.to_be_bytes());
        f.extend_from_slice(&[0x14, 0x51, 0x9c, 0x40]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
        f.extend_from_slice(payload);
        let tcp_len = f.len() - TCP_AT;
        let pseudo = ones_sum(&f[ETH_LEN + 12..ETH_LEN + 20], 6 + tcp_len as u64);
        let sum = !fold(ones_sum(&f[TCP_AT..], pseudo));
        f[TCP_AT + 16..TCP_AT + 18].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn in_order_segments_become_one_super_packet_that_resegments_identically() {
        let data: Vec<u8> = (0..4000u32).map(|i| (i % 241) as u8).collect();
        let segs = [
            segment(100, &data[..1448], TCP_ACK, 7),
            segment(1548, &data[1448..2896], TCP_ACK, 7),
            segment(2996, &data[2896..], TCP_ACK | TCP_PSH, 7),
        ];
        let mut c = Coalescer::default();
        let mut tap = Recorder::default();
        for s in &segs {
            c.push(s, &mut tap);
        }
        assert!(tap.0.is_empty(), "nothing written before the flush");
        c.flush(&mut tap);
        assert_eq!(tap.0.len(), 1);
        let (hdr, packet) = &tap.0[0];
        let h = VnetHdr::parse(hdr);
        assert_eq!((h.gso_type, h.gso_size), (GSO_TCPV4, 1448));
        assert_eq!(packet.len(), TCP_AT + 32 + 4000);
        assert_eq!(fold(ones_sum(&packet[ETH_LEN..TCP_AT], 0)), 0xffff);
        assert_eq!(packet[TCP_AT + 13], TCP_ACK | TCP_PSH);
        // Cutting it up again as the kernel would gives back the originals.
        let mut copy = packet.clone();
        let mut batch = crate::framing::FrameBatch::new(0);
        let mut flush = |_: &mut crate::framing::FrameBatch| -> Result<(), ()> {
            unreachable!("3 segments fit")
        };
        assert_eq!(
            to_wire(&h, &mut copy, &mut batch, &mut flush).unwrap(),
            Ok(3)
        );
        let mut rest = batch.bytes();
        for (i, original) in segs.iter().enumerate() {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let got = &rest[2..2 + len];
            // The IP id of later segments differs (one id per super-packet).
            assert_eq!(&got[TCP_AT..], &original[TCP_AT..], "segment {i}");
            rest = &rest[2 + len..];
        }
    }

    #[test]
    fn what_cannot_be_joined_passes_through_in_order() {
        let mut c = Coalescer::default();
        let mut tap = Recorder::default();
        let a = segment(100, &[1; 1000], TCP_ACK, 7);
        let gap = segment(5000, &[2; 1000], TCP_ACK, 7);
        let other_ack = segment(6000, &[3; 1000], TCP_ACK, 8);
        let syn = segment(7000, &[], 0x02, 0);
        let arp = {
            let mut f = vec![0xff; 12];
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend_from_slice(&[0; 28]);
            f
        };
        let mut bad_sum = segment(7000, &[4; 1000], TCP_ACK, 8);
        bad_sum[TCP_AT + 40] ^= 0xff;
        for f in [&a, &gap, &other_ack, &syn, &arp, &bad_sum] {
            c.push(f, &mut tap);
        }
        c.flush(&mut tap);
        let written: Vec<&Vec<u8>> = tap.0.iter().map(|(_, p)| p).collect();
        assert_eq!(
            written,
            vec![&a, &gap, &other_ack, &syn, &arp, &bad_sum],
            "each on its own, unchanged, in order"
        );
        assert!(tap.0.iter().all(|(h, _)| *h == [0; VNET_HDR_LEN]));
    }

    #[test]
    fn a_short_or_pushed_segment_ends_the_super_packet() {
        let mut c = Coalescer::default();
        let mut tap = Recorder::default();
        c.push(&segment(0, &[1; 1448], TCP_ACK, 7), &mut tap);
        c.push(&segment(1448, &[1; 500], TCP_ACK, 7), &mut tap);
        c.push(&segment(1948, &[1; 1448], TCP_ACK, 7), &mut tap);
        c.push(&segment(3396, &[1; 1448], TCP_ACK | TCP_PSH, 7), &mut tap);
        c.push(&segment(4844, &[1; 1448], TCP_ACK, 7), &mut tap);
        c.flush(&mut tap);
        let sizes: Vec<usize> = tap.0.iter().map(|(_, p)| p.len() - TCP_AT - 32).collect();
        assert_eq!(sizes, [1948, 2896, 1448]);
    }

    #[test]
    fn super_packets_stay_within_the_ipv4_limit() {
        let mut c = Coalescer::default();
        let mut tap = Recorder::default();
        let mut seq = 0u32;
        for _ in 0..100 {
            c.push(&segment(seq, &[5; 1448], TCP_ACK, 7), &mut tap);
            seq += 1448;
        }
        c.flush(&mut tap);
        assert!(tap.0.len() >= 3);
        assert!(tap
            .0
            .iter()
            .all(|(_, p)| p.len() - ETH_LEN <= MAX_IP_PACKET));
        let total: usize = tap.0.iter().map(|(_, p)| p.len() - TCP_AT - 32).sum();
        assert_eq!(total, 100 * 1448);
    }
}
