//! The rk-gvtap seeds are what their names say: the properties of
//! `gvtap_inspect` and `gvtap_reassembly` would hold just as well for a
//! classifier that calls everything `Other` or a reassembly that completes
//! nothing, so these pin down what each seed is taken for.

use rk_driver_fuzz::gvtap::{reassembly_outcomes, Outcomes};
use rk_gvtap::classify::Packet;
use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus-seed")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading the seed corpus")
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::TcpSyn { src, .. } if src.is_ipv6() => "tcp6-syn",
        Packet::TcpSyn { .. } => "tcp4-syn",
        Packet::Tcp { src, .. } if src.is_ipv6() => "tcp6",
        Packet::Tcp { .. } => "tcp4",
        Packet::Udp { src, .. } if src.is_ipv6() => "udp6",
        Packet::Udp { .. } => "udp4",
        Packet::EchoRequest { src, .. } if src.is_ipv6() => "echo6",
        Packet::EchoRequest { .. } => "echo4",
        Packet::ArpRequest { .. } => "arp",
        Packet::Other => "other",
    }
}

#[test]
fn inspect_seeds_are_what_they_are_named() {
    let expected = [
        ("crash-ip-version-6-in-ipv4-frame", "other"),
        ("ipv4-arp-request", "arp"),
        ("ipv4-icmp-echo", "echo4"),
        ("ipv4-tcp-syn", "tcp4-syn"),
        ("ipv4-udp-first-fragment", "udp4"),
        ("ipv6-dest-options-udp", "other"),
        ("ipv6-ethertype-version-4", "other"),
        ("ipv6-hop-by-hop-dest-options-tcp-syn", "other"),
        ("ipv6-hop-by-hop-mld-report", "other"),
        ("ipv6-icmp-echo", "echo6"),
        ("ipv6-icmp-echo-padded", "echo6"),
        ("ipv6-icmp-echo-reply", "other"),
        ("ipv6-icmp-echo-short", "other"),
        ("ipv6-ndp-neighbour-solicitation", "other"),
        ("ipv6-ndp-router-solicitation", "other"),
        ("ipv6-no-next-header", "other"),
        ("ipv6-payload-length-past-frame", "other"),
        ("ipv6-tcp-ack", "tcp6"),
        ("ipv6-tcp-rst", "tcp6"),
        ("ipv6-tcp-syn", "tcp6-syn"),
        ("ipv6-tcp-syn-data-offset-past-end", "other"),
        ("ipv6-truncated-header", "other"),
        ("ipv6-truncated-tcp", "other"),
        ("ipv6-udp-dns", "udp6"),
        ("ipv6-udp-first-fragment", "other"),
        ("ipv6-udp-length-past-payload", "other"),
        ("ipv6-udp-length-zero", "other"),
        ("short", "other"),
    ];
    let seeds = seeds("gvtap_inspect");
    let names: Vec<_> = seeds.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<_> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, listed, "every seed has its expected kind here");
    for ((name, frame), (_, want)) in seeds.iter().zip(expected) {
        let (packet, _) = rk_gvtap::classify::inspect(frame);
        assert_eq!(kind(&packet), want, "{name}: {packet:?}");
    }
    // The padded echo request: the ICMPv6 message ends with the IPv6
    // payload, not with the frame.
    let padded = &seeds
        .iter()
        .find(|(n, _)| n == "ipv6-icmp-echo-padded")
        .unwrap()
        .1;
    let (packet, _) = rk_gvtap::classify::inspect(padded);
    assert!(matches!(
        packet,
        Packet::EchoRequest {
            icmp_offset: 54,
            icmp_len: 8,
            ident: 7,
            ..
        }
    ));
}

#[test]
fn reassembly_seeds_have_their_outcomes() {
    // (seed, frames that are no fragment, held, completing a datagram)
    let expected = [
        ("atomic-fragment", 0, 0, 1),
        ("duplicate-fragment", 0, 4, 0),
        ("expired-after-30s", 0, 4, 1),
        ("hop-by-hop-then-fragment", 1, 0, 0),
        ("icmp-echo-2-fragments", 0, 1, 1),
        ("inconsistent-last-fragments", 0, 4, 0),
        ("more-fragments-not-multiple-of-8", 0, 1, 0),
        ("next-header-mismatch", 0, 3, 0),
        ("not-a-fragment", 2, 0, 0),
        ("overlapping-fragments", 0, 4, 1),
        ("past-64k", 0, 1, 0),
        ("payload-length-past-frame", 0, 3, 0),
        ("seventeen-datagrams", 0, 20, 1),
        ("structured-3-pieces", 0, 2, 1),
        ("structured-overlap-and-clock", 0, 3, 2),
        ("structured-twenty-datagrams", 0, 21, 2),
        ("truncated-fragment-header", 1, 1, 0),
        ("udp-3-fragments", 0, 2, 1),
        ("udp-3-fragments-middle-first", 0, 2, 1),
        ("udp-3-fragments-reversed", 0, 2, 1),
    ];
    let seeds = seeds("gvtap_reassembly");
    let names: Vec<_> = seeds.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<_> = expected.iter().map(|e| e.0).collect();
    assert_eq!(names, listed, "every seed has its expected outcomes here");
    for ((name, input), (_, not_fragment, held, complete)) in seeds.iter().zip(expected) {
        let want = Outcomes {
            not_fragment,
            held,
            complete,
        };
        assert_eq!(reassembly_outcomes(input), want, "{name}");
    }
}
