//! Checking a driver's `configured` answer before anything acts on it: a
//! driver is a separate program, possibly a third party's, and what it
//! says ends up in netlink requests, `/etc/resolv.conf` and the API.
//! Addresses are typed in the protocol (a malformed one already failed to
//! decode); the limits on the rest are `NetworkConfig::check`'s.

use rk_driver::NetworkConfig;

/// The checked answer, for netlink.
pub fn interface_setup(cfg: &NetworkConfig) -> Result<crate::netlink::InterfaceSetup, String> {
    cfg.check()?;
    Ok(crate::netlink::InterfaceSetup {
        name: cfg.interface.clone(),
        mtu: cfg.mtu,
        ipv4: cfg.ipv4.map(|n| (n.addr(), n.prefix_len())),
        gateway4: cfg.gateway4,
        ipv6: cfg.ipv6.map(|n| (n.addr(), n.prefix_len())),
        gateway6: cfg.gateway6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_is_the_answer_and_a_bad_answer_gives_none() {
        let mut c: NetworkConfig = serde_json::from_str(
            r#"{"interface":"tap0","ipv4":"10.0.2.100/24","gateway4":"10.0.2.2","mtu":65520}"#,
        )
        .unwrap();
        let s = interface_setup(&c).unwrap();
        assert_eq!(s.ipv4, Some(("10.0.2.100".parse().unwrap(), 24)));
        assert_eq!(s.gateway4, Some("10.0.2.2".parse().unwrap()));
        c.mtu = 65522;
        assert_eq!(
            interface_setup(&c).unwrap_err(),
            "answered MTU 65522, outside 68..=65521"
        );
    }
}
