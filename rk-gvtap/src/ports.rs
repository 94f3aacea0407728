//! Checking a port rule and opening its host socket (in the driver's main
//! thread, so that the answer to `add_port` says whether it worked).
//!
//! The host side follows the builtin port driver (and Go's `net.Listen`,
//! as RootlessKit uses it): `tcp`/`udp` on a wildcard address listen on
//! IPv6 and IPv4 at once (IPv4 alone on a host without IPv6), `tcp4`/`udp4`
//! on IPv4 only, `tcp6`/`udp6` on IPv6 only; a given address is used as it
//! is. The inside is always a guest IPv4 address of the subnet.

use crate::plan::NetPlan;
use rk_driver::{PortDriverOffer, PortRule};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};

pub const NAME: &str = "gvisor-tap-vsock";

pub fn offer() -> PortDriverOffer {
    PortDriverOffer {
        protos: ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"]
            .map(String::from)
            .to_vec(),
        disallow_loopback_child_ip: true,
    }
}

/// A forwarded port's host socket.
pub enum HostSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// `tcp6` → (TCP, IPv6 only).
fn parse_proto(proto: &str) -> Result<(bool, Family), String> {
    let (base, family) = match proto.as_bytes().last() {
        Some(b'4') => (&proto[..proto.len() - 1], Family::V4),
        Some(b'6') => (&proto[..proto.len() - 1], Family::V6),
        _ => (proto, Family::Any),
    };
    match base {
        "tcp" => Ok((true, family)),
        "udp" => Ok((false, family)),
        _ => Err(format!(
            "unsupported protocol {proto:?}: --port-driver={NAME} forwards tcp, tcp4, tcp6, udp, udp4 and udp6"
        )),
    }
}

/// The address inside that `rule` forwards to.
pub fn target(plan: &NetPlan, rule: &PortRule) -> Result<SocketAddrV4, String> {
    let ip = match rule.child_ip.map(|ip| ip.to_canonical()) {
        None => plan.guest,
        Some(IpAddr::V4(ip)) => ip,
        Some(ip) => {
            return Err(format!(
                "child IP {ip} is not an IPv4 address (--port-driver={NAME} forwards to the guest's IPv4 addresses)"
            ))
        }
    };
    if !plan.contains(ip) || ip == plan.gateway || ip == plan.network || ip == plan.broadcast() {
        return Err(format!(
            "child IP {ip} is not a guest address of {}/{}: leave it empty for {}",
            plan.network, plan.prefix, plan.guest
        ));
    }
    if rule.child_port == 0 {
        return Err("child port 0 is not a port".into());
    }
    Ok(SocketAddrV4::new(ip, rule.child_port))
}

/// Opens the host side of `rule` (listening for TCP, bound for UDP, both
/// non-blocking) and returns it with the target inside.
pub fn listen(plan: &NetPlan, rule: &PortRule) -> Result<(HostSocket, SocketAddrV4), String> {
    let (tcp, family) = parse_proto(&rule.proto)?;
    let target = target(plan, rule)?;
    let port = rule.parent_port;
    let given = rule.parent_ip.map(|ip| ip.to_canonical());
    let wildcard = given.is_none_or(|ip| ip.is_unspecified());
    let addr = match (family, given) {
        (Family::Any, _) if wildcard => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        (Family::V4, None) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        (Family::V6, None) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        (Family::V4, Some(IpAddr::V6(_))) | (Family::V6, Some(IpAddr::V4(_))) => {
            return Err(format!(
                "parent IP {} does not match proto {}",
                given.map(|ip| ip.to_string()).unwrap_or_default(),
                rule.proto
            ))
        }
        (_, Some(ip)) => SocketAddr::new(ip, port),
        (Family::Any, None) => unreachable!("no address is a wildcard"),
    };
    let dual = family == Family::Any && wildcard;
    let net = if tcp { "tcp" } else { "udp" };
    let sock = match open(addr, tcp, dual) {
        // No IPv6 on this host: IPv4 alone, as Go falls back.
        Err(e) if dual && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            open(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), tcp, false)
        }
        other => other,
    }
    .map_err(|e| format!("listen {net} {addr}: {e}"))?;
    let sock = if tcp {
        HostSocket::Tcp(sock.into())
    } else {
        HostSocket::Udp(sock.into())
    };
    Ok((sock, target))
}

fn open(addr: SocketAddr, tcp: bool, dual: bool) -> io::Result<Socket> {
    let ty = if tcp { Type::STREAM } else { Type::DGRAM };
    let s = Socket::new(Domain::for_address(addr), ty.nonblocking().cloexec(), None)?;
    if addr.is_ipv6() {
        s.set_only_v6(!dual)?;
    }
    if tcp {
        s.set_reuse_address(true)?;
    }
    s.bind(&SockAddr::from(addr))?;
    if tcp {
        s.listen(1024)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;

    fn rule(proto: &str, parent_ip: &str, child_ip: &str) -> PortRule {
        let ip = |s: &str| (!s.is_empty()).then(|| s.trim_matches(['[', ']']).parse().unwrap());
        PortRule {
            id: 1,
            proto: proto.into(),
            parent_ip: ip(parent_ip),
            parent_port: 0,
            child_ip: ip(child_ip),
            child_port: 80,
        }
    }

    fn plan() -> NetPlan {
        NetPlan::from_request(&ConfigureRequest::default()).unwrap()
    }

    fn local(s: &HostSocket) -> SocketAddr {
        match s {
            HostSocket::Tcp(l) => l.local_addr().unwrap(),
            HostSocket::Udp(u) => u.local_addr().unwrap(),
        }
    }

    fn only_v6(s: &HostSocket) -> bool {
        match s {
            HostSocket::Tcp(l) => socket2::SockRef::from(l).only_v6().unwrap(),
            HostSocket::Udp(u) => socket2::SockRef::from(u).only_v6().unwrap(),
        }
    }

    #[test]
    fn targets_are_guest_addresses_only() {
        let plan = plan();
        assert_eq!(
            target(&plan, &rule("tcp", "", "")).unwrap(),
            "10.0.2.100:80".parse().unwrap()
        );
        assert_eq!(
            target(&plan, &rule("udp", "", "10.0.2.15")).unwrap(),
            "10.0.2.15:80".parse().unwrap()
        );
        for bad in [
            "10.0.2.1",
            "127.0.0.1",
            "192.0.2.1",
            "10.0.2.255",
            "fd00::100",
        ] {
            assert!(target(&plan, &rule("tcp", "", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_proto_of_builtin_opens_the_socket_builtin_would() {
        let plan = plan();
        let cases = [
            ("tcp", "127.0.0.1", "127.0.0.1", false),
            ("tcp4", "127.0.0.1", "127.0.0.1", false),
            ("udp", "127.0.0.1", "127.0.0.1", false),
            ("udp4", "127.0.0.1", "127.0.0.1", false),
            ("tcp4", "", "0.0.0.0", false),
            ("udp4", "", "0.0.0.0", false),
        ];
        for (proto, parent, want_ip, _) in cases {
            let (s, t) = listen(&plan, &rule(proto, parent, "")).unwrap();
            assert_eq!(local(&s).ip().to_string(), want_ip, "{proto} {parent}");
            assert_eq!(matches!(s, HostSocket::Tcp(_)), proto.starts_with("tcp"));
            assert_eq!(t, "10.0.2.100:80".parse().unwrap());
        }
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            for proto in ["tcp", "udp"] {
                let (s, _) = listen(&plan, &rule(proto, "", "")).unwrap();
                assert_eq!(local(&s).ip().to_string(), "::", "{proto}");
                assert!(!only_v6(&s), "{proto} on a wildcard is dual-stack");
            }
            for proto in ["tcp6", "udp6"] {
                let (s, _) = listen(&plan, &rule(proto, "", "")).unwrap();
                assert_eq!(local(&s).ip().to_string(), "::", "{proto}");
                assert!(only_v6(&s), "{proto} is IPv6 only");
                let (s, _) = listen(&plan, &rule(proto, "::1", "")).unwrap();
                assert_eq!(local(&s).ip().to_string(), "::1", "{proto}");
            }
        }
    }

    #[test]
    fn mismatched_families_and_unknown_protocols_are_refused() {
        let plan = plan();
        for (proto, parent) in [
            ("tcp4", "::1"),
            ("udp4", "[::1]"),
            ("tcp6", "127.0.0.1"),
            ("udp6", "127.0.0.1"),
        ] {
            let e = listen(&plan, &rule(proto, parent, "")).err().unwrap();
            assert!(e.contains("does not match"), "{proto} {parent}: {e}");
        }
        for proto in ["sctp", "icmp", "", "tcp5"] {
            let e = listen(&plan, &rule(proto, "127.0.0.1", "")).err().unwrap();
            assert!(e.contains("udp6"), "{proto}: {e}");
        }
    }
}
