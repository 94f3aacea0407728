//! Negotiation by capabilities: the core knows no driver by name. A driver
//! announces in its hello what it honours (`mtu`, `cidr`, `ifname`,
//! `ipv6`, `detach-netns`, `disable-host-loopback`) and which port drivers
//! it offers (`port-driver:NAME`); a flag the driver does not announce is
//! refused here, after the hello and before any namespace exists, with an
//! error naming the driver and the flag.

use crate::settings::Settings;
use rk_driver::DriverInfo;

/// The port drivers of the core itself, which work with every network.
pub const CORE_PORT_DRIVERS: &[&str] = &["none", "builtin"];

/// The capability a driver announces for the port driver `name`.
pub fn port_driver_capability(name: &str) -> String {
    format!("port-driver:{name}")
}

/// The port drivers `info` offers, in the order announced.
pub fn offered_port_drivers(info: &DriverInfo) -> Vec<&str> {
    info.capabilities
        .iter()
        .filter_map(|c| c.strip_prefix("port-driver:"))
        .collect()
}

/// Checks the flags against what the driver announced. Returns warnings
/// for flags that are advice rather than a request (`--disable-host-loopback`
/// with a driver that has no host loopback to disable).
pub fn check(settings: &Settings, info: &DriverInfo) -> Result<Vec<String>, String> {
    let has = |c: &str| info.capabilities.iter().any(|x| x == c);
    let shown = &settings.net_name;
    let requested: [(bool, &str, &str); 5] = [
        (settings.mtu.is_some(), "--mtu", "mtu"),
        (settings.cidr.is_some(), "--cidr", "cidr"),
        (settings.ifname.is_some(), "--ifname", "ifname"),
        (settings.ipv6, "--ipv6", "ipv6"),
        (settings.detach_netns, "--detach-netns", "detach-netns"),
    ];
    for (given, flag, capability) in requested {
        if given && !has(capability) {
            return Err(format!(
                "network driver {shown} does not support {flag} (its hello does not announce the capability {capability:?}): drop {flag} or choose another driver"
            ));
        }
    }
    let mut warnings = Vec::new();
    if !settings.disable_host_loopback && has("disable-host-loopback") {
        warnings.push("specifying --disable-host-loopback is highly recommended to prohibit connecting to 127.0.0.1:* on the host namespace".into());
    }
    if settings.disable_host_loopback && !has("disable-host-loopback") {
        warnings.push(format!(
            "--disable-host-loopback has no effect with --net={shown}: it does not reach the host's loopback through a gateway address"
        ));
    }
    let pd = settings.port_driver.as_str();
    if !CORE_PORT_DRIVERS.contains(&pd) && !has(&port_driver_capability(pd)) {
        let mut offered: Vec<&str> = CORE_PORT_DRIVERS.to_vec();
        offered.extend(offered_port_drivers(info));
        return Err(format!(
            "--port-driver={pd} is not one of {} (the port drivers of the core and of network driver {shown})",
            offered.join(", ")
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["rootlesskit"];
        all.extend_from_slice(args);
        all.push("true");
        crate::settings::validate(&Cli::parse_from(all)).unwrap().0
    }

    fn info(caps: &[&str]) -> DriverInfo {
        DriverInfo::new("x", "1").with_capabilities(caps)
    }

    #[test]
    fn an_unannounced_flag_is_refused_naming_driver_and_flag() {
        let s = settings(&["--net=x", "--cidr=10.0.3.0/24"]);
        let e = check(&s, &info(&["mtu"])).unwrap_err();
        assert!(
            e.contains("network driver x does not support --cidr"),
            "{e}"
        );
        assert!(check(&s, &info(&["cidr"])).is_ok());
        let s = settings(&["--net=x", "--mtu=1400", "--ipv6"]);
        assert!(check(&s, &info(&["mtu"])).unwrap_err().contains("--ipv6"));
    }

    #[test]
    fn a_port_driver_must_be_announced_unless_it_is_the_cores() {
        let s = settings(&["--net=x", "--port-driver=mine"]);
        let e = check(&s, &info(&["port-driver:other"])).unwrap_err();
        assert!(e.contains("is not one of none, builtin, other"), "{e}");
        assert!(check(&s, &info(&["port-driver:mine"])).is_ok());
        let s = settings(&["--net=x", "--port-driver=builtin"]);
        assert!(check(&s, &info(&[])).is_ok());
    }

    #[test]
    fn disable_host_loopback_without_the_capability_is_a_warning() {
        let s = settings(&["--net=x", "--disable-host-loopback"]);
        let w = check(&s, &info(&[])).unwrap();
        assert_eq!(w.len(), 1);
        assert!(check(&s, &info(&["disable-host-loopback"]))
            .unwrap()
            .is_empty());
        // RootlessKit's advice, for drivers that have a host loopback.
        let s = settings(&["--net=x"]);
        assert!(
            check(&s, &info(&["disable-host-loopback"])).unwrap()[0].contains("highly recommended")
        );
        assert!(check(&s, &info(&[])).unwrap().is_empty());
    }
}
