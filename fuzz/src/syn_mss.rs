//! rk-gvtap: `gvtap_syn_mss`, the MSS of the guest's TCP SYNs raised for
//! offloads ([`rk_gvtap::tcp_frame::raise_syn_mss`]), which the engine runs
//! on every frame the guest writes to the tap before anything else looks
//! at it.

use crate::{be16, ETH};
use rk_gvtap::tcp_frame::raise_syn_mss;

/// A TCP segment's header as the frame's bytes lay it out: where the TCP
/// header starts and ends, and the IP header's size the MSS is reckoned
/// with (20 for IPv4 whatever its options, 40 for IPv6). IPv4: a complete
/// packet inside the frame; IPv6: TCP right after the fixed header.
fn tcp_header(f: &[u8]) -> Option<(usize, usize, u32)> {
    if f.len() < ETH + 20 {
        return None;
    }
    let (l4, segment, ip_header) = match (be16(f, 12), f[ETH] >> 4) {
        (0x0800, 4) => {
            let ihl = usize::from(f[ETH] & 0x0f) * 4;
            let total = usize::from(be16(f, ETH + 2));
            if f[ETH + 9] != 6 || ihl < 20 || total < ihl + 20 || ETH + total > f.len() {
                return None;
            }
            (ETH + ihl, total - ihl, 20)
        }
        (0x86dd, 6) if f.len() >= ETH + 40 => {
            let payload = usize::from(be16(f, ETH + 4));
            if f[ETH + 6] != 6 || payload < 20 || ETH + 40 + payload > f.len() {
                return None;
            }
            (ETH + 40, payload, 40)
        }
        _ => return None,
    };
    let header = usize::from(f[l4 + 12] >> 4) * 4;
    if header < 20 || header > segment {
        return None;
    }
    Some((l4, l4 + header, ip_header))
}

/// Where the first well-formed MSS option (kind 2, length 4) of a SYN's
/// option list starts, reading options until the end-of-list option or
/// one whose length does not fit.
fn mss_option(f: &[u8]) -> Option<(usize, u32)> {
    let (l4, end, ip_header) = tcp_header(f)?;
    if f[l4 + 13] & 0x02 == 0 {
        return None;
    }
    let mut at = l4 + 20;
    while at < end {
        match f[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = if at + 1 < end {
                    usize::from(f[at + 1])
                } else {
                    0
                };
                if len < 2 || at + len > end {
                    return None;
                }
                if kind == 2 && len == 4 {
                    return Some((at, ip_header));
                }
                at += len;
            }
        }
    }
    None
}

/// The first 4 bytes (little-endian, zero-padded) are the stack's MTU, the
/// rest is the frame. The frame changes exactly when it is a SYN whose
/// first MSS option is below what an IP packet of that MTU carries (capped
/// at 65535), and then only in that option's value, which becomes it; a
/// second pass changes nothing.
pub fn syn_mss(input: &[u8]) {
    let mut mtu = [0u8; 4];
    let split = input.len().min(4);
    mtu[..split].copy_from_slice(&input[..split]);
    let stack_mtu = u32::from_le_bytes(mtu);
    let before = &input[split..];
    let mut frame = before.to_vec();
    let changed = raise_syn_mss(&mut frame, stack_mtu);

    let mut expected = before.to_vec();
    if let Some((at, ip_header)) = mss_option(before) {
        let mss = stack_mtu.saturating_sub(ip_header + 20).min(65535) as u16;
        if be16(before, at + 2) < mss {
            expected[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
        }
    }
    assert_eq!(changed, expected != before, "whether the frame changed");
    assert_eq!(frame, expected, "frame {before:02x?} with MTU {stack_mtu}");
    assert!(
        !raise_syn_mss(&mut frame, stack_mtu),
        "a second pass changed it"
    );
}
