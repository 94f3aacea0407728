//! The network pasta is told to build: defaults, validation of what the
//! core asks for, and the addresses that follow from the CIDR.
//!
//! Like RootlessKit's pasta driver (and slirp4netns), the child gets
//! network+100, the gateway is network+2 and pasta's DNS forwarder listens
//! on network+3. pasta configures the interface itself (`--config-net`).

use rk_driver::ConfigureRequest;
use std::fmt;
use std::net::Ipv4Addr;

pub const DEFAULT_IFNAME: &str = "tap0";
pub const DEFAULT_MTU: u32 = 65520;
/// pasta refuses larger values (ETH_MAX_MTU rounded down to 32 bits).
pub const MAX_MTU: u32 = 65520;
/// The smallest MTU that still carries IPv4.
pub const MIN_MTU: u32 = 68;
/// The smallest MTU IPv6 allows.
pub const MIN_MTU_IPV6: u32 = 1280;
pub const DEFAULT_CIDR: Ipv4Cidr = Ipv4Cidr {
    network: Ipv4Addr::new(10, 0, 2, 0),
    prefix: 24,
};
/// The child's address is network+100: the network must hold 128 addresses.
pub const MAX_PREFIX: u8 = 25;
pub const MIN_PREFIX: u8 = 1;

const GATEWAY_OFFSET: u32 = 2;
const DNS_OFFSET: u32 = 3;
const CHILD_OFFSET: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("--cidr={0:?} is not an IPv4 network: write it like 10.0.2.0/24")]
    CidrSyntax(String),
    #[error(
        "--cidr={cidr:?}: the prefix length must be {MIN_PREFIX}..{MAX_PREFIX} so that \
         the child's address (network + 100) fits, e.g. 10.0.2.0/24"
    )]
    CidrPrefix { cidr: String },
    #[error("--cidr={cidr:?} has host bits set: pass the network address, --cidr={network}")]
    CidrHostBits { cidr: String, network: Ipv4Cidr },
    #[error("--mtu={0} is out of range: pasta takes {MIN_MTU}..{MAX_MTU} (default {DEFAULT_MTU})")]
    MtuRange(u32),
    #[error("--mtu={0} is too small for --ipv6, which needs at least {MIN_MTU_IPV6}")]
    MtuIpv6(u32),
    #[error(
        "--ifname={0:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)"
    )]
    Ifname(String),
}

/// An IPv4 network in CIDR notation with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        let syntax = || NetworkError::CidrSyntax(text.to_owned());
        let (addr, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(NetworkError::CidrPrefix {
                cidr: text.to_owned(),
            });
        }
        let network = Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & (u32::MAX << (32 - prefix))),
            prefix,
        };
        if network.network != addr {
            return Err(NetworkError::CidrHostBits {
                cidr: text.to_owned(),
                network,
            });
        }
        Ok(network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The address `offset` past the network address; the prefix limit
    /// keeps every offset used here inside the network.
    fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The child's side of the network, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub ifname: String,
    pub mtu: u32,
    pub cidr: Ipv4Cidr,
    pub ipv6: bool,
}

impl Network {
    pub fn from_request(request: &ConfigureRequest) -> Result<Self, NetworkError> {
        let cidr = match &request.cidr {
            Some(net) => Ipv4Cidr::parse(&net.to_string())?,
            None => DEFAULT_CIDR,
        };
        let mtu = request.mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(NetworkError::MtuRange(mtu));
        }
        if request.ipv6 && mtu < MIN_MTU_IPV6 {
            return Err(NetworkError::MtuIpv6(mtu));
        }
        let ifname = request
            .ifname
            .clone()
            .unwrap_or_else(|| DEFAULT_IFNAME.to_owned());
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname == "."
            || ifname == ".."
            || ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(NetworkError::Ifname(ifname));
        }
        Ok(Network {
            ifname,
            mtu,
            cidr,
            ipv6: request.ipv6,
        })
    }

    pub fn address(&self) -> Ipv4Addr {
        self.cidr.host(CHILD_OFFSET)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.host(GATEWAY_OFFSET)
    }

    pub fn dns(&self) -> Ipv4Addr {
        self.cidr.host(DNS_OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ConfigureRequest {
        ConfigureRequest {
            child_pid: 1,
            state_dir: "/tmp/x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_rootlesskits() {
        let n = Network::from_request(&request()).unwrap();
        assert_eq!(n.ifname, "tap0");
        assert_eq!(n.mtu, 65520);
        assert_eq!(n.address(), Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(n.cidr.prefix(), 24);
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(n.dns(), Ipv4Addr::new(10, 0, 2, 3));
        assert!(!n.ipv6);
    }

    #[test]
    fn cidr_moves_every_address() {
        let mut r = request();
        r.cidr = Some("10.0.3.0/25".parse().unwrap());
        let n = Network::from_request(&r).unwrap();
        assert_eq!(n.address(), Ipv4Addr::new(10, 0, 3, 100));
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(n.dns(), Ipv4Addr::new(10, 0, 3, 3));
        assert_eq!(n.cidr.to_string(), "10.0.3.0/25");
        r.cidr = Some("172.16.0.0/12".parse().unwrap());
        let n = Network::from_request(&r).unwrap();
        assert_eq!(n.address(), Ipv4Addr::new(172, 16, 0, 100));
    }

    #[test]
    fn bad_cidrs_name_the_fix() {
        let e = Ipv4Cidr::parse("10.0.2.100/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cidr=\"10.0.2.100/24\" has host bits set: pass the network address, --cidr=10.0.2.0/24"
        );
        assert!(matches!(
            Ipv4Cidr::parse("10.0.2.0/26"),
            Err(NetworkError::CidrPrefix { .. })
        ));
        for bad in [
            "10.0.2.0",
            "fd00::/64",
            "10.0.2.0/x",
            "10.0.2.0/+8",
            "10.0.2.0/",
        ] {
            assert!(
                matches!(Ipv4Cidr::parse(bad), Err(NetworkError::CidrSyntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn mtu_limits_are_pastas() {
        let mut r = request();
        r.mtu = Some(1500);
        assert_eq!(Network::from_request(&r).unwrap().mtu, 1500);
        r.mtu = Some(65521);
        assert_eq!(
            Network::from_request(&r),
            Err(NetworkError::MtuRange(65521))
        );
        r.mtu = Some(1000);
        r.ipv6 = true;
        assert_eq!(Network::from_request(&r), Err(NetworkError::MtuIpv6(1000)));
    }

    #[test]
    fn ifname_is_taken_or_refused() {
        let mut r = request();
        r.ifname = Some("eth7".into());
        assert_eq!(Network::from_request(&r).unwrap().ifname, "eth7");
        r.ifname = Some("a/b".into());
        assert!(matches!(
            Network::from_request(&r),
            Err(NetworkError::Ifname(_))
        ));
    }
}
