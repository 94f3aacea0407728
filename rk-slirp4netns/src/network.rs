//! The virtual network slirp4netns provides, as the SDK's addressing plan
//! sees it: slirp4netns puts its gateway at network+2, its DNS forwarder
//! at network+3 and recommends network+100 for the guest; with
//! `--enable-ipv6` it always serves `fd00::/64` with gateway `fd00::2` and
//! DNS `fd00::3` (the SDK's IPv6 plan with the same host numbers).

use rk_driver::plan::Shape;

/// The network the core asked for, checked against slirp4netns's limits.
pub use rk_driver::plan::RequestedNetwork as Network;

/// slirp4netns refuses a larger MTU than 65521.
pub const SHAPE: Shape = Shape::user_mode("slirp4netns", 65521);

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;

    #[test]
    fn defaults_and_limits_are_slirp4netns_s() {
        let req = ConfigureRequest {
            ipv6: true,
            mtu: Some(65521),
            ..Default::default()
        };
        let cfg = Network::from_request(&req, &SHAPE).unwrap().config();
        assert_eq!(cfg.interface, "tap0");
        assert_eq!(cfg.ipv4, Some("10.0.2.100/24".parse().unwrap()));
        assert_eq!(cfg.gateway4, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(cfg.ipv6, Some("fd00::100/64".parse().unwrap()));
        assert_eq!(cfg.gateway6, Some("fd00::2".parse().unwrap()));
        let dns: Vec<String> = cfg.dns.iter().map(ToString::to_string).collect();
        assert_eq!(dns, ["10.0.2.3", "fd00::3"]);
        assert_eq!(cfg.mtu, 65521);
        let too_big = ConfigureRequest {
            mtu: Some(65522),
            ..Default::default()
        };
        let e = Network::from_request(&too_big, &SHAPE).unwrap_err();
        assert!(e.to_string().contains("slirp4netns takes 68..65521"), "{e}");
        let small = ConfigureRequest {
            cidr: Some("10.0.2.0/26".parse().unwrap()),
            ..Default::default()
        };
        assert!(Network::from_request(&small, &SHAPE).is_err());
    }
}
