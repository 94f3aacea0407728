//! The addressing plan of RootlessKit's user-mode networks: in the network
//! given by `--cidr` (default 10.0.2.0/24) the child is `.100`, and the
//! gateway and DNS server sit at small offsets that differ by driver
//! (slirp4netns and pasta: `.2` and `.3`; gvisor-tap-vsock: `.1` for both).
//! One parser and one set of checks for every driver that has such a plan.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// RootlessKit's default network.
pub const DEFAULT_CIDR: &str = "10.0.2.0/24";
/// The child's host number in the network.
pub const GUEST_OFFSET: u32 = 100;

/// Why a `--cidr` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--cidr={0:?} is not an IPv4 network like {DEFAULT_CIDR}")]
    Malformed(String),
    #[error("--cidr={given} is not a network address (host bits are set): use {network}")]
    HostBits { given: String, network: Ipv4Net },
    #[error(
        "--cidr={0}: the prefix must be /25 or shorter, so that the network holds the address .{GUEST_OFFSET}"
    )]
    TooSmall(String),
}

/// The addresses of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    pub network: Ipv4Net,
    /// The child's address (`.100`).
    pub guest: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl AddressPlan {
    /// The plan for `cidr` (the core's `configure.cidr`, `None`: the
    /// default) with the gateway and DNS server at the given host numbers.
    pub fn new(
        cidr: Option<&str>,
        gateway_offset: u32,
        dns_offset: u32,
    ) -> Result<AddressPlan, PlanError> {
        let network = parse_cidr(cidr.unwrap_or(DEFAULT_CIDR))?;
        let host = |n: u32| Ipv4Addr::from(u32::from(network.network()) + n);
        Ok(AddressPlan {
            network,
            guest: host(GUEST_OFFSET),
            gateway: host(gateway_offset),
            dns: host(dns_offset),
        })
    }

    /// The child's address with the network's prefix.
    pub fn guest_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.guest, self.network.prefix_len()).expect("prefix of a valid network")
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.network.contains(&addr)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        self.network.broadcast()
    }
}

/// A `--cidr` value: an IPv4 network address with a prefix of at most /25,
/// so that it holds `.100`.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, PlanError> {
    let net: Ipv4Net = s.parse().map_err(|_| PlanError::Malformed(s.to_owned()))?;
    if net.addr() != net.network() {
        return Err(PlanError::HostBits {
            given: s.to_owned(),
            network: net.trunc(),
        });
    }
    if net.prefix_len() > 25 {
        return Err(PlanError::TooSmall(s.to_owned()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_rootlesskits() {
        let p = AddressPlan::new(None, 2, 3).unwrap();
        assert_eq!(p.network.to_string(), "10.0.2.0/24");
        assert_eq!(p.guest, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(p.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(p.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(p.guest_net().to_string(), "10.0.2.100/24");
        assert_eq!(p.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
    }

    #[test]
    fn a_custom_network_moves_every_address() {
        let p = AddressPlan::new(Some("192.168.5.128/25"), 1, 1).unwrap();
        assert_eq!(p.guest, Ipv4Addr::new(192, 168, 5, 228));
        assert_eq!(p.gateway, Ipv4Addr::new(192, 168, 5, 129));
        assert!(p.contains(Ipv4Addr::new(192, 168, 5, 200)));
        assert!(!p.contains(Ipv4Addr::new(192, 168, 5, 1)));
    }

    #[test]
    fn bad_networks_are_refused_with_the_fix() {
        assert_eq!(
            parse_cidr("10.0.2.0/26"),
            Err(PlanError::TooSmall("10.0.2.0/26".into()))
        );
        assert!(parse_cidr("10.0.2.100/24")
            .unwrap_err()
            .to_string()
            .contains("use 10.0.2.0/24"));
        for bad in ["10.0.2.0", "fd00::/64", "10.0.2.0/33", "x/24", ""] {
            assert!(
                matches!(parse_cidr(bad), Err(PlanError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
