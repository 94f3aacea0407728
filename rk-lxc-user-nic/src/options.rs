//! What the core asked for: the request's generic fields and the driver
//! options it forwards (flag names without dashes).

use crate::mac::MacChoice;
use rk_driver::ConfigureRequest;
use std::path::PathBuf;

pub const BINARY: &str = "lxc-user-nic-binary";
pub const BRIDGE: &str = "lxc-user-nic-bridge";
pub const MAC: &str = "lxc-user-nic-mac";
/// Every option this driver reads, as announced in its hello.
pub const ALL: [&str; 3] = [BINARY, BRIDGE, MAC];

pub const DEFAULT_BRIDGE: &str = "lxcbr0";
pub const DEFAULT_IFNAME: &str = "eth0";
pub const DEFAULT_MTU: u32 = 1500;
/// The kernel's lower bound for an IPv4 interface; the upper one is a
/// veth's maximum.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error(
        "unknown option --net-opt={key}=...: the lxc-user-nic driver understands only --{} (and port-driver)",
        ALL.join(", --")
    )]
    Unknown { key: String },
    #[error("--{BINARY} is empty: pass the path of lxc-user-nic, e.g. --{BINARY}=/usr/libexec/lxc/lxc-user-nic")]
    EmptyBinary,
    #[error(
        "--{BRIDGE}={0:?} is not an interface name (1 to 15 characters, no '/', ':' or whitespace)"
    )]
    BadBridge(String),
    #[error(
        "--{MAC}={value:?}: {reason}; use auto, random or a unicast address like 02:00:00:00:00:01"
    )]
    BadMac { value: String, reason: String },
    #[error("--mtu={0} is out of range: use 68..65535 (the bridge's MTU, usually 1500)")]
    BadMtu(u32),
    #[error("--cidr is not supported with --net=lxc-user-nic: the bridge's DHCP server chooses the address (change the range in lxc-net's configuration instead)")]
    Cidr,
    #[error("--ipv6 is not supported with --net=lxc-user-nic: the driver configures IPv4 from DHCP only")]
    Ipv6,
    #[error("--port-driver={0} does not work with --net=lxc-user-nic: use --port-driver=builtin")]
    PortDriver(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: look in the distributions' usual places.
    pub binary: Option<PathBuf>,
    /// The bridge the veth joins (`--lxc-user-nic-bridge`).
    pub bridge: String,
    /// The veth's name inside the namespace.
    pub ifname: String,
    /// `None`: the DHCP server's interface MTU, else [`DEFAULT_MTU`].
    pub mtu: Option<u32>,
    pub mac: MacChoice,
    pub detach_netns: bool,
}

impl Options {
    pub fn parse(req: &ConfigureRequest) -> Result<Self, OptionError> {
        // The bridge's DHCP server decides the addresses.
        if req.ipv6 {
            return Err(OptionError::Ipv6);
        }
        if req.cidr.is_some() {
            return Err(OptionError::Cidr);
        }
        if let Some(mtu) = req.mtu.filter(|m| !MTU_RANGE.contains(m)) {
            return Err(OptionError::BadMtu(mtu));
        }
        let mtu = req.mtu;
        let mut o = Options {
            binary: None,
            bridge: DEFAULT_BRIDGE.to_owned(),
            ifname: req
                .ifname
                .clone()
                .unwrap_or_else(|| DEFAULT_IFNAME.to_owned()),
            mtu,
            mac: MacChoice::Auto,
            detach_netns: req.detach_netns,
        };
        for (key, value) in &req.options {
            match key.as_str() {
                BINARY if value.is_empty() => return Err(OptionError::EmptyBinary),
                BINARY => o.binary = Some(PathBuf::from(value)),
                BRIDGE if !rk_driver::is_ifname(value) => {
                    return Err(OptionError::BadBridge(value.clone()))
                }
                BRIDGE => o.bridge = value.clone(),
                MAC => {
                    o.mac = MacChoice::parse(value).map_err(|reason| OptionError::BadMac {
                        value: value.clone(),
                        reason,
                    })?
                }
                "port-driver" if value == "builtin" || value == "none" => {}
                "port-driver" => return Err(OptionError::PortDriver(value.clone())),
                // The core sends this driver's own flags, port-driver and the
                // --net-opts: anything else is a typo or meant for another driver.
                _ => return Err(OptionError::Unknown { key: key.clone() }),
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> ConfigureRequest {
        ConfigureRequest {
            options: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ConfigureRequest::default()
        }
    }

    #[test]
    fn defaults_follow_rootlesskit() {
        let o = Options::parse(&request(&[(BRIDGE, "lxcbr0")])).unwrap();
        assert_eq!(o.binary, None);
        assert_eq!(o.bridge, "lxcbr0");
        assert_eq!(o.ifname, "eth0");
        assert_eq!(o.mtu, None);
        assert_eq!(o.mac, MacChoice::Auto);
    }

    #[test]
    fn every_option_is_read() {
        let mut r = request(&[
            (BINARY, "/opt/lxc/lxc-user-nic"),
            (BRIDGE, "rktbr0"),
            (MAC, "random"),
            ("port-driver", "builtin"),
        ]);
        r.mtu = Some(9000);
        r.ifname = Some("net0".into());
        r.detach_netns = true;
        let o = Options::parse(&r).unwrap();
        assert_eq!(o.binary, Some(PathBuf::from("/opt/lxc/lxc-user-nic")));
        assert_eq!(o.bridge, "rktbr0");
        assert_eq!(o.mac, MacChoice::Random);
        assert_eq!(
            (o.mtu, o.ifname.as_str(), o.detach_netns),
            (Some(9000), "net0", true)
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        let e = |pairs: &[(&str, &str)]| Options::parse(&request(pairs)).unwrap_err();
        assert_eq!(e(&[(BINARY, "")]), OptionError::EmptyBinary);
        assert!(matches!(e(&[(BRIDGE, "a/b")]), OptionError::BadBridge(_)));
        assert!(matches!(
            e(&[(BRIDGE, "much-too-long-bridge")]),
            OptionError::BadBridge(_)
        ));
        assert!(matches!(
            e(&[(MAC, "01:00:00:00:00:01")]),
            OptionError::BadMac { .. }
        ));
        assert!(e(&[("lxc-user-nic-macc", "auto")])
            .to_string()
            .contains("--lxc-user-nic-mac"));
        let unknown = e(&[("pasta-binary", "pasta")]);
        assert_eq!(
            unknown,
            OptionError::Unknown {
                key: "pasta-binary".into()
            }
        );
        assert!(unknown.to_string().contains("lxc-user-nic driver"));
        assert!(matches!(
            e(&[("port-driver", "slirp4netns")]),
            OptionError::PortDriver(_)
        ));
        let mut r = request(&[]);
        r.cidr = Some("10.0.0.0/24".parse().unwrap());
        assert_eq!(Options::parse(&r).unwrap_err(), OptionError::Cidr);
        let mut r = request(&[]);
        r.mtu = Some(70000);
        assert_eq!(Options::parse(&r).unwrap_err(), OptionError::BadMtu(70000));
        let mut r = request(&[]);
        r.ipv6 = true;
        assert_eq!(Options::parse(&r).unwrap_err(), OptionError::Ipv6);
    }
}
