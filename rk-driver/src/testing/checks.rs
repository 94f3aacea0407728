//! What a driver's `hello` and `configured` must look like, beyond what
//! decoding already enforces (typed addresses, required members).

use super::Violation;
use crate::protocol::*;

/// Checks a driver's hello: it calls itself `expected_name` (NAME of the
/// file `rk-NAME`), states a version, and its capability and option names
/// are well formed.
pub fn check_hello(expected_name: &str, info: &DriverInfo) -> Result<(), Violation> {
    if info.driver != expected_name {
        return Err(Violation(format!(
            "calls itself {:?} in its hello, but its file is rk-{expected_name} (section 6.2)",
            info.driver
        )));
    }
    if info.version.trim().is_empty() {
        return Err(Violation(
            "states an empty version in its hello (section 6.2)".into(),
        ));
    }
    for cap in &info.capabilities {
        let well_formed = match cap.strip_prefix("port-driver:") {
            Some(port_driver) => is_name(port_driver),
            None => is_name(cap) && cap.bytes().all(|b| !b.is_ascii_uppercase()),
        };
        if !well_formed {
            return Err(Violation(format!(
                "announces a malformed capability {cap:?} (section 6.2: lower-case names with '-', or port-driver:NAME)"
            )));
        }
    }
    if let Some(o) = info.options.iter().find(|o| !is_name(o)) {
        return Err(Violation(format!(
            "announces a malformed option name {o:?} (section 6.2: flag names without dashes)"
        )));
    }
    Ok(())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Checks a `configured` answer: what the core refuses
/// ([`NetworkConfig::check`]), and what the request asked for.
pub fn check_answer(request: &ConfigureRequest, cfg: &NetworkConfig) -> Result<(), Violation> {
    let fail = |what: String| Err(Violation(format!("answered configure with {what}")));
    cfg.check()
        .map_err(|e| Violation(format!("{e} (section 11)")))?;
    if let Some(asked) = request.ifname.as_ref().filter(|a| **a != cfg.interface) {
        return fail(format!(
            "interface {:?}, but the core asked for {asked:?} (section 6.3)",
            cfg.interface
        ));
    }
    if let Some(asked) = request.mtu.filter(|a| *a != cfg.mtu) {
        return fail(format!(
            "MTU {}, but the core asked for {asked} (section 6.3)",
            cfg.mtu
        ));
    }
    if let Some(net) = cfg.ipv4 {
        let a = net.addr();
        if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() {
            return fail(format!(
                "the IPv4 address {net}, which no interface can use"
            ));
        }
        if let Some(gw) = cfg.gateway4.filter(|gw| !net.contains(gw) || *gw == a) {
            return fail(format!(
                "gateway {gw} outside {net}'s network or equal to the address (section 6.4)"
            ));
        }
        if let Some(cidr) = request.cidr.filter(|c| !c.contains(&a)) {
            return fail(format!(
                "the address {net} outside --cidr={cidr} (section 6.3)"
            ));
        }
    }
    if let Some(net) = cfg.ipv6 {
        let a = net.addr();
        if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
            return fail(format!(
                "the IPv6 address {net}, which no interface can use"
            ));
        }
    }
    if let Some(d) = cfg.dns.iter().find(|d| d.is_unspecified()) {
        return fail(format!("the nameserver {d}, which is no address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of section 14's example, as a driver sends it.
    fn good() -> NetworkConfig {
        let text = r#"{"type":"configured","interface":"tap0","ipv4":"10.0.2.100/24","gateway4":"10.0.2.2","dns":["10.0.2.3"],"mtu":65520}"#;
        match crate::decode(text.as_bytes()).unwrap() {
            DriverMessage::Configured(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sane_answer_passes_and_each_fault_is_caught() {
        let req = ConfigureRequest::default();
        assert_eq!(check_answer(&req, &good()), Ok(()));
        let faults: [fn(&mut NetworkConfig); 4] = [
            |c| c.mtu = 65522,
            |c| c.gateway4 = Some("10.0.3.2".parse().unwrap()),
            |c| c.ipv4 = Some("0.0.0.0/24".parse().unwrap()),
            |c| c.dns = vec!["0.0.0.0".parse().unwrap()],
        ];
        for f in faults {
            let mut c = good();
            f(&mut c);
            assert!(check_answer(&req, &c).is_err(), "{c:?} passed");
        }
    }

    #[test]
    fn the_answer_must_honour_the_request() {
        let req = ConfigureRequest {
            mtu: Some(1500),
            ..Default::default()
        };
        assert!(check_answer(&req, &good())
            .unwrap_err()
            .0
            .contains("asked for 1500"));
        let req = ConfigureRequest {
            cidr: Some("10.0.3.0/24".parse().unwrap()),
            ..Default::default()
        };
        assert!(check_answer(&req, &good())
            .unwrap_err()
            .0
            .contains("--cidr"));
        let req = ConfigureRequest {
            ifname: Some("eth0".into()),
            ..Default::default()
        };
        assert!(check_answer(&req, &good()).unwrap_err().0.contains("eth0"));
    }

    #[test]
    fn hello_names_and_capabilities_are_checked() {
        let mut info = DriverInfo::new("x", "1");
        info.capabilities = vec!["mtu".into(), "port-driver:x".into()];
        assert_eq!(check_hello("x", &info), Ok(()));
        assert!(check_hello("y", &info).unwrap_err().0.contains("rk-y"));
        for bad in ["MTU", "", "port-driver:", "has space"] {
            let mut i = info.clone();
            i.capabilities.push(bad.into());
            assert!(check_hello("x", &i).is_err(), "{bad:?}");
        }
        assert!(check_hello("x", &DriverInfo::new("x", " ")).is_err());
    }
}
