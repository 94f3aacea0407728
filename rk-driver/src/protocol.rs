//! The messages of driver protocol v1. Every message is a JSON object with a
//! `"type"` member; unknown members are ignored, unknown types are an error.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest datagram either side sends or accepts, in bytes.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// The most file descriptors one message may carry.
pub const MAX_FDS: usize = 8;
/// Environment variable naming the descriptor of the protocol socket.
pub const DRIVER_FD_ENV: &str = "RK_DRIVER_FD";
/// Environment variable set to `1` when the core runs with `--debug`.
pub const DRIVER_DEBUG_ENV: &str = "RK_DRIVER_DEBUG";

/// Messages from the core to a driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoreMessage {
    /// First message on the socket.
    Hello {
        protocol_version: u32,
        core_version: String,
    },
    /// Bring the network up. Carries two descriptors, in order: the child's
    /// user namespace and its network namespace.
    Configure(ConfigureRequest),
    /// Tear down and exit (EOF on the socket means the same).
    Shutdown,
    /// After `configured`, only to a driver whose hello announced the
    /// capability `port-driver:NAME`: serve the REST API's ports through
    /// port driver NAME. Answered by [`DriverMessage::PortDriver`].
    StartPorts { port_driver: String },
    /// Forward a port. Answered by `port_added` or `port_error`.
    AddPort(PortRule),
    /// Stop forwarding port `id`. Answered by `port_removed` or `port_error`.
    RemovePort { id: i64 },
    /// Answered by `port_list` or `port_error`.
    ListPorts,
}

/// Messages from a driver to the core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverMessage {
    /// Answer to [`CoreMessage::Hello`].
    Hello {
        protocol_version: u32,
        #[serde(flatten)]
        info: DriverInfo,
    },
    /// Answer to [`CoreMessage::Configure`].
    Configured(NetworkConfig),
    /// A request failed, or (after `configured`) the driver's network died.
    Error {
        message: String,
    },
    /// Answer to `start_ports`: what the port driver forwards.
    PortDriver(PortDriverOffer),
    PortAdded {
        id: i64,
    },
    PortRemoved {
        id: i64,
    },
    PortList {
        ports: Vec<PortRule>,
    },
    /// A port request failed; the network is fine.
    PortError {
        #[serde(default)]
        id: Option<i64>,
        message: String,
    },
}

/// A forwarded port (RootlessKit's port spec with the API's id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRule {
    /// The id the REST API shows; chosen by the core.
    pub id: i64,
    /// `tcp`, `tcp4`, `tcp6`, `udp`, `udp4` or `udp6`.
    pub proto: String,
    /// Host address to listen on; empty: every address.
    #[serde(default)]
    pub parent_ip: String,
    pub parent_port: u16,
    /// Address inside to forward to; empty: the driver's default (the
    /// child's address).
    #[serde(default)]
    pub child_ip: String,
    pub child_port: u16,
}

/// What a port driver offered by a network driver supports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDriverOffer {
    /// Protocols it forwards, from `tcp tcp4 tcp6 udp udp4 udp6`.
    pub protos: Vec<String>,
    /// It cannot forward to a loopback child IP (the API refuses those).
    #[serde(default)]
    pub disallow_loopback_child_ip: bool,
}

/// What a driver says about itself in its hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// The `--net` name it serves, e.g. `slirp4netns`.
    pub driver: String,
    /// The driver's own version.
    pub version: String,
    /// Free-form capability names, e.g. `ipv6`, `cidr`, `detach-netns`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The `--FLAG` names (without dashes) of driver options it understands.
    #[serde(default)]
    pub options: Vec<String>,
    /// The source revision it was built from (optional; Rust drivers fill
    /// it in through [`serve`](crate::serve)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl DriverInfo {
    pub fn new(driver: &str, version: &str) -> Self {
        DriverInfo {
            driver: driver.to_owned(),
            version: version.to_owned(),
            capabilities: Vec::new(),
            options: Vec::new(),
            commit: None,
        }
    }
}

/// Parameters of [`CoreMessage::Configure`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigureRequest {
    /// Pid of rootlesskit's child (the process inside the namespaces).
    pub child_pid: i32,
    /// The state directory; the driver may create files in it.
    pub state_dir: String,
    /// `None`: the driver's default MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `None`: the driver's default network.
    #[serde(default)]
    pub cidr: Option<String>,
    /// Interface name to create inside; `None`: the driver's default.
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub disable_host_loopback: bool,
    #[serde(default)]
    pub ipv6: bool,
    /// The network namespace is detached (`--detach-netns`).
    #[serde(default)]
    pub detach_netns: bool,
    /// Driver-specific options by flag name without dashes, e.g.
    /// `"slirp4netns-sandbox": "auto"`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Parameters of [`DriverMessage::Configured`]: how the child's interface
/// must look.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Interface name inside the namespace.
    pub interface: String,
    /// IPv4 address with prefix length, e.g. `10.0.2.100/24`.
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub gateway4: Option<String>,
    /// IPv6 address with prefix length, e.g. `fd00::100/64`.
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    /// Nameservers for the child's `/etc/resolv.conf`, in order.
    #[serde(default)]
    pub dns: Vec<String>,
    pub mtu: u32,
    /// The driver set up addresses and routes itself; the core only brings
    /// `lo` and the interface up and sets its MTU.
    #[serde(default)]
    pub configured_by_driver: bool,
    /// The address came from DHCP and may change.
    #[serde(default)]
    pub dynamic: bool,
    /// Extra facts shown by `rootlessctl info`.
    #[serde(default)]
    pub info: BTreeMap<String, String>,
}

/// Errors of decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_SIZE} bytes")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes one message, enforcing the size limit.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Encodes one message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain types cannot fail.
    serde_json::to_vec(msg).expect("protocol messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_with_flattened_info() {
        let msg = DriverMessage::Hello {
            protocol_version: 1,
            info: DriverInfo::new("slirp4netns", "0.1.0"),
        };
        let bytes = encode(&msg);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#""type":"hello""#), "{text}");
        assert!(text.contains(r#""driver":"slirp4netns""#), "{text}");
        assert_eq!(decode::<DriverMessage>(&bytes).unwrap(), msg);
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_rejected() {
        let m: CoreMessage = decode(br#"{"type":"shutdown","future_field":[1,2]}"#).unwrap();
        assert_eq!(m, CoreMessage::Shutdown);
        assert!(decode::<CoreMessage>(br#"{"type":"reboot"}"#).is_err());
        assert!(decode::<CoreMessage>(br#"{"no_type":1}"#).is_err());
    }

    #[test]
    fn configure_accepts_minimal_object() {
        let m: CoreMessage =
            decode(br#"{"type":"configure","child_pid":5,"state_dir":"/s"}"#).unwrap();
        match m {
            CoreMessage::Configure(req) => {
                assert_eq!(req.child_pid, 5);
                assert_eq!(req.mtu, None);
                assert!(req.options.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn port_messages_round_trip() {
        let add = CoreMessage::AddPort(PortRule {
            id: 2,
            proto: "udp".into(),
            parent_ip: "127.0.0.1".into(),
            parent_port: 9090,
            child_ip: String::new(),
            child_port: 90,
        });
        let text = String::from_utf8(encode(&add)).unwrap();
        assert_eq!(
            text,
            r#"{"type":"add_port","id":2,"proto":"udp","parent_ip":"127.0.0.1","parent_port":9090,"child_ip":"","child_port":90}"#
        );
        assert_eq!(decode::<CoreMessage>(text.as_bytes()).unwrap(), add);
        let err: DriverMessage = decode(br#"{"type":"port_error","message":"no"}"#).unwrap();
        assert_eq!(
            err,
            DriverMessage::PortError {
                id: None,
                message: "no".into()
            }
        );
        let offer: DriverMessage =
            decode(br#"{"type":"port_driver","protos":["tcp","udp"]}"#).unwrap();
        assert!(matches!(offer, DriverMessage::PortDriver(o) if !o.disallow_loopback_child_ip));
    }

    #[test]
    fn oversized_message_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            decode::<CoreMessage>(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
