//! Checking a driver's `configured` answer before anything acts on it: a
//! driver is a separate program, possibly a third party's, and what it
//! says ends up in netlink requests, `/etc/resolv.conf` and the API.
//! Addresses are typed in the protocol: a malformed one already failed to
//! decode; what is left to check here is the rest.

use rk_driver::NetworkConfig;

/// At most this many nameservers (resolv.conf uses three; a few spare).
pub const MAX_DNS: usize = 8;
/// At most this many `info` entries, each key and value this long.
pub const MAX_INFO: usize = 32;
pub const MAX_INFO_LEN: usize = 256;
/// The MTU range the core accepts from a driver.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65521;

/// `Ok` when every field is well formed; else what is wrong, as a sentence.
pub fn check(cfg: &NetworkConfig) -> Result<(), String> {
    crate::settings::check_ifname(&cfg.interface)
        .map_err(|e| format!("answered a bad interface name: {e}"))?;
    if !MTU_RANGE.contains(&cfg.mtu) {
        return Err(mtu_out_of_range(cfg.mtu));
    }
    if cfg.dns.len() > MAX_DNS {
        return Err(format!(
            "answered {} nameservers; at most {MAX_DNS} are accepted",
            cfg.dns.len()
        ));
    }
    if cfg.info.len() > MAX_INFO {
        return Err(format!(
            "answered {} info entries; at most {MAX_INFO} are accepted",
            cfg.info.len()
        ));
    }
    for (k, v) in &cfg.info {
        if k.len() > MAX_INFO_LEN
            || v.len() > MAX_INFO_LEN
            || k.chars().chain(v.chars()).any(char::is_control)
        {
            return Err(format!(
                "answered an info entry {k:?} that is too long or holds control characters"
            ));
        }
    }
    Ok(())
}

/// The one message for an MTU a driver answered outside the accepted range.
pub fn mtu_out_of_range(mtu: u32) -> String {
    format!(
        "answered MTU {mtu}, outside {}..={}",
        MTU_RANGE.start(),
        MTU_RANGE.end()
    )
}

/// The parsed form of the checked fields, for netlink.
pub fn interface_setup(cfg: &NetworkConfig) -> Result<crate::netlink::InterfaceSetup, String> {
    check(cfg)?;
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

    fn good() -> NetworkConfig {
        NetworkConfig {
            interface: "tap0".into(),
            ipv4: Some("10.0.2.100/24".parse().unwrap()),
            gateway4: Some("10.0.2.2".parse().unwrap()),
            dns: vec!["10.0.2.3".parse().unwrap()],
            mtu: 65520,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_answer_passes() {
        assert_eq!(check(&good()), Ok(()));
    }

    #[test]
    fn too_many_nameservers_are_refused() {
        let mut c = good();
        c.dns = vec![c.dns[0]; 5000];
        assert!(check(&c).unwrap_err().contains("5000 nameservers"));
    }

    #[test]
    fn bad_fields_are_refused() {
        for f in [
            |c: &mut NetworkConfig| c.interface = "a/b".into(),
            |c: &mut NetworkConfig| c.interface = "x".repeat(16),
            |c: &mut NetworkConfig| c.mtu = 65522,
            |c: &mut NetworkConfig| c.mtu = 10,
            |c: &mut NetworkConfig| {
                c.info.insert("k".into(), "v\n".into());
            },
        ] {
            let mut c = good();
            f(&mut c);
            assert!(check(&c).is_err(), "{c:?} passed");
        }
    }
}
