//! The network pasta is told to build, as the SDK's addressing plan sees
//! it: like RootlessKit's pasta driver (and slirp4netns), the child gets
//! network+100, the gateway is network+2 and pasta's DNS forwarder
//! listens on network+3. pasta configures the interface itself
//! (`--config-net`); with `--ipv6` it copies the host's IPv6 addresses, so
//! the SDK's IPv6 plan is not used.

use rk_driver::plan::Shape;

/// The network the core asked for, checked against pasta's limits.
pub use rk_driver::plan::RequestedNetwork as Network;

/// pasta refuses an MTU larger than 65520 (ETH_MAX_MTU rounded down to
/// 32 bits).
pub const SHAPE: Shape = Shape::user_mode("pasta", 65520);

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;
    use std::net::Ipv4Addr;

    #[test]
    fn cidr_moves_every_address_and_the_mtu_limit_is_pastas() {
        let req = ConfigureRequest {
            cidr: Some("10.0.3.0/25".parse().unwrap()),
            ..Default::default()
        };
        let n = Network::from_request(&req, &SHAPE).unwrap();
        assert_eq!(n.plan.guest, Ipv4Addr::new(10, 0, 3, 100));
        assert_eq!(n.plan.gateway, Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(n.plan.dns, Ipv4Addr::new(10, 0, 3, 3));
        let req = ConfigureRequest {
            mtu: Some(65521),
            ..Default::default()
        };
        let e = Network::from_request(&req, &SHAPE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--mtu=65521 is out of range: pasta takes 68..65520 (default 65520)"
        );
    }
}
