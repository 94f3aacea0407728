//! The addressing plan of RootlessKit's user-mode networks: in the network
//! given by `--cidr` (default 10.0.2.0/24) the child is `.100`, and the
//! gateway and DNS server sit at small offsets that differ by driver
//! (slirp4netns and pasta: `.2` and `.3`; gvisor-tap-vsock: `.1` for both).
//! One parser and one set of checks for every driver that has such a plan.
//!
//! With `--ipv6`, the IPv6 side is slirp4netns's fixed plan, which
//! RootlessKit documents: `fd00::/64`, the child at `fd00::100`, gateway
//! and DNS server at the driver's host numbers ([`Ipv6Plan`]).

use crate::protocol::{ConfigureRequest, NetworkConfig};
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
        "--cidr={0}: the prefix must be /1 to /25, so that the network holds the address .{GUEST_OFFSET}"
    )]
    TooSmall(String),
    #[error("--mtu={mtu} is out of range: {program} takes {MIN_MTU}..{max} (default {default})")]
    MtuRange {
        mtu: u32,
        program: &'static str,
        max: u32,
        default: u32,
    },
    #[error("--mtu={0} is too small for --ipv6, which needs at least {MIN_MTU_IPV6}")]
    MtuIpv6(u32),
    #[error("--ifname={name:?} is not a valid interface name: {reason}")]
    Ifname { name: String, reason: &'static str },
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

/// The smallest MTU that still carries IPv4.
pub const MIN_MTU: u32 = 68;
/// The smallest MTU IPv6 allows.
pub const MIN_MTU_IPV6: u32 = 1280;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

/// The shape of a driver's user-mode network: the defaults and limits
/// of the program behind it, and its gateway and DNS host numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The program whose limits these are, for messages.
    pub program: &'static str,
    pub default_ifname: &'static str,
    pub default_mtu: u32,
    pub max_mtu: u32,
    pub gateway_offset: u32,
    pub dns_offset: u32,
}

impl Shape {
    /// slirp4netns's shape, which RootlessKit keeps for its user-mode
    /// networks: `tap0`, MTU 65520, gateway `.2`, DNS `.3`; `max_mtu` is
    /// the program's.
    pub const fn user_mode(program: &'static str, max_mtu: u32) -> Shape {
        Shape {
            program,
            default_ifname: "tap0",
            default_mtu: 65520,
            max_mtu,
            gateway_offset: 2,
            dns_offset: 3,
        }
    }
}

/// The network a `configure` asks for, checked against a [`Shape`], with
/// the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedNetwork {
    pub ifname: String,
    pub mtu: u32,
    pub plan: AddressPlan,
    /// The core asked for a network (`--cidr`), not the default.
    pub custom_cidr: bool,
    /// With `--ipv6`: the IPv6 plan in [`DEFAULT_CIDR6`].
    pub ipv6: Option<Ipv6Plan>,
}

impl RequestedNetwork {
    pub fn from_request(req: &ConfigureRequest, shape: &Shape) -> Result<Self, PlanError> {
        Ok(RequestedNetwork {
            ifname: interface_name(req.ifname.as_deref(), shape.default_ifname)?,
            mtu: mtu(req.mtu, shape, req.ipv6)?,
            plan: AddressPlan::for_network(req.cidr, shape.gateway_offset, shape.dns_offset)?,
            custom_cidr: req.cidr.is_some(),
            ipv6: req
                .ipv6
                .then(|| Ipv6Plan::new(shape.gateway_offset, shape.dns_offset)),
        })
    }

    /// How the core must set the interface up: the child's addresses, the
    /// gateways, the DNS servers (IPv4 first); the `info` map is empty.
    pub fn config(&self) -> NetworkConfig {
        let mut dns = vec![self.plan.dns.into()];
        dns.extend(self.ipv6.map(|v6| std::net::IpAddr::from(v6.dns)));
        NetworkConfig {
            interface: self.ifname.clone(),
            ipv4: Some(self.plan.guest_net()),
            gateway4: Some(self.plan.gateway),
            ipv6: self.ipv6.map(|v6| v6.guest_net()),
            gateway6: self.ipv6.map(|v6| v6.gateway),
            dns,
            mtu: self.mtu,
            configured_by_driver: false,
            dynamic: false,
            info: Default::default(),
        }
    }
}

/// The MTU to use: `None` and `Some(0)` (RootlessKit's "driver default")
/// give the default; otherwise it must lie in 68..max (1280.. with IPv6).
pub fn mtu(requested: Option<u32>, shape: &Shape, ipv6: bool) -> Result<u32, PlanError> {
    let mtu = match requested {
        None | Some(0) => shape.default_mtu,
        Some(m) => m,
    };
    if !(MIN_MTU..=shape.max_mtu).contains(&mtu) {
        return Err(PlanError::MtuRange {
            mtu,
            program: shape.program,
            max: shape.max_mtu,
            default: shape.default_mtu,
        });
    }
    if ipv6 && mtu < MIN_MTU_IPV6 {
        return Err(PlanError::MtuIpv6(mtu));
    }
    Ok(mtu)
}

/// The interface name to use (`requested`, else `default`), if the kernel
/// and the programs would take it.
pub fn interface_name(requested: Option<&str>, default: &str) -> Result<String, PlanError> {
    let name = requested.unwrap_or(default);
    let bad = |reason| {
        Err(PlanError::Ifname {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("it is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("the kernel reserves it");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return bad("it contains '/', ':', whitespace or a control character");
    }
    Ok(name.to_owned())
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
    if net.prefix_len() > 25 || net.prefix_len() == 0 {
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

    const SHAPE: Shape = Shape::user_mode("slirp4netns", 65521);

    fn request() -> ConfigureRequest {
        ConfigureRequest {
            child_pid: 1,
            state_dir: "/tmp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_default_request_gets_rootlesskits_network() {
        let net = RequestedNetwork::from_request(&request(), &SHAPE).unwrap();
        assert!(!net.custom_cidr);
        let cfg = net.config();
        assert_eq!(cfg.interface, "tap0");
        assert_eq!(cfg.ipv4, Some("10.0.2.100/24".parse().unwrap()));
        assert_eq!(cfg.gateway4, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            cfg.dns,
            [std::net::IpAddr::from(Ipv4Addr::new(10, 0, 2, 3))]
        );
        assert_eq!(cfg.mtu, 65520);
        assert_eq!((cfg.ipv6, cfg.gateway6), (None, None));
        assert!(!cfg.configured_by_driver && !cfg.dynamic);
    }

    #[test]
    fn ipv6_and_a_custom_network_are_answered() {
        let req = ConfigureRequest {
            ipv6: true,
            cidr: Some("10.8.0.0/16".parse().unwrap()),
            mtu: Some(1500),
            ifname: Some("eth0".into()),
            ..request()
        };
        let net = RequestedNetwork::from_request(&req, &SHAPE).unwrap();
        assert!(net.custom_cidr);
        let cfg = net.config();
        assert_eq!(cfg.ipv4, Some("10.8.0.100/16".parse().unwrap()));
        assert_eq!(cfg.ipv6, Some("fd00::100/64".parse().unwrap()));
        assert_eq!(cfg.gateway6, Some("fd00::2".parse().unwrap()));
        let dns: Vec<String> = cfg.dns.iter().map(ToString::to_string).collect();
        assert_eq!(dns, ["10.8.0.3", "fd00::3"]);
        assert_eq!((cfg.mtu, cfg.interface.as_str()), (1500, "eth0"));
    }

    #[test]
    fn mtu_zero_means_default_and_out_of_range_is_refused() {
        assert_eq!(mtu(Some(0), &SHAPE, false), Ok(65520));
        assert_eq!(mtu(Some(65521), &SHAPE, false), Ok(65521));
        assert_eq!(mtu(Some(68), &SHAPE, false), Ok(68));
        assert_eq!(
            mtu(Some(65522), &SHAPE, false).unwrap_err().to_string(),
            "--mtu=65522 is out of range: slirp4netns takes 68..65521 (default 65520)"
        );
        assert!(mtu(Some(67), &SHAPE, false).is_err());
        assert_eq!(mtu(Some(1279), &SHAPE, true), Err(PlanError::MtuIpv6(1279)));
    }

    #[test]
    fn interface_names_the_kernel_would_refuse_are_refused() {
        assert_eq!(interface_name(None, "tap0").unwrap(), "tap0");
        assert_eq!(
            interface_name(Some("a23456789012345"), "x").unwrap().len(),
            15
        );
        for bad in ["", "a234567890123456", ".", "..", "-x", "a/b", "a b", "a:1"] {
            assert!(interface_name(Some(bad), "tap0").is_err(), "{bad:?}");
        }
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
        assert!(matches!(
            parse_cidr("0.0.0.0/0"),
            Err(PlanError::TooSmall(_))
        ));
        for bad in ["10.0.2.0", "fd00::/64", "10.0.2.0/33", "x/24", ""] {
            assert!(
                matches!(parse_cidr(bad), Err(PlanError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
