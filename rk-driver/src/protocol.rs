//! The messages of driver protocol v1. Every message is a JSON object with a
//! `"type"` member; unknown members are ignored, unknown types are an error.

pub use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
/// How long the core waits for a driver to exit after `shutdown` (or
/// closing the socket) before it kills the driver's process group.
pub const SHUTDOWN_GRACE_MS: u16 = 500;

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
    /// Host address to listen on; `None` (`""` on the wire): every address.
    #[serde(default, with = "empty_is_none")]
    pub parent_ip: Option<IpAddr>,
    pub parent_port: u16,
    /// Address inside to forward to; `None` (`""` on the wire): the
    /// driver's default (the child's address).
    #[serde(default, with = "empty_is_none")]
    pub child_ip: Option<IpAddr>,
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

    /// With these capabilities (added to those it has).
    pub fn with_capabilities(mut self, capabilities: &[&str]) -> Self {
        self.capabilities
            .extend(capabilities.iter().map(|c| (*c).to_owned()));
        self
    }

    /// With these option names (added to those it has).
    pub fn with_options(mut self, options: &[&str]) -> Self {
        self.options.extend(options.iter().map(|o| (*o).to_owned()));
        self
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
    /// `None`: the driver's default network. The core checked that it is
    /// a network address (no host bits); limits of its own (such as a
    /// largest prefix) are the driver's to check.
    #[serde(default, deserialize_with = "field::cidr")]
    pub cidr: Option<Ipv4Net>,
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
    #[serde(default, deserialize_with = "field::ipv4")]
    pub ipv4: Option<Ipv4Net>,
    #[serde(default, deserialize_with = "field::gateway4")]
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 address with prefix length, e.g. `fd00::100/64`.
    #[serde(default, deserialize_with = "field::ipv6")]
    pub ipv6: Option<Ipv6Net>,
    #[serde(default, deserialize_with = "field::gateway6")]
    pub gateway6: Option<Ipv6Addr>,
    /// Nameservers for the child's `/etc/resolv.conf`, in order.
    #[serde(default, deserialize_with = "field::nameservers")]
    pub dns: Vec<IpAddr>,
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

/// The MTU range the core accepts in a `configured` answer.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65521;
/// At most this many nameservers in an answer (resolv.conf uses three).
pub const MAX_DNS: usize = 8;
/// At most this many `info` entries in an answer, each key and value at
/// most [`MAX_INFO_LEN`] bytes.
pub const MAX_INFO: usize = 32;
pub const MAX_INFO_LEN: usize = 256;

/// A Linux interface name: 1 to 15 bytes, no `/`, `:` or white space, not
/// `.` or `..`.
pub fn is_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

impl NetworkConfig {
    /// What the core refuses in an answer beyond its types
    /// (docs/driver-protocol.md §11): `Err` is a sentence that starts
    /// with "answered".
    pub fn check(&self) -> Result<(), String> {
        if !is_ifname(&self.interface) {
            return Err(format!(
                "answered the interface name {:?}, which Linux does not allow (1 to 15 bytes, no '/', ':' or white space)",
                self.interface
            ));
        }
        if !MTU_RANGE.contains(&self.mtu) {
            return Err(format!(
                "answered MTU {}, outside {}..={}",
                self.mtu,
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ));
        }
        if self.dns.len() > MAX_DNS {
            return Err(format!(
                "answered {} nameservers; at most {MAX_DNS} are accepted",
                self.dns.len()
            ));
        }
        if self.info.len() > MAX_INFO {
            return Err(format!(
                "answered {} info entries; at most {MAX_INFO} are accepted",
                self.info.len()
            ));
        }
        match self.info.iter().find(|(k, v)| {
            k.len() > MAX_INFO_LEN
                || v.len() > MAX_INFO_LEN
                || k.chars().chain(v.chars()).any(char::is_control)
        }) {
            Some((k, _)) => Err(format!(
                "answered an info entry {k:?} that is too long or holds control characters"
            )),
            None => Ok(()),
        }
    }
}

/// Reading the typed fields from their v1 strings, with errors that name
/// the field and quote the value (`invalid nameserver "10.0.2.3\n..."`):
/// the core shows them to the user as the driver's mistake.
mod field {
    use super::*;
    use serde::{de::Error, Deserializer};
    use std::str::FromStr;

    fn parse<T: FromStr, E: Error>(what: &str, text: &str) -> Result<T, E> {
        text.parse()
            .map_err(|_| E::custom(format!("invalid {what} {text:?}")))
    }

    fn optional<'de, D: Deserializer<'de>, T: FromStr>(
        d: D,
        what: &str,
    ) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse(what, &text))
            .transpose()
    }

    pub fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Net>, D::Error> {
        optional(d, "cidr (an IPv4 network like 10.0.2.0/24)")
    }

    pub fn ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Net>, D::Error> {
        optional(
            d,
            "IPv4 address (an address with its prefix length, like 10.0.2.100/24)",
        )
    }

    pub fn gateway4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
        optional(d, "IPv4 gateway")
    }

    pub fn ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv6Net>, D::Error> {
        optional(
            d,
            "IPv6 address (an address with its prefix length, like fd00::100/64)",
        )
    }

    pub fn gateway6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv6Addr>, D::Error> {
        optional(d, "IPv6 gateway")
    }

    pub fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| parse("nameserver", text))
            .collect()
    }
}

/// `PortRule`'s optional addresses: `""` on the wire for `None` (v1's
/// encoding), an address string otherwise; `null` is read as `None` too.
mod empty_is_none {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("invalid port address {text:?}"))),
        }
    }
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
mod tests;
