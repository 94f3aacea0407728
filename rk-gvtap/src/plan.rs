//! The virtual network's shape, from the core's request: addresses, MTU,
//! interface name, and which destinations the NAT serves.

use rk_driver::ConfigureRequest;
use std::net::Ipv4Addr;

pub const DEFAULT_MTU: u32 = 65520;
/// Below this, a TCP segment carries too little to be useful and DNS answers
/// would need fragmenting all the time.
pub const MIN_MTU: u32 = 576;
/// The largest MTU whose frames (MTU + 14-byte ethernet header) fit the
/// 16-bit lengths of the stack.
pub const MAX_MTU: u32 = 65521;
pub const DEFAULT_IFNAME: &str = "tap0";
pub const DEFAULT_CIDR: &str = "10.0.2.0/24";
/// The gateway's MAC (locally administered, like gvisor-tap-vsock's).
pub const GATEWAY_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];
/// IPv6 needs links of at least this MTU (RFC 8200).
pub const MIN_MTU_IPV6: u32 = 1280;

/// The IPv6 network of `--ipv6`: RootlessKit's slirp4netns network
/// (`fd00::/64`, the guest at `fd00::100`), with the gateway and DNS
/// server at host number 1 (`fd00::1`), as this driver's IPv4 `.1`.
pub use rk_driver::plan::Ipv6Plan;

/// The gateway's and DNS server's host number in the IPv6 network.
pub const GATEWAY6_HOST: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct NetPlan {
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// `.1`: the stack's own address, DNS forwarder, and the host's loopback.
    pub gateway: Ipv4Addr,
    /// `.100`: the address the core gives the interface inside.
    pub guest: Ipv4Addr,
    pub mtu: u32,
    pub ifname: String,
    /// Connections to the gateway reach the host's 127.0.0.1 (and `::1`).
    pub host_loopback: bool,
    /// `--ipv6`: the IPv6 network as well.
    pub ipv6: Option<Ipv6Plan>,
}

impl NetPlan {
    pub fn from_request(req: &ConfigureRequest) -> Result<NetPlan, String> {
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(format!(
                "--mtu={mtu} is out of range for --net=gvisor-tap-vsock: give an MTU between {MIN_MTU} and {MAX_MTU} (default {DEFAULT_MTU})"
            ));
        }
        if req.ipv6 && mtu < MIN_MTU_IPV6 {
            return Err(format!(
                "--mtu={mtu} is too small for --ipv6: IPv6 needs an MTU of at least {MIN_MTU_IPV6}"
            ));
        }
        let (network, prefix) = parse_cidr(
            &req.cidr
                .map_or_else(|| DEFAULT_CIDR.to_owned(), |c| c.to_string()),
        )?;
        let base = u32::from(network);
        Ok(NetPlan {
            network,
            prefix,
            gateway: Ipv4Addr::from(base + 1),
            guest: Ipv4Addr::from(base + 100),
            mtu,
            ifname: req
                .ifname
                .clone()
                .unwrap_or_else(|| DEFAULT_IFNAME.to_owned()),
            host_loopback: !req.disable_host_loopback,
            ipv6: req
                .ipv6
                .then(|| Ipv6Plan::new(GATEWAY6_HOST, GATEWAY6_HOST)),
        })
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = prefix_mask(self.prefix);
        u32::from(addr) & mask == u32::from(self.network)
    }

    /// The subnet's broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !prefix_mask(self.prefix))
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The core validated the CIDR already; this re-checks, since the driver
/// must not trust its input blindly.
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("--cidr={s:?} is not an IPv4 network like {DEFAULT_CIDR}");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if prefix > 25 {
        return Err(format!(
            "--cidr={s}: the prefix must be /25 or shorter, so that the network holds the address .100"
        ));
    }
    if u32::from(addr) & !prefix_mask(prefix) != 0 {
        return Err(format!(
            "--cidr={s} is not a network address (host bits are set)"
        ));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ConfigureRequest {
        ConfigureRequest::default()
    }

    #[test]
    fn defaults_match_rootlesskit() {
        let p = NetPlan::from_request(&req()).unwrap();
        assert_eq!(p.guest, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(p.gateway, Ipv4Addr::new(10, 0, 2, 1));
        assert_eq!((p.prefix, p.mtu), (24, 65520));
        assert_eq!(p.ifname, "tap0");
        assert!(p.host_loopback);
        assert_eq!(p.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(p.ipv6, None);
    }

    #[test]
    fn ipv6_is_slirp4netns_network_with_the_gateway_at_1() {
        use std::net::Ipv6Addr;
        let mut r = req();
        r.ipv6 = true;
        let p = NetPlan::from_request(&r).unwrap().ipv6.unwrap();
        assert_eq!(p.guest, "fd00::100".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.gateway, "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dns, p.gateway);
        assert_eq!(p.guest_net().to_string(), "fd00::100/64");
        assert!(p.contains("fd00::ffff:1".parse().unwrap()));
        assert!(!p.contains("fd00:0:0:1::1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
    }

    #[test]
    fn cidr_moves_every_address() {
        let mut r = req();
        r.cidr = Some("10.0.5.0/24".parse().unwrap());
        r.disable_host_loopback = true;
        let p = NetPlan::from_request(&r).unwrap();
        assert_eq!(p.guest, Ipv4Addr::new(10, 0, 5, 100));
        assert_eq!(p.gateway, Ipv4Addr::new(10, 0, 5, 1));
        assert!(p.contains(Ipv4Addr::new(10, 0, 5, 7)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 2, 7)));
        assert!(!p.host_loopback);
    }

    #[test]
    fn bad_requests_name_the_fix() {
        let mut r = req();
        r.ipv6 = true;
        r.mtu = Some(1000);
        assert!(NetPlan::from_request(&r)
            .unwrap_err()
            .contains("at least 1280"));
        let mut r = req();
        r.mtu = Some(100);
        assert!(NetPlan::from_request(&r)
            .unwrap_err()
            .contains("between 576"));
        let mut r = req();
        r.cidr = Some("10.0.2.0/28".parse().unwrap());
        assert!(NetPlan::from_request(&r).unwrap_err().contains("/25"));
        let mut r = req();
        r.cidr = Some("10.0.2.1/24".parse().unwrap());
        assert!(NetPlan::from_request(&r).unwrap_err().contains("host bits"));
    }
}
