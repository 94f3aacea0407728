//! Checking a port rule and binding its host listener (in the driver's
//! main thread, so that the answer to `add_port` says whether it worked).

use crate::plan::NetPlan;
use rk_driver::{PortDriverOffer, PortRule};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener};

pub const NAME: &str = "gvisor-tap-vsock";

pub fn offer() -> PortDriverOffer {
    PortDriverOffer {
        protos: vec!["tcp".into(), "tcp4".into()],
        disallow_loopback_child_ip: true,
    }
}

/// The address inside that `rule` forwards to.
pub fn target(plan: &NetPlan, rule: &PortRule) -> Result<SocketAddrV4, String> {
    let ip = if rule.child_ip.is_empty() {
        plan.guest
    } else {
        rule.child_ip.parse::<Ipv4Addr>().map_err(|_| {
            format!(
                "child IP {:?} is not an IPv4 address (--port-driver={NAME} forwards to IPv4 only)",
                rule.child_ip
            )
        })?
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

/// Binds the host side of `rule` and returns it with the target inside.
pub fn listen(plan: &NetPlan, rule: &PortRule) -> Result<(TcpListener, SocketAddrV4), String> {
    let target = target(plan, rule)?;
    let addrs: Vec<SocketAddr> = match (rule.proto.as_str(), rule.parent_ip.as_str()) {
        ("tcp", "") => vec![
            (Ipv6Addr::UNSPECIFIED, rule.parent_port).into(),
            (Ipv4Addr::UNSPECIFIED, rule.parent_port).into(),
        ],
        ("tcp4", "") => vec![(Ipv4Addr::UNSPECIFIED, rule.parent_port).into()],
        ("tcp" | "tcp4", ip) => {
            let ip: IpAddr = ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("parent IP {ip:?} is not an IP address"))?;
            if rule.proto == "tcp4" && !ip.is_ipv4() {
                return Err(format!("parent IP {ip} is not IPv4 (proto tcp4)"));
            }
            vec![SocketAddr::new(ip, rule.parent_port)]
        }
        (other, _) => {
            return Err(format!(
                "unsupported protocol {other:?}: --port-driver={NAME} forwards tcp and tcp4 (use --port-driver=builtin for UDP)"
            ))
        }
    };
    let mut last = String::new();
    for a in addrs {
        match TcpListener::bind(a) {
            Ok(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("listening on {a}: {e}"))?;
                return Ok((l, target));
            }
            Err(e) => last = format!("cannot listen on {a}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;

    fn rule(proto: &str, parent_ip: &str, child_ip: &str) -> PortRule {
        PortRule {
            id: 1,
            proto: proto.into(),
            parent_ip: parent_ip.into(),
            parent_port: 0,
            child_ip: child_ip.into(),
            child_port: 80,
        }
    }

    #[test]
    fn targets_are_guest_addresses_only() {
        let plan = NetPlan::from_request(&ConfigureRequest::default()).unwrap();
        assert_eq!(
            target(&plan, &rule("tcp", "", "")).unwrap(),
            "10.0.2.100:80".parse().unwrap()
        );
        assert_eq!(
            target(&plan, &rule("tcp", "", "10.0.2.15")).unwrap(),
            "10.0.2.15:80".parse().unwrap()
        );
        for bad in [
            "10.0.2.1",
            "127.0.0.1",
            "192.0.2.1",
            "10.0.2.255",
            "fd00::100",
            "x",
        ] {
            assert!(target(&plan, &rule("tcp", "", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn udp_and_unknown_protocols_are_refused_with_the_alternative() {
        let plan = NetPlan::from_request(&ConfigureRequest::default()).unwrap();
        let e = listen(&plan, &rule("udp", "127.0.0.1", "")).unwrap_err();
        assert!(e.contains("--port-driver=builtin"), "{e}");
        let e = listen(&plan, &rule("tcp4", "::1", "")).unwrap_err();
        assert!(e.contains("not IPv4"), "{e}");
        let (l, t) = listen(&plan, &rule("tcp4", "127.0.0.1", "")).unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        assert_eq!(t.port(), 80);
    }
}
