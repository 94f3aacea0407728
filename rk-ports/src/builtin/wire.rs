//! Messages between the parent and a relay worker, over a SOCK_SEQPACKET
//! pair (rk-driver's `Channel`: one JSON object per datagram, descriptors
//! as SCM_RIGHTS). docs/driver-protocol.md §18 describes the session.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The relay's executable, found as network drivers are (`rk-NAME` is a
/// network driver, `rootlesskit-port-NAME` a port relay).
pub const RELAY_BINARY: &str = "rootlesskit-port-builtin";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The first message, with two descriptors: the child's user namespace,
    /// then its network namespace. `index` keeps this worker's routing
    /// rules apart from other workers'; `preserve_source`: ports will keep
    /// client addresses (the worker prepares its routing socket before it
    /// confines itself).
    Start { index: u32, preserve_source: bool },
    /// Relay the attached host socket (a listening TCP socket, or a bound
    /// UDP socket) to `target` inside the namespace.
    Add {
        id: i64,
        udp: bool,
        target: SocketAddr,
        preserve_source: bool,
    },
    /// Close the port's socket and every connection that came through it.
    Remove { id: i64 },
    /// `true`: every worker is full and no other will be started: accept
    /// and reset new connections instead of leaving them waiting.
    Limit { refuse_when_full: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// Joined the namespaces; serves up to `capacity` connections.
    Ready {
        capacity: usize,
    },
    Added {
        id: i64,
    },
    Removed {
        id: i64,
    },
    Failed {
        id: i64,
        message: String,
    },
    /// Sent when the worker becomes busy (most of its capacity used) or
    /// full, or stops being so.
    Load {
        active: usize,
        busy: bool,
        full: bool,
    },
}
