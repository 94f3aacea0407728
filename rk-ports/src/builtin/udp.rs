//! UDP relaying: one host socket per port, one socket inside per client
//! address (a "flow"), so that the answers of the server inside go back to
//! the client that asked.

use socket2::Socket;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A flow idle this long is closed (RootlessKit's UDP proxy: 90 s).
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(90);
/// Flows one port keeps at once; the longest idle makes room for a new one.
pub const MAX_FLOWS_PER_PORT: usize = 1024;

pub struct UdpPort {
    pub port: i64,
    pub sock: Socket,
    pub target: SocketAddr,
    pub preserve: bool,
    /// Client address → slot of its flow.
    pub flows: HashMap<SocketAddr, usize>,
}

impl UdpPort {
    pub fn new(port: i64, sock: Socket, target: SocketAddr, preserve: bool) -> UdpPort {
        UdpPort {
            port,
            sock,
            target,
            preserve,
            flows: HashMap::new(),
        }
    }
}

pub struct Flow {
    pub port: i64,
    /// Slot of the [`UdpPort`].
    pub owner: usize,
    pub client: SocketAddr,
    pub target: SocketAddr,
    pub sock: Socket,
    pub last: Instant,
    /// The client address routed back to this flow's socket, if any.
    pub routed: Option<std::net::IpAddr>,
}
