//! The virtual network slirp4netns provides: defaults, validation of what
//! the core asks for, and the addresses that follow from the CIDR.
//!
//! slirp4netns puts its gateway at network+2, its DNS forwarder at
//! network+3 and recommends network+100 for the guest; with `--enable-ipv6`
//! it always serves `fd00::/64` with gateway `fd00::2` and DNS `fd00::3`.

use rk_driver::{ConfigureRequest, Ipv4Net, Ipv6Net, NetworkConfig};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const DEFAULT_IFNAME: &str = "tap0";
pub const DEFAULT_MTU: u32 = 65520;
/// slirp4netns refuses larger values.
pub const MAX_MTU: u32 = 65521;
/// The smallest MTU that still carries IPv4.
pub const MIN_MTU: u32 = 68;
/// The smallest MTU IPv6 allows.
pub const MIN_MTU_IPV6: u32 = 1280;
pub const DEFAULT_CIDR: Ipv4Cidr = Ipv4Cidr {
    network: Ipv4Addr::new(10, 0, 2, 0),
    prefix: 24,
};
/// slirp4netns's limits: the guest address is network+100, so the network
/// must hold at least 128 addresses.
pub const MIN_PREFIX: u8 = 1;
pub const MAX_PREFIX: u8 = 25;

const GATEWAY_OFFSET: u32 = 2;
const DNS_OFFSET: u32 = 3;
const GUEST_OFFSET: u32 = 100;

pub const IPV6_GUEST: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100), 64);
pub const IPV6_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const IPV6_DNS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("--cidr={0:?} is not an IPv4 network: write it like 10.0.2.0/24")]
    CidrSyntax(String),
    #[error(
        "--cidr={0:?} is an IPv6 network, but slirp4netns takes an IPv4 network \
         such as 10.0.2.0/24 (with --ipv6 it always adds fd00::/64)"
    )]
    CidrIpv6(String),
    #[error(
        "--cidr={cidr:?}: the prefix length must be {MIN_PREFIX}..{MAX_PREFIX} so that \
         the guest address (network + 100) fits, e.g. 10.0.2.0/24"
    )]
    CidrPrefix { cidr: String },
    #[error("--cidr={cidr:?} has host bits set: pass the network address, --cidr={network}")]
    CidrHostBits { cidr: String, network: Ipv4Cidr },
    #[error(
        "--mtu={0} is out of range: slirp4netns takes {MIN_MTU}..{MAX_MTU} (default {DEFAULT_MTU})"
    )]
    MtuRange(u32),
    #[error("--mtu={0} is too small for --ipv6, which needs at least {MIN_MTU_IPV6}")]
    MtuIpv6(u32),
    #[error("--ifname={name:?} is not a valid interface name: {reason}")]
    Ifname { name: String, reason: &'static str },
}

/// An IPv4 network in CIDR notation with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/p` the way slirp4netns's `--cidr` does, with
    /// slirp4netns's limits on the prefix length.
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| NetworkError::CidrSyntax(text.to_owned()))?;
        if addr.contains(':') {
            return Err(NetworkError::CidrIpv6(text.to_owned()));
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| NetworkError::CidrSyntax(text.to_owned()))?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NetworkError::CidrSyntax(text.to_owned()));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| NetworkError::CidrSyntax(text.to_owned()))?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(NetworkError::CidrPrefix {
                cidr: text.to_owned(),
            });
        }
        let masked = Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if masked.network != addr {
            return Err(NetworkError::CidrHostBits {
                cidr: text.to_owned(),
                network: masked,
            });
        }
        Ok(masked)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The address `offset` past the network address. The prefix limits
    /// guarantee that every offset this module uses stays inside.
    fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.host(GATEWAY_OFFSET)
    }

    pub fn dns(&self) -> Ipv4Addr {
        self.host(DNS_OFFSET)
    }

    pub fn guest(&self) -> Ipv4Addr {
        self.host(GUEST_OFFSET)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The network the core asked for, validated, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub ifname: String,
    pub mtu: u32,
    pub cidr: Ipv4Cidr,
    /// The core asked for a CIDR (so `--cidr` goes on the command line).
    pub custom_cidr: bool,
    pub ipv6: bool,
}

impl Network {
    pub fn from_request(req: &ConfigureRequest) -> Result<Self, NetworkError> {
        let cidr = req
            .cidr
            .map(|net| Ipv4Cidr::parse(&net.to_string()))
            .transpose()?;
        Ok(Network {
            ifname: ifname(req.ifname.as_deref())?,
            mtu: mtu(req.mtu, req.ipv6)?,
            cidr: cidr.unwrap_or(DEFAULT_CIDR),
            custom_cidr: cidr.is_some(),
            ipv6: req.ipv6,
        })
    }

    /// How the core must set the interface up (the `info` map is left empty).
    pub fn config(&self) -> NetworkConfig {
        let mut dns = vec![self.cidr.dns().into()];
        if self.ipv6 {
            dns.push(IPV6_DNS.into());
        }
        NetworkConfig {
            interface: self.ifname.clone(),
            // Ipv4Cidr::parse allows prefixes of at most /25 only.
            ipv4: Some(Ipv4Net::new_assert(self.cidr.guest(), self.cidr.prefix())),
            gateway4: Some(self.cidr.gateway()),
            ipv6: self.ipv6.then_some(IPV6_GUEST),
            gateway6: self.ipv6.then_some(IPV6_GATEWAY),
            dns,
            mtu: self.mtu,
            configured_by_driver: false,
            dynamic: false,
            info: Default::default(),
        }
    }
}

/// `None` and `Some(0)` (RootlessKit's "driver default") give the default.
fn mtu(requested: Option<u32>, ipv6: bool) -> Result<u32, NetworkError> {
    let mtu = match requested {
        None | Some(0) => DEFAULT_MTU,
        Some(m) => m,
    };
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(NetworkError::MtuRange(mtu));
    }
    if ipv6 && mtu < MIN_MTU_IPV6 {
        return Err(NetworkError::MtuIpv6(mtu));
    }
    Ok(mtu)
}

fn ifname(requested: Option<&str>) -> Result<String, NetworkError> {
    let name = requested.unwrap_or(DEFAULT_IFNAME);
    let bad = |reason| {
        Err(NetworkError::Ifname {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ConfigureRequest {
        ConfigureRequest {
            child_pid: 1,
            state_dir: "/tmp".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_rootlesskit() {
        let net = Network::from_request(&request()).unwrap();
        let cfg = net.config();
        assert_eq!(cfg.interface, "tap0");
        assert_eq!(cfg.ipv4, Some("10.0.2.100/24".parse().unwrap()));
        assert_eq!(cfg.gateway4, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(
            cfg.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.2.3"]
        );
        assert_eq!(cfg.mtu, 65520);
        assert_eq!(cfg.ipv6, None);
        assert_eq!(cfg.gateway6, None);
        assert!(!cfg.configured_by_driver);
        assert!(!cfg.dynamic);
        assert!(!net.custom_cidr);
    }

    #[test]
    fn ipv6_adds_address_gateway_and_a_second_nameserver() {
        let req = ConfigureRequest {
            ipv6: true,
            ..request()
        };
        let cfg = Network::from_request(&req).unwrap().config();
        assert_eq!(cfg.ipv6, Some("fd00::100/64".parse().unwrap()));
        assert_eq!(cfg.gateway6, Some("fd00::2".parse().unwrap()));
        assert_eq!(
            cfg.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.2.3", "fd00::3"]
        );
    }

    #[test]
    fn custom_cidr_moves_every_address() {
        let req = ConfigureRequest {
            cidr: Some("10.8.0.0/16".parse().unwrap()),
            ..request()
        };
        let net = Network::from_request(&req).unwrap();
        assert!(net.custom_cidr);
        let cfg = net.config();
        assert_eq!(cfg.ipv4, Some("10.8.0.100/16".parse().unwrap()));
        assert_eq!(cfg.gateway4, Some("10.8.0.2".parse().unwrap()));
        assert_eq!(
            cfg.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.8.0.3"]
        );
    }

    #[test]
    fn smallest_allowed_network_still_holds_the_guest() {
        let c = Ipv4Cidr::parse("192.168.5.128/25").unwrap();
        assert_eq!(c.guest(), Ipv4Addr::new(192, 168, 5, 228));
        assert_eq!(c.to_string(), "192.168.5.128/25");
        assert_eq!(
            Ipv4Cidr::parse("0.0.0.0/1").unwrap().guest(),
            Ipv4Addr::new(0, 0, 0, 100)
        );
    }

    #[test]
    fn prefix_outside_slirp4netns_limits_is_rejected() {
        for bad in ["10.0.2.0/26", "10.0.2.0/32", "0.0.0.0/0"] {
            let e = Ipv4Cidr::parse(bad).unwrap_err();
            assert!(matches!(e, NetworkError::CidrPrefix { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("1..25"), "{e}");
        }
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_to_use_instead() {
        let e = Ipv4Cidr::parse("10.0.2.100/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cidr=\"10.0.2.100/24\" has host bits set: pass the network address, --cidr=10.0.2.0/24"
        );
    }

    #[test]
    fn malformed_and_ipv6_cidrs_are_rejected() {
        for bad in [
            "",
            "10.0.2.0",
            "10.0.2.0/",
            "10.0.2/24",
            "10.0.2.0/+4",
            "10.0.2.0/024",
            "10.0.2.0/24/1",
            "256.0.0.0/8",
            "ten/8",
        ] {
            assert!(
                matches!(Ipv4Cidr::parse(bad), Err(NetworkError::CidrSyntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Ipv4Cidr::parse("fd00::/64"),
            Err(NetworkError::CidrIpv6(_))
        ));
    }

    #[test]
    fn mtu_zero_means_default_and_out_of_range_is_rejected() {
        assert_eq!(mtu(Some(0), false), Ok(65520));
        assert_eq!(mtu(Some(1500), false), Ok(1500));
        assert_eq!(mtu(Some(65521), false), Ok(65521));
        assert_eq!(mtu(Some(68), false), Ok(68));
        assert_eq!(mtu(Some(65522), false), Err(NetworkError::MtuRange(65522)));
        assert_eq!(mtu(Some(67), false), Err(NetworkError::MtuRange(67)));
        assert_eq!(mtu(Some(1279), true), Err(NetworkError::MtuIpv6(1279)));
        assert!(NetworkError::MtuRange(70000)
            .to_string()
            .contains("68..65521"));
    }

    #[test]
    fn interface_names_the_kernel_or_slirp4netns_would_refuse_are_rejected() {
        assert_eq!(ifname(Some("eth0")).unwrap(), "eth0");
        assert_eq!(ifname(Some("a23456789012345")).unwrap().len(), 15);
        for bad in ["", "a234567890123456", ".", "..", "-x", "a/b", "a b", "a:1"] {
            assert!(ifname(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
