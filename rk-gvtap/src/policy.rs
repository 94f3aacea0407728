//! Where a guest's packet to a destination goes: the host (through the NAT),
//! the DNS forwarder, or nowhere.
//!
//! The NAT's host sockets live in the host's network namespace, so whatever
//! this says `Host` for is sent by the host. Destinations no host may send
//! to, or that would reach the host itself by another way than the
//! gateway's mapping, never get a host socket:
//!
//! | destination | answer |
//! |---|---|
//! | `0.0.0.0/8` ("this network"; `0.0.0.0` is the host itself) | ICMP unreachable |
//! | `127.0.0.0/8` (the host's loopback, not through the gateway) | ICMP unreachable |
//! | `240.0.0.0/4` (reserved) | ICMP unreachable |
//! | `255.255.255.255`, the subnet's broadcast, `224.0.0.0/4` | dropped (no ICMP errors about broadcast or multicast, RFC 1122 3.2.2) |
//! | the gateway with `--disable-host-loopback` (but DNS) | refused by the stack (RST, ICMP port unreachable) |
//! | other addresses of the subnet, port 0 | refused by the stack |
//!
//! The ICMP answer is "communication administratively prohibited" (type 3,
//! code 13): the guest's `connect()` fails at once with EHOSTUNREACH.
//!
//! With `--ipv6` the same rules hold for IPv6: `::/128`, `::1` (other than
//! through the gateway), the IPv4-mapped and -compatible `::/96` and
//! `::ffff:0:0/96` (a host socket to `::ffff:127.0.0.1` would reach the
//! host's IPv4 loopback) and link-local `fe80::/10` are answered with
//! ICMPv6 "administratively prohibited"; multicast `ff00::/8` is dropped;
//! the gateway `fd00::1` is the host's `::1` unless
//! `--disable-host-loopback`.

use crate::plan::{Ipv6Plan, NetPlan};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Open a host socket to this address.
    Host(SocketAddr),
    /// The gateway's DNS port: forward to the host's nameservers.
    Dns,
    /// Refuse: TCP RST or ICMP port unreachable (the stack's default for a
    /// port nobody listens on).
    Refuse,
    /// Never sent: the NAT answers ICMP "administratively prohibited".
    Unreachable,
    /// Drop silently (not from the guest's subnet, broadcast, multicast).
    Drop,
}

/// What an address is, before ports matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Gateway,
    Subnet,
    /// Must never reach a host socket; worth an ICMP error.
    Martian,
    /// Broadcast or multicast: dropped without an answer.
    Group,
    Outside,
}

fn dest(plan: &NetPlan, ip: Ipv4Addr) -> Dest {
    let first = ip.octets()[0];
    if ip.is_broadcast() || ip == plan.broadcast() || ip.is_multicast() {
        Dest::Group
    } else if first == 0 || ip.is_loopback() || first >= 240 {
        Dest::Martian
    } else {
        local(ip == plan.gateway, plan.contains(ip))
    }
}

/// A unicast address that may be reached: the gateway, another address of
/// the subnet, or outside.
fn local(gateway: bool, in_subnet: bool) -> Dest {
    match (gateway, in_subnet) {
        (true, _) => Dest::Gateway,
        (false, true) => Dest::Subnet,
        (false, false) => Dest::Outside,
    }
}

/// Whether `src` may send through the NAT at all: a guest address of the
/// subnet (not the gateway, network or broadcast address).
fn guest_source(plan: &NetPlan, src: Ipv4Addr) -> bool {
    plan.contains(src) && src != plan.gateway && src != plan.network && src != plan.broadcast()
}

/// Route for TCP or UDP to `dst`, an address of class `dest`; `loopback`
/// is the host's loopback address of its family.
fn route_to(plan: &NetPlan, dest: Dest, dst: SocketAddr, loopback: IpAddr) -> Route {
    match dest {
        Dest::Group => Route::Drop,
        Dest::Martian => Route::Unreachable,
        Dest::Gateway if dst.port() == 53 => Route::Dns,
        Dest::Gateway if plan.host_loopback && dst.port() != 0 => {
            Route::Host(SocketAddr::new(loopback, dst.port()))
        }
        Dest::Gateway | Dest::Subnet => Route::Refuse,
        Dest::Outside if dst.port() == 0 => Route::Refuse,
        Dest::Outside => Route::Host(dst),
    }
}

/// Where an ICMP echo to `dst`, an address of class `dest`, goes: `Host`
/// through a host ping socket (to the host's `loopback` for the gateway
/// with host loopback), `Refuse` to let the stack answer for the gateway
/// itself (or ignore other subnet addresses), `Unreachable` or `Drop` as
/// for [`route_to`].
fn ping_route_to(plan: &NetPlan, dest: Dest, dst: IpAddr, loopback: IpAddr) -> Route {
    match dest {
        Dest::Group => Route::Drop,
        Dest::Martian => Route::Unreachable,
        Dest::Gateway if plan.host_loopback => Route::Host(SocketAddr::new(loopback, 0)),
        Dest::Gateway | Dest::Subnet => Route::Refuse,
        Dest::Outside => Route::Host(SocketAddr::new(dst, 0)),
    }
}

/// Route for TCP or UDP from `src` to `dst`.
pub fn route(plan: &NetPlan, src: Ipv4Addr, dst: SocketAddrV4) -> Route {
    if !guest_source(plan, src) {
        return Route::Drop;
    }
    let loopback = Ipv4Addr::LOCALHOST.into();
    route_to(plan, dest(plan, *dst.ip()), dst.into(), loopback)
}

/// [`ping_route_to`] for an IPv4 echo from `src` to `dst`.
pub fn ping_route(plan: &NetPlan, src: Ipv4Addr, dst: Ipv4Addr) -> Route {
    if !guest_source(plan, src) {
        return Route::Drop;
    }
    let loopback = Ipv4Addr::LOCALHOST.into();
    ping_route_to(plan, dest(plan, dst), dst.into(), loopback)
}

fn dest6(plan: &Ipv6Plan, ip: Ipv6Addr) -> Dest {
    let first = ip.segments()[0];
    if ip.is_multicast() {
        Dest::Group
    } else if u128::from(ip) >> 32 == 0 || ip.to_ipv4_mapped().is_some() || first & 0xffc0 == 0xfe80
    {
        // ::/96 holds ::, ::1 and the IPv4-compatible addresses.
        Dest::Martian
    } else {
        local(ip == plan.gateway, plan.contains(ip))
    }
}

fn guest_source6(plan: &Ipv6Plan, src: Ipv6Addr) -> bool {
    plan.contains(src) && src != plan.gateway && src != plan.network.network()
}

/// Route for IPv6 TCP or UDP from `src` to `dst` (`Drop` without `--ipv6`).
pub fn route6(plan: &NetPlan, src: Ipv6Addr, dst: SocketAddrV6) -> Route {
    match &plan.ipv6 {
        Some(p6) if guest_source6(p6, src) => {
            // Without the scope and flow label the guest chose.
            let to = SocketAddrV6::new(*dst.ip(), dst.port(), 0, 0).into();
            let loopback = Ipv6Addr::LOCALHOST.into();
            route_to(plan, dest6(p6, *dst.ip()), to, loopback)
        }
        _ => Route::Drop,
    }
}

/// Route for TCP or UDP of either family.
pub fn route_any(plan: &NetPlan, src: IpAddr, dst: SocketAddr) -> Route {
    match (src, dst) {
        (IpAddr::V4(s), SocketAddr::V4(d)) => route(plan, s, d),
        (IpAddr::V6(s), SocketAddr::V6(d)) => route6(plan, s, d),
        _ => Route::Drop,
    }
}

/// [`ping_route`] for either family (ICMPv6 echo through the host's
/// `::1` for the gateway).
pub fn ping_route_any(plan: &NetPlan, src: IpAddr, dst: IpAddr) -> Route {
    match (src, dst, &plan.ipv6) {
        (IpAddr::V4(s), IpAddr::V4(d), _) => ping_route(plan, s, d),
        (IpAddr::V6(s), IpAddr::V6(d), Some(p6)) if guest_source6(p6, s) => {
            ping_route_to(plan, dest6(p6, d), dst, Ipv6Addr::LOCALHOST.into())
        }
        _ => Route::Drop,
    }
}

/// How a host-side client of a forwarded port appears inside: as itself
/// when the guest can answer it through the gateway (an IPv4 address
/// outside the subnet, not loopback or special), so that the server inside
/// sees the real client; `None` for the rest (loopback and IPv6 clients),
/// which appear as the gateway, the host's loopback inside.
pub fn visible_client(plan: &NetPlan, peer: SocketAddr) -> Option<SocketAddrV4> {
    let std::net::IpAddr::V4(ip) = peer.ip().to_canonical() else {
        return None;
    };
    (dest(plan, ip) == Dest::Outside && peer.port() != 0)
        .then(|| SocketAddrV4::new(ip, peer.port()))
}

/// The last check before any host socket connects or sends: `false` for
/// addresses no NAT socket may ever reach, whoever asked (a nameserver
/// from resolv.conf on the host's loopback is fine; `0.0.0.0` is not, as
/// the kernel takes it for the host itself).
pub fn host_may_reach(to: SocketAddr) -> bool {
    match to {
        SocketAddr::V4(a) => {
            let ip = *a.ip();
            let first = ip.octets()[0];
            !(first == 0 || first >= 224)
        }
        SocketAddr::V6(a) => {
            let ip = *a.ip();
            match ip.to_ipv4_mapped() {
                Some(v4) => host_may_reach(SocketAddr::from((v4, a.port()))),
                None => !(ip.is_unspecified() || ip.is_multicast()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;

    // Addresses are only compared here: nothing is sent anywhere.

    fn plan(disable_host_loopback: bool) -> NetPlan {
        NetPlan::from_request(&ConfigureRequest {
            disable_host_loopback,
            ..Default::default()
        })
        .unwrap()
    }

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

    fn to(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn both() -> [NetPlan; 2] {
        [plan(false), plan(true)]
    }

    #[test]
    fn gateway_is_host_loopback_unless_disabled() {
        assert_eq!(
            route(&plan(false), GUEST, to([10, 0, 2, 1], 8080)),
            Route::Host("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            route(&plan(true), GUEST, to([10, 0, 2, 1], 8080)),
            Route::Refuse
        );
        assert_eq!(
            ping_route(&plan(false), GUEST, Ipv4Addr::new(10, 0, 2, 1)),
            Route::Host("127.0.0.1:0".parse().unwrap())
        );
        // Answered by the stack itself, never by the host.
        assert_eq!(
            ping_route(&plan(true), GUEST, Ipv4Addr::new(10, 0, 2, 1)),
            Route::Refuse
        );
        assert_eq!(
            route(&plan(false), GUEST, to([10, 0, 2, 1], 0)),
            Route::Refuse
        );
    }

    #[test]
    fn dns_port_of_gateway_goes_to_the_forwarder_either_way() {
        for p in both() {
            assert_eq!(route(&p, GUEST, to([10, 0, 2, 1], 53)), Route::Dns);
        }
    }

    #[test]
    fn other_addresses_leave_through_the_host_unchanged() {
        for p in both() {
            assert_eq!(
                route(&p, GUEST, to([192, 0, 2, 7], 443)),
                Route::Host("192.0.2.7:443".parse().unwrap())
            );
            assert_eq!(
                route(&p, GUEST, to([169, 254, 169, 254], 80)),
                Route::Host("169.254.169.254:80".parse().unwrap())
            );
            assert_eq!(
                ping_route(&p, GUEST, Ipv4Addr::new(192, 0, 2, 7)),
                Route::Host("192.0.2.7:0".parse().unwrap())
            );
            // The edges of the classes below, on the allowed side.
            for a in [[1, 0, 0, 0], [126, 255, 255, 255], [128, 0, 0, 0]] {
                assert!(
                    matches!(route(&p, GUEST, to(a, 80)), Route::Host(_)),
                    "{a:?}"
                );
            }
            assert!(matches!(
                route(&p, GUEST, to([223, 255, 255, 255], 80)),
                Route::Host(_)
            ));
        }
    }

    /// Under both loopback policies, TCP/UDP to each of `ports` and ping
    /// to `a` are refused by the stack, never connected.
    fn assert_never_connected(a: [u8; 4], ports: &[u16]) {
        for p in both() {
            for &port in ports {
                assert_eq!(
                    route(&p, GUEST, to(a, port)),
                    Route::Unreachable,
                    "{a:?}:{port}"
                );
            }
            assert_eq!(
                ping_route(&p, GUEST, Ipv4Addr::from(a)),
                Route::Unreachable,
                "{a:?}"
            );
        }
    }

    #[test]
    fn this_network_zero_slash_8_is_never_connected() {
        for a in [[0, 0, 0, 0], [0, 1, 2, 3], [0, 255, 255, 255], [0, 0, 0, 1]] {
            assert_never_connected(a, &[80, 53]);
        }
    }

    #[test]
    fn host_loopback_is_reached_only_through_the_gateway() {
        for a in [
            [127, 0, 0, 1],
            [127, 0, 0, 53],
            [127, 1, 2, 3],
            [127, 255, 255, 255],
        ] {
            assert_never_connected(a, &[8080, 53]);
        }
    }

    #[test]
    fn reserved_240_slash_4_is_never_connected() {
        for a in [
            [240, 0, 0, 0],
            [240, 1, 2, 3],
            [254, 0, 0, 1],
            [255, 255, 255, 254],
        ] {
            assert_never_connected(a, &[80]);
        }
    }

    #[test]
    fn broadcast_and_multicast_are_dropped_without_an_answer() {
        for p in both() {
            for a in [
                [255, 255, 255, 255],
                [10, 0, 2, 255],
                [224, 0, 0, 1],
                [224, 0, 0, 251],
                [239, 255, 255, 250],
                [233, 1, 2, 3],
            ] {
                assert_eq!(route(&p, GUEST, to(a, 5353)), Route::Drop, "{a:?}");
                assert_eq!(route(&p, GUEST, to(a, 53)), Route::Drop, "{a:?}");
                assert_eq!(
                    ping_route(&p, GUEST, Ipv4Addr::from(a)),
                    Route::Drop,
                    "{a:?}"
                );
            }
        }
        // The broadcast of a moved subnet too.
        let p = NetPlan::from_request(&ConfigureRequest {
            cidr: Some("10.0.4.0/23".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        let guest = Ipv4Addr::new(10, 0, 4, 100);
        assert_eq!(route(&p, guest, to([10, 0, 5, 255], 80)), Route::Drop);
        assert_eq!(route(&p, guest, to([10, 0, 5, 254], 80)), Route::Refuse);
    }

    #[test]
    fn the_rest_of_the_subnet_and_port_zero_are_refused_by_the_stack() {
        for p in both() {
            assert_eq!(route(&p, GUEST, to([10, 0, 2, 50], 80)), Route::Refuse);
            assert_eq!(route(&p, GUEST, to([10, 0, 2, 0], 80)), Route::Refuse);
            assert_eq!(route(&p, GUEST, to([192, 0, 2, 7], 0)), Route::Refuse);
            assert_eq!(
                ping_route(&p, GUEST, Ipv4Addr::new(10, 0, 2, 50)),
                Route::Refuse
            );
        }
    }

    #[test]
    fn only_guest_addresses_may_send() {
        for p in both() {
            for src in [
                Ipv4Addr::new(192, 168, 1, 5),
                Ipv4Addr::new(10, 0, 2, 1),
                Ipv4Addr::new(10, 0, 2, 0),
                Ipv4Addr::new(10, 0, 2, 255),
                Ipv4Addr::new(0, 0, 0, 0),
                Ipv4Addr::new(127, 0, 0, 1),
            ] {
                assert_eq!(route(&p, src, to([192, 0, 2, 7], 80)), Route::Drop, "{src}");
                assert_eq!(route(&p, src, to([10, 0, 2, 1], 53)), Route::Drop, "{src}");
                assert_eq!(
                    ping_route(&p, src, Ipv4Addr::new(192, 0, 2, 7)),
                    Route::Drop,
                    "{src}"
                );
            }
        }
    }

    fn plan6(disable_host_loopback: bool) -> NetPlan {
        NetPlan::from_request(&ConfigureRequest {
            disable_host_loopback,
            ipv6: true,
            ..Default::default()
        })
        .unwrap()
    }

    fn v6(s: &str) -> SocketAddrV6 {
        s.parse().unwrap()
    }

    const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);

    #[test]
    fn ipv6_gateway_is_host_loopback_unless_disabled_and_dns_either_way() {
        assert_eq!(
            route6(&plan6(false), GUEST6, v6("[fd00::1]:8080")),
            Route::Host("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            route6(&plan6(true), GUEST6, v6("[fd00::1]:8080")),
            Route::Refuse
        );
        for p in [plan6(false), plan6(true)] {
            assert_eq!(route6(&p, GUEST6, v6("[fd00::1]:53")), Route::Dns);
            assert_eq!(route6(&p, GUEST6, v6("[fd00::7]:80")), Route::Refuse);
            assert_eq!(
                route6(&p, GUEST6, v6("[2001:db8::7]:443")),
                Route::Host("[2001:db8::7]:443".parse().unwrap())
            );
        }
        assert_eq!(
            ping_route_any(&plan6(false), GUEST6.into(), "fd00::1".parse().unwrap()),
            Route::Host("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            ping_route_any(&plan6(true), GUEST6.into(), "fd00::1".parse().unwrap()),
            Route::Refuse
        );
        // Without --ipv6 nothing of IPv6 goes anywhere.
        assert_eq!(
            route6(&plan(false), GUEST6, v6("[2001:db8::7]:443")),
            Route::Drop
        );
    }

    #[test]
    fn ipv6_loopback_mapped_link_local_and_multicast_are_never_connected() {
        for p in [plan6(false), plan6(true)] {
            for a in [
                "::",
                "::1",
                "::127.0.0.1",
                "::ffff:127.0.0.1",
                "::ffff:10.0.2.1",
                "fe80::1",
                "febf::1",
            ] {
                let d = SocketAddrV6::new(a.parse().unwrap(), 80, 0, 0);
                assert_eq!(route6(&p, GUEST6, d), Route::Unreachable, "{a}");
                assert_eq!(
                    ping_route_any(&p, GUEST6.into(), a.parse().unwrap()),
                    Route::Unreachable,
                    "{a}"
                );
            }
            for a in ["ff02::1", "ff02::1:ff00:1", "ff05::2"] {
                let d = SocketAddrV6::new(a.parse().unwrap(), 53, 0, 0);
                assert_eq!(route6(&p, GUEST6, d), Route::Drop, "{a}");
            }
            // Only guest addresses of fd00::/64 may send.
            for src in ["fe80::1", "fd00::1", "fd00::", "2001:db8::1", "::1"] {
                assert_eq!(
                    route6(&p, src.parse().unwrap(), v6("[2001:db8::7]:443")),
                    Route::Drop,
                    "{src}"
                );
            }
        }
        for bad in ["[::ffff:0.0.0.0]:80", "[::ffff:224.0.0.1]:80"] {
            assert!(!host_may_reach(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn forwarded_clients_keep_their_address_when_the_guest_can_answer_them() {
        let p = plan(false);
        let shown = |s: &str| visible_client(&p, s.parse().unwrap());
        assert_eq!(
            shown("198.51.100.7:4000"),
            Some("198.51.100.7:4000".parse().unwrap())
        );
        assert_eq!(
            shown("[::ffff:198.51.100.7]:4000"),
            Some("198.51.100.7:4000".parse().unwrap())
        );
        for gateway in [
            "127.0.0.1:4000",
            "127.0.0.2:4000",
            "[::1]:4000",
            "[2001:db8::1]:4000",
            "0.0.0.0:4000",
            "10.0.2.1:4000",
            "10.0.2.7:4000",
            "224.0.0.1:4000",
            "198.51.100.7:0",
        ] {
            assert_eq!(shown(gateway), None, "{gateway}");
        }
    }

    #[test]
    fn every_host_route_passes_the_last_check() {
        // Exhaustive over the first octet and a few others: whatever `route`
        // sends to the host, `host_may_reach` lets through, and it never
        // lets through a class above.
        for p in both() {
            for first in 0..=255u8 {
                for a in [[first, 0, 0, 0], [first, 1, 2, 3], [first, 255, 255, 255]] {
                    for port in [0, 53, 80] {
                        if let Route::Host(t) = route(&p, GUEST, to(a, port)) {
                            assert!(host_may_reach(t), "{t}");
                            assert!(!t.ip().is_multicast() && first != 0 && first < 240);
                            assert!(
                                !t.ip().is_loopback() || a == [10, 0, 2, 1],
                                "{a:?} reaches the host's loopback"
                            );
                        }
                    }
                }
            }
        }
        for bad in [
            "0.0.0.0:80",
            "0.1.2.3:80",
            "224.0.0.1:5353",
            "255.255.255.255:67",
            "240.0.0.1:1",
            "[::]:80",
            "[ff02::1]:80",
        ] {
            assert!(!host_may_reach(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "127.0.0.53:53",
            "127.0.0.1:8080",
            "192.0.2.1:80",
            "[::1]:53",
        ] {
            assert!(host_may_reach(good.parse().unwrap()), "{good}");
        }
    }
}
