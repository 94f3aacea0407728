//! TCP in the guest's ethernet frames, read where the stack does not:
//! where the headers are ([`tcp_offsets`]), and the MSS of the guest's SYNs
//! raised for offloads ([`raise_syn_mss`]). The bytes are the guest's, so
//! the fuzz target `gvtap_syn_mss` feeds them arbitrary frames.

/// An ethernet header without VLAN tags.
pub const ETHERNET_HEADER: usize = 14;

/// Where the IP (v4 or v6) and TCP headers of an ethernet frame start,
/// the TCP header's and the whole segment's length.
pub struct TcpOffsets {
    pub ip: usize,
    pub l4: usize,
    pub header_len: usize,
    pub tcp_len: usize,
    pub v6: bool,
}

pub fn tcp_offsets(frame: &[u8]) -> Option<TcpOffsets> {
    let ip = ETHERNET_HEADER;
    if frame.len() >= ip + 40 && frame[12..14] == [0x86, 0xdd] && frame[ip] >> 4 == 6 {
        // IPv6 with TCP right after the fixed header (the stack and the
        // guest's kernel add no extension headers to TCP).
        let payload = usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
        let l4 = ip + 40;
        if frame[ip + 6] != 6 || payload < 20 || l4 + payload > frame.len() {
            return None;
        }
        let header_len = usize::from(frame[l4 + 12] >> 4) * 4;
        if header_len < 20 || header_len > payload {
            return None;
        }
        return Some(TcpOffsets {
            ip,
            l4,
            header_len,
            tcp_len: payload,
            v6: true,
        });
    }
    if frame.len() < ip + 20 || frame[12..14] != [0x08, 0x00] || frame[ip] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    if frame[ip + 9] != 6 || ihl < 20 || total < ihl + 20 || ip + total > frame.len() {
        return None;
    }
    let l4 = ip + ihl;
    let header_len = usize::from(frame[l4 + 12] >> 4) * 4;
    if header_len < 20 || ihl + header_len > total {
        return None;
    }
    Some(TcpOffsets {
        ip,
        l4,
        header_len,
        tcp_len: total - ihl,
        v6: false,
    })
}

/// Raises the MSS option of a SYN (or SYN-ACK) from the guest to what an
/// IP packet of `stack_mtu` bytes carries, so that the stack sends
/// super-segments the guest's kernel takes as GSO packets; what the
/// guest's MTU allows per wire segment stays in the virtio-net header.
/// Returns whether it changed the frame. The stack verifies no TCP
/// checksums, and the frame goes nowhere else.
pub fn raise_syn_mss(frame: &mut [u8], stack_mtu: u32) -> bool {
    let Some(t) = tcp_offsets(frame) else {
        return false;
    };
    let ip_header = if t.v6 { 40 } else { 20 };
    let mss = stack_mtu.saturating_sub(ip_header + 20).min(65535) as u16;
    if frame[t.l4 + 13] & 0x02 == 0 {
        return false;
    }
    let mut at = t.l4 + 20;
    let end = t.l4 + t.header_len;
    while at < end {
        match frame[at] {
            0 => break,
            1 => at += 1,
            kind => {
                let len = usize::from(*frame.get(at + 1).unwrap_or(&0));
                if len < 2 || at + len > end {
                    break;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([frame[at + 2], frame[at + 3]]);
                    if old < mss {
                        frame[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
                        return true;
                    }
                    return false;
                }
                at += len;
            }
        }
    }
    false
}
