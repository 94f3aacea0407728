//! The driver-specific options the core forwards (flag names without dashes).

use std::collections::BTreeMap;

pub const BINARY: &str = "pasta-binary";
pub const PORT_DRIVER: &str = "port-driver";
/// Every option this driver reads, as announced in its hello.
pub const ALL: [&str; 2] = [BINARY, PORT_DRIVER];

pub const DEFAULT_BINARY: &str = "pasta";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown option --net-opt={key}=...: the pasta driver understands only --{}", ALL.join(", --"))]
    Unknown { key: String },
    #[error("--{BINARY} is empty: pass a command name or path, e.g. --{BINARY}=/usr/bin/pasta")]
    EmptyBinary,
    #[error(
        "--port-driver={0} does not work with --net=pasta: use --port-driver=implicit \
         (pasta forwards every port the command listens on) or builtin"
    )]
    PortDriver(String),
}

/// How ports reach the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// No forwarding by the driver: `--port-driver=none`, or `builtin`,
    /// which the core does on its own.
    None,
    /// `--port-driver=implicit`: every port a program inside listens on is
    /// reachable on the host at the same number, without any API call.
    Implicit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    /// A command name looked up in `$PATH`, or a path.
    pub binary: String,
    pub ports: Ports,
}

impl DriverOptions {
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, OptionError> {
        let mut parsed = DriverOptions {
            binary: DEFAULT_BINARY.to_owned(),
            ports: Ports::None,
        };
        for (key, value) in options {
            match key.as_str() {
                BINARY if value.is_empty() => return Err(OptionError::EmptyBinary),
                BINARY => parsed.binary = value.clone(),
                PORT_DRIVER => {
                    parsed.ports = match value.as_str() {
                        "implicit" => Ports::Implicit,
                        "none" | "builtin" => Ports::None,
                        other => return Err(OptionError::PortDriver(other.to_owned())),
                    }
                }
                _ => return Err(OptionError::Unknown { key: key.clone() }),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        let o = DriverOptions::parse(&opts(&[])).unwrap();
        assert_eq!(o.binary, "pasta");
        assert_eq!(o.ports, Ports::None);
        let o = DriverOptions::parse(&opts(&[
            ("pasta-binary", "/opt/pasta"),
            ("port-driver", "implicit"),
        ]))
        .unwrap();
        assert_eq!(o.binary, "/opt/pasta");
        assert_eq!(o.ports, Ports::Implicit);
        let o = DriverOptions::parse(&opts(&[("port-driver", "builtin")])).unwrap();
        assert_eq!(o.ports, Ports::None);
    }

    #[test]
    fn mistakes_are_named() {
        let e = DriverOptions::parse(&opts(&[("pasta-binray", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option --net-opt=pasta-binray=...: the pasta driver understands only \
             --pasta-binary, --port-driver"
        );
        let e = DriverOptions::parse(&opts(&[("port-driver", "slirp4netns")])).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("--port-driver=slirp4netns does not work with --net=pasta"));
        assert_eq!(
            DriverOptions::parse(&opts(&[("pasta-binary", "")])),
            Err(OptionError::EmptyBinary)
        );
    }
}
