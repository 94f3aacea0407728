//! The `gvtap_syn_mss` and `vpnkit_offload` seeds are what their names say:
//! the properties would hold as well for code that changes no frame or
//! refuses every packet, so these pin down what each seed is taken for.

use rk_driver_fuzz::offload::frames_of;
use rk_gvtap::tcp_frame::raise_syn_mss;
use rk_vpnkit::framing::FrameBatch;
use rk_vpnkit::offload::{to_wire, VnetHdr, VNET_HDR_LEN};
use std::path::Path;

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus-seed")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn syn_mss_seeds_are_what_they_are_named() {
    let expected = [
        ("ipv4-syn-linux-options", true),
        ("ipv4-syn-ack", true),
        ("ipv6-syn-linux-options", true),
        ("ipv4-syn-mss-above-the-mtu", false),
        ("ipv4-syn-ip-options", true),
        ("ipv4-syn-truncated-option", false),
        ("ipv4-syn-end-of-list-first", false),
        ("ipv4-ack-with-data", false),
        ("ipv4-udp", false),
        ("short", false),
    ];
    for (name, raised) in expected {
        let input = seed("gvtap_syn_mss", name);
        let mtu = u32::from_le_bytes(input[..4].try_into().unwrap());
        let mut frame = input[4..].to_vec();
        assert_eq!(raise_syn_mss(&mut frame, mtu), raised, "{name}");
    }
}

/// The frames `to_wire` puts on the wire for a seed, or its refusal.
fn offload(name: &str) -> Result<usize, String> {
    let input = seed("vpnkit_offload", name);
    let hdr = VnetHdr::parse(&input[..VNET_HDR_LEN].try_into().unwrap());
    let mut batch = FrameBatch::new(usize::from(input[VNET_HDR_LEN]) * 4096);
    let mut packet = input[VNET_HDR_LEN + 1..].to_vec();
    let mut flushed = 0;
    let mut flush = |b: &mut FrameBatch| -> Result<(), ()> {
        flushed += b.frames();
        b.clear();
        Ok(())
    };
    let taken = to_wire(&hdr, &mut packet, &mut batch, &mut flush).unwrap();
    let n = taken.map_err(|e| e.to_string())?;
    assert_eq!(flushed + batch.frames(), n, "{name}");
    Ok(n)
}

#[test]
fn offload_seeds_are_what_they_are_named() {
    assert_eq!(offload("tso-ipv4-4000-bytes-mss-1448"), Ok(3));
    assert_eq!(offload("tso-ipv6-fin-psh-mss-1428"), Ok(3));
    assert_eq!(offload("tso-ipv4-ecn-cwr-small-batch"), Ok(3));
    assert_eq!(offload("tso-ipv4-one-segment"), Ok(1));
    assert_eq!(offload("udp-checksum-partial"), Ok(1));
    assert_eq!(offload("plain-arp"), Ok(1));
    assert!(offload("tso-mss-zero")
        .unwrap_err()
        .contains("segment size 0"));
    assert!(offload("checksum-offset-beyond")
        .unwrap_err()
        .contains("beyond the packet"));
    assert!(offload("tso-unsupported-udp-gso")
        .unwrap_err()
        .contains("unsupported"));
}

/// What the tap gets for a `vpnkit_coalesce` seed: for each packet, how
/// many segments it joins (1: passed through with a plain header).
fn coalesced(name: &str) -> Vec<usize> {
    use rk_vpnkit::coalesce::{Coalescer, TapWriter};
    struct Count(Vec<usize>);
    impl TapWriter for Count {
        fn write_packet(&mut self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) {
            let h = VnetHdr::parse(hdr);
            let segments = match h.gso_size {
                0 => 1,
                mss => (packet.len() - usize::from(u16::from_ne_bytes([hdr[2], hdr[3]])))
                    .div_ceil(usize::from(mss)),
            };
            self.0.push(segments);
        }
    }
    let input = seed("vpnkit_coalesce", name);
    assert!(
        input.first().is_none_or(|m| m & 1 == 0),
        "{name}: fixed up by the harness"
    );
    let mut tap = Count(Vec::new());
    let mut c = Coalescer::default();
    for frame in frames_of(input.get(1..).unwrap_or_default()) {
        c.push(&frame, &mut tap);
    }
    c.flush(&mut tap);
    tap.0
}

#[test]
fn coalesce_seeds_are_what_they_are_named() {
    assert_eq!(coalesced("one-flow-three-full-and-a-short"), [4]);
    assert_eq!(coalesced("psh-closes-the-packet"), [2, 2]);
    assert_eq!(coalesced("two-flows-interleaved-with-arp"), [1, 1, 1, 1, 1]);
    assert_eq!(coalesced("out-of-sequence"), [1, 2]);
    assert_eq!(coalesced("bad-tcp-checksum-passes-through"), [1, 1]);
    assert_eq!(coalesced("ids-not-consecutive"), [2]);
    assert_eq!(coalesced("df-differs"), [1, 1]);
    assert_eq!(coalesced("empty"), Vec::<usize>::new());
}
