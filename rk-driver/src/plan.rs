//! The addressing plan of RootlessKit's user-mode networks: in the network
//! given by `--cidr` (default 10.0.2.0/24) the child is `.100`, and the
//! gateway and DNS server sit at small offsets that differ by driver
//! (slirp4netns and pasta: `.2` and `.3`; gvisor-tap-vsock: `.1` for both).
//! One parser and one set of checks for every driver that has such a plan.
//!
//! With `--ipv6`, the IPv6 side is slirp4netns's fixed plan, which
//! RootlessKit documents: `fd00::/64`, the child at `fd00::100`, gateway
//! and DNS server at the driver's host numbers ([`Ipv6Plan`]).

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

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
    #[error("the IPv6 network {0} is too small: the prefix must be /119 or shorter, so that it holds ::100")]
    TooSmall6(Ipv6Net),
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

/// RootlessKit's IPv6 network (slirp4netns's `--enable-ipv6`).
pub const DEFAULT_CIDR6: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 64) {
        Ok(net) => net,
        Err(_) => panic!("fd00::/64 is a valid network"),
    };

/// The child's host number in the IPv6 network: `::100` (written in hex,
/// as slirp4netns does, not 100 decimal).
pub const GUEST6_OFFSET: u32 = 0x100;

/// The IPv6 addresses of one network: the child at host number
/// [`GUEST6_OFFSET`] (`::100`), gateway and DNS server at the driver's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Plan {
    pub network: Ipv6Net,
    pub guest: Ipv6Addr,
    pub gateway: Ipv6Addr,
    pub dns: Ipv6Addr,
}

impl Ipv6Plan {
    /// The plan in [`DEFAULT_CIDR6`] with the gateway and DNS server at the
    /// given host numbers (slirp4netns: 2 and 3).
    pub fn new(gateway_offset: u32, dns_offset: u32) -> Ipv6Plan {
        let host = |n: u32| Ipv6Addr::from(u128::from(DEFAULT_CIDR6.network()) | u128::from(n));
        Ipv6Plan {
            network: DEFAULT_CIDR6,
            guest: host(GUEST6_OFFSET),
            gateway: host(gateway_offset),
            dns: host(dns_offset),
        }
    }

    /// The same plan in another network (its host bits are ignored); the
    /// prefix must be /119 or shorter, so that the network holds `::100`.
    pub fn in_network(
        network: Ipv6Net,
        gateway_offset: u32,
        dns_offset: u32,
    ) -> Result<Ipv6Plan, PlanError> {
        let network = network.trunc();
        if network.prefix_len() > 119 {
            return Err(PlanError::TooSmall6(network));
        }
        let host = |n: u32| Ipv6Addr::from(u128::from(network.network()) | u128::from(n));
        Ok(Ipv6Plan {
            network,
            guest: host(GUEST6_OFFSET),
            gateway: host(gateway_offset),
            dns: host(dns_offset),
        })
    }

    /// The child's address with the network's prefix (`fd00::100/64`).
    pub fn guest_net(&self) -> Ipv6Net {
        Ipv6Net::new(self.guest, self.network.prefix_len()).expect("prefix of a valid network")
    }

    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        self.network.contains(&addr)
    }
}

impl AddressPlan {
    /// [`AddressPlan::new`] for a network the core already parsed (the
    /// typed `configure.cidr`), with the same checks.
    pub fn for_network(
        cidr: Option<Ipv4Net>,
        gateway_offset: u32,
        dns_offset: u32,
    ) -> Result<AddressPlan, PlanError> {
        let text = cidr.map(|c| c.to_string());
        AddressPlan::new(text.as_deref(), gateway_offset, dns_offset)
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
    fn the_ipv6_plan_is_slirp4netns_s() {
        let p = Ipv6Plan::new(2, 3);
        assert_eq!(p.network.to_string(), "fd00::/64");
        assert_eq!(p.guest_net().to_string(), "fd00::100/64");
        assert_eq!(p.gateway, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dns, "fd00::3".parse::<Ipv6Addr>().unwrap());
        assert!(p.contains("fd00::ffff".parse().unwrap()));
        assert!(!p.contains("fd01::1".parse().unwrap()));
        let q = Ipv6Plan::in_network("fd12:3456::77/48".parse().unwrap(), 1, 1).unwrap();
        assert_eq!(q.guest_net().to_string(), "fd12:3456::100/48");
        assert_eq!(q.gateway, q.dns);
        assert_eq!(q.gateway, "fd12:3456::1".parse::<Ipv6Addr>().unwrap());
        assert!(Ipv6Plan::in_network("fd00::/120".parse().unwrap(), 2, 3).is_err());
        assert!(Ipv6Plan::in_network("fd00::/119".parse().unwrap(), 2, 3).is_ok());
    }

    #[test]
    fn a_typed_network_gets_the_same_checks() {
        let p = AddressPlan::for_network(None, 2, 3).unwrap();
        assert_eq!(p, AddressPlan::new(None, 2, 3).unwrap());
        let net: Ipv4Net = "10.8.0.0/16".parse().unwrap();
        let p = AddressPlan::for_network(Some(net), 2, 3).unwrap();
        assert_eq!(p.guest, Ipv4Addr::new(10, 8, 0, 100));
        let small: Ipv4Net = "10.8.0.0/26".parse().unwrap();
        assert!(matches!(
            AddressPlan::for_network(Some(small), 2, 3),
            Err(PlanError::TooSmall(_))
        ));
        let host_bits: Ipv4Net = "10.8.0.1/16".parse().unwrap();
        assert!(matches!(
            AddressPlan::for_network(Some(host_bits), 2, 3),
            Err(PlanError::HostBits { .. })
        ));
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
