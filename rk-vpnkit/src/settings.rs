//! What `configure` asks for, checked and with this driver's defaults.

use rk_driver::ConfigureRequest;
use std::path::{Path, PathBuf};

pub const BINARY_OPTION: &str = "vpnkit-binary";
/// Passed by the core for every driver when a port driver is chosen.
const PORT_DRIVER_OPTION: &str = "port-driver";
pub const DEFAULT_BINARY: &str = "vpnkit";
/// vpnkit's default, and the only MTU it is known to work well with.
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_IFNAME: &str = "tap0";
/// The socket vpnkit listens on, inside the state directory (RootlessKit's name).
const SOCKET_NAME: &str = "vpnkit-ethernet.sock";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The frame length prefix is a u16 and counts the 14-byte ethernet header.
const MAX_MTU: u32 = u16::MAX as u32 - 14;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("--cidr is not supported by --net=vpnkit: vpnkit chooses the network and hands out the address by DHCP")]
    Cidr,
    #[error("--ipv6 is not supported by --net=vpnkit: vpnkit's network is IPv4 only")]
    Ipv6,
    #[error("--mtu={0} is too large for the vpnkit protocol (at most {MAX_MTU}; vpnkit itself works best with 1500)")]
    Mtu(u32),
    #[error("--{BINARY_OPTION} is empty: pass a command name or a path, e.g. --{BINARY_OPTION}=/usr/local/bin/vpnkit")]
    EmptyBinary,
    #[error("--port-driver={0} does not work with --net=vpnkit: use --port-driver=builtin")]
    PortDriver(String),
    #[error("unknown option {0:?} for --net=vpnkit: it understands only --{BINARY_OPTION}")]
    Unknown(String),
    #[error(
        "the vpnkit socket path {path} is {len} bytes long, but a unix socket path must be \
         at most {MAX_SOCKET_PATH}: use a shorter --state-dir"
    )]
    LongSocket { path: String, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// A command name looked up in `$PATH`, or a path.
    pub binary: String,
    pub mtu: u32,
    pub ifname: String,
    pub socket: PathBuf,
    pub disable_host_loopback: bool,
}

impl Settings {
    pub fn from_request(req: &ConfigureRequest) -> Result<Self, SettingsError> {
        if req.cidr.is_some() {
            return Err(SettingsError::Cidr);
        }
        if req.ipv6 {
            return Err(SettingsError::Ipv6);
        }
        let mut binary = DEFAULT_BINARY.to_owned();
        for (key, value) in &req.options {
            match key.as_str() {
                BINARY_OPTION => binary = value.clone(),
                PORT_DRIVER_OPTION if value == "builtin" || value == "none" => {}
                PORT_DRIVER_OPTION => return Err(SettingsError::PortDriver(value.clone())),
                _ => return Err(SettingsError::Unknown(key.clone())),
            }
        }
        if binary.is_empty() {
            return Err(SettingsError::EmptyBinary);
        }
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if mtu > MAX_MTU {
            return Err(SettingsError::Mtu(mtu));
        }
        let socket = Path::new(&req.state_dir).join(SOCKET_NAME);
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(SettingsError::LongSocket {
                path: socket.display().to_string(),
                len,
            });
        }
        Ok(Settings {
            binary,
            mtu,
            ifname: req.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.into()),
            socket,
            disable_host_loopback: req.disable_host_loopback,
        })
    }

    /// vpnkit's arguments, as RootlessKit passes them.
    pub fn vpnkit_args(&self) -> Vec<String> {
        let mut args = vec![
            "--ethernet".to_owned(),
            self.socket.display().to_string(),
            "--mtu".to_owned(),
            self.mtu.to_string(),
        ];
        if self.disable_host_loopback {
            // vpnkit maps its "host" address to the host's loopback unless
            // that address is 0.0.0.0.
            args.extend(["--host-ip".to_owned(), "0.0.0.0".to_owned()]);
        }
        args
    }

    /// RootlessKit's warning: vpnkit misbehaves with other MTUs.
    pub fn mtu_warning(&self) -> Option<String> {
        (self.mtu != DEFAULT_MTU).then(|| {
            format!(
                "vpnkit is known to have issues with an MTU other than {DEFAULT_MTU} (asked for {}); \
                 if traffic stalls, drop --mtu",
                self.mtu
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ConfigureRequest {
        let mut r = ConfigureRequest {
            child_pid: 1,
            state_dir: "/run/user/1000/rk".into(),
            ..Default::default()
        };
        r.options.insert(BINARY_OPTION.into(), "vpnkit".into());
        r
    }

    #[test]
    fn defaults_follow_rootlesskit() {
        let s = Settings::from_request(&request()).unwrap();
        assert_eq!(s.mtu, 1500);
        assert_eq!(s.ifname, "tap0");
        assert_eq!(s.binary, "vpnkit");
        assert!(s.mtu_warning().is_none());
        assert_eq!(
            s.vpnkit_args(),
            [
                "--ethernet",
                "/run/user/1000/rk/vpnkit-ethernet.sock",
                "--mtu",
                "1500"
            ]
        );
    }

    #[test]
    fn disable_host_loopback_becomes_host_ip_zero() {
        let mut r = request();
        r.disable_host_loopback = true;
        r.mtu = Some(9000);
        let s = Settings::from_request(&r).unwrap();
        assert_eq!(
            s.vpnkit_args()[2..],
            ["--mtu", "9000", "--host-ip", "0.0.0.0"]
        );
        assert!(s.mtu_warning().unwrap().contains("9000"));
    }

    #[test]
    fn unsupported_requests_name_the_flag() {
        let mut r = request();
        r.cidr = Some("10.0.3.0/24".parse().unwrap());
        assert_eq!(Settings::from_request(&r), Err(SettingsError::Cidr));
        let mut r = request();
        r.ipv6 = true;
        assert_eq!(Settings::from_request(&r), Err(SettingsError::Ipv6));
        let mut r = request();
        r.options.insert(BINARY_OPTION.into(), String::new());
        assert_eq!(Settings::from_request(&r), Err(SettingsError::EmptyBinary));
        let mut r = request();
        r.options.insert("color".into(), "blue".into());
        assert!(Settings::from_request(&r)
            .unwrap_err()
            .to_string()
            .contains("\"color\""));
        let mut r = request();
        r.options.insert("port-driver".into(), "slirp4netns".into());
        assert!(matches!(
            Settings::from_request(&r),
            Err(SettingsError::PortDriver(_))
        ));
        let mut r = request();
        r.options.insert("port-driver".into(), "builtin".into());
        assert!(Settings::from_request(&r).is_ok());
        let mut r = request();
        r.mtu = Some(65522);
        assert_eq!(Settings::from_request(&r), Err(SettingsError::Mtu(65522)));
    }

    #[test]
    fn long_state_dir_is_refused_before_vpnkit_starts() {
        let mut r = request();
        r.state_dir = format!("/tmp/{}", "d".repeat(100));
        assert!(Settings::from_request(&r)
            .unwrap_err()
            .to_string()
            .contains("--state-dir"));
    }
}
