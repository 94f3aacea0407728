//! The driver-specific options the core forwards (flag names without dashes).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub const BINARY: &str = "slirp4netns-binary";
pub const SANDBOX: &str = "slirp4netns-sandbox";
pub const SECCOMP: &str = "slirp4netns-seccomp";
pub const API_SOCKET: &str = "slirp4netns-api-socket";
/// Every option this driver reads, as announced in its hello.
pub const ALL: [&str; 4] = [BINARY, SANDBOX, SECCOMP, API_SOCKET];
/// The `--port-driver` value, which the core sends to every driver.
pub const PORT_DRIVER_KEY: &str = "port-driver";

pub const DEFAULT_BINARY: &str = "slirp4netns";
/// RootlessKit's name for slirp4netns's API socket, in the state directory.
pub const DEFAULT_API_SOCKET: &str = ".s4nn.sock";

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error(
        "unknown option --net-opt={key}=...: the slirp4netns driver understands only --{} (and port-driver)",
        ALL.join(", --")
    )]
    Unknown { key: String },
    #[error("--{key}={value:?} is not valid: use auto, true or false")]
    Mode { key: &'static str, value: String },
    #[error(
        "--{BINARY} is empty: pass a command name or path, e.g. --{BINARY}=/usr/bin/slirp4netns"
    )]
    EmptyBinary,
    #[error("--{API_SOCKET}={0:?} is not an absolute path")]
    RelativeSocket(String),
    #[error(
        "--{API_SOCKET}={path:?} is {len} bytes long, but a unix socket path must be \
         at most {MAX_SOCKET_PATH}: use a shorter --state-dir"
    )]
    LongSocket { path: String, len: usize },
}

/// The `auto|true|false` switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On when the slirp4netns binary and the kernel support it.
    Auto,
    On,
    Off,
}

impl Mode {
    /// `""` means `false`, as in RootlessKit.
    fn parse(key: &'static str, value: &str) -> Result<Self, OptionError> {
        match value {
            "auto" => Ok(Mode::Auto),
            "true" => Ok(Mode::On),
            "false" | "" => Ok(Mode::Off),
            _ => Err(OptionError::Mode {
                key,
                value: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::On => "true",
            Mode::Off => "false",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// A command name looked up in `$PATH`, or a path.
    pub binary: String,
    pub sandbox: Mode,
    pub seccomp: Mode,
    /// Where slirp4netns serves its API (for the slirp4netns port driver).
    pub api_socket: Option<PathBuf>,
}

impl DriverOptions {
    /// Reads the options. The core sends this driver's own flags,
    /// `port-driver` and the `--net-opt`s: any other key is a typo or meant
    /// for another driver, and an error that names it.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, OptionError> {
        let mut parsed = DriverOptions {
            binary: DEFAULT_BINARY.to_owned(),
            sandbox: Mode::Auto,
            seccomp: Mode::Auto,
            api_socket: None,
        };
        for (key, value) in options {
            match key.as_str() {
                BINARY if value.is_empty() => return Err(OptionError::EmptyBinary),
                BINARY => parsed.binary = value.clone(),
                SANDBOX => parsed.sandbox = Mode::parse(SANDBOX, value)?,
                SECCOMP => parsed.seccomp = Mode::parse(SECCOMP, value)?,
                API_SOCKET if value.is_empty() => parsed.api_socket = None,
                API_SOCKET => parsed.api_socket = Some(api_socket(value)?),
                // Read by the driver itself (start_ports, the default API socket).
                PORT_DRIVER_KEY => {}
                _ => return Err(OptionError::Unknown { key: key.clone() }),
            }
        }
        Ok(parsed)
    }
}

impl DriverOptions {
    /// For the slirp4netns port driver: without `slirp4netns-api-socket`,
    /// slirp4netns serves its API on `STATE_DIR/.s4nn.sock`, as in RootlessKit.
    pub fn default_api_socket(&mut self, state_dir: &str) -> Result<(), OptionError> {
        if self.api_socket.is_none() {
            let path = format!("{}/{DEFAULT_API_SOCKET}", state_dir.trim_end_matches('/'));
            self.api_socket = Some(api_socket(&path)?);
        }
        Ok(())
    }
}

fn api_socket(value: &str) -> Result<PathBuf, OptionError> {
    if !value.starts_with('/') {
        return Err(OptionError::RelativeSocket(value.to_owned()));
    }
    if value.len() > MAX_SOCKET_PATH {
        return Err(OptionError::LongSocket {
            path: value.to_owned(),
            len: value.len(),
        });
    }
    Ok(PathBuf::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<DriverOptions, OptionError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DriverOptions::parse(&map)
    }

    #[test]
    fn no_options_give_the_defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.binary, "slirp4netns");
        assert_eq!(o.sandbox, Mode::Auto);
        assert_eq!(o.seccomp, Mode::Auto);
        assert_eq!(o.api_socket, None);
    }

    #[test]
    fn every_option_is_read() {
        let o = parse(&[
            ("slirp4netns-binary", "/opt/bin/slirp4netns"),
            ("slirp4netns-sandbox", "true"),
            ("slirp4netns-seccomp", "false"),
            ("slirp4netns-api-socket", "/run/user/1000/rk/.s4nn.sock"),
        ])
        .unwrap();
        assert_eq!(o.binary, "/opt/bin/slirp4netns");
        assert_eq!(o.sandbox, Mode::On);
        assert_eq!(o.seccomp, Mode::Off);
        assert_eq!(
            o.api_socket,
            Some(PathBuf::from("/run/user/1000/rk/.s4nn.sock"))
        );
    }

    #[test]
    fn empty_mode_means_false_like_rootlesskit() {
        assert_eq!(
            parse(&[("slirp4netns-seccomp", "")]).unwrap().seccomp,
            Mode::Off
        );
    }

    #[test]
    fn bad_mode_names_the_valid_values() {
        let e = parse(&[("slirp4netns-sandbox", "bogus")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--slirp4netns-sandbox=\"bogus\" is not valid: use auto, true or false"
        );
        assert!(parse(&[("slirp4netns-seccomp", "yes")]).is_err());
        assert!(parse(&[("slirp4netns-seccomp", "True")]).is_err());
    }

    #[test]
    fn misspelt_driver_option_is_an_error_listing_the_known_ones() {
        let e = parse(&[("slirp4netns-sandbx", "true")]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("--net-opt=slirp4netns-sandbx=..."), "{text}");
        assert!(text.contains("slirp4netns driver"), "{text}");
        assert!(text.contains("--slirp4netns-sandbox"), "{text}");
        assert!(text.contains("--slirp4netns-binary"), "{text}");
    }

    #[test]
    fn options_of_other_drivers_are_refused_but_port_driver_is_read() {
        let e = parse(&[("pasta-binary", "pasta")]).unwrap_err();
        assert_eq!(
            e,
            OptionError::Unknown {
                key: "pasta-binary".into()
            }
        );
        assert!(e.to_string().contains("pasta-binary"), "{e}");
        assert!(parse(&[("port-driver", "builtin")]).is_ok());
        assert!(parse(&[("port-driver", "slirp4netns")]).is_ok());
    }

    #[test]
    fn the_port_driver_socket_defaults_to_rootlesskits_name() {
        let mut o = parse(&[]).unwrap();
        o.default_api_socket("/run/user/1000/rk/").unwrap();
        assert_eq!(
            o.api_socket,
            Some(PathBuf::from("/run/user/1000/rk/.s4nn.sock"))
        );
        let mut o = parse(&[("slirp4netns-api-socket", "/tmp/mine.sock")]).unwrap();
        o.default_api_socket("/run/user/1000/rk").unwrap();
        assert_eq!(o.api_socket, Some(PathBuf::from("/tmp/mine.sock")));
        let mut o = parse(&[]).unwrap();
        let long = format!("/{}", "x".repeat(100));
        assert!(matches!(
            o.default_api_socket(&long),
            Err(OptionError::LongSocket { .. })
        ));
    }

    #[test]
    fn bad_binary_and_socket_values_are_rejected() {
        assert_eq!(
            parse(&[("slirp4netns-binary", "")]),
            Err(OptionError::EmptyBinary)
        );
        assert!(matches!(
            parse(&[("slirp4netns-api-socket", "s4nn.sock")]),
            Err(OptionError::RelativeSocket(_))
        ));
        let long = format!("/{}", "x".repeat(107));
        assert!(matches!(
            parse(&[("slirp4netns-api-socket", &long)]),
            Err(OptionError::LongSocket { len: 108, .. })
        ));
        assert_eq!(
            parse(&[("slirp4netns-api-socket", "")]).unwrap().api_socket,
            None
        );
    }
}
