//! Messages between rootlesskit's parent (host side) and child (inside the
//! namespaces), over a SOCK_SEQPACKET pair: the set-up reads like a sequence
//! diagram.
//!
//! ```text
//! parent                               child
//!   clone(NEWUSER|NEWNS|NEWNET|…) ──▶  (waits)
//!   newuidmap/newgidmap
//!   Start{settings}               ──▶  propagation, detached netns
//!                                 ◀──  Namespaces + fds [userns, netns]
//!   driver: configure
//!   Network{config}               ──▶  lo, interface, copy-up, resolv.conf
//!                                 ◀──  Ready
//!   ports, -p, write child_pid
//!   Go                            ──▶  run CMD, forward signals, reap
//! ```

use crate::settings::Settings;
use rk_driver::NetworkConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Environment variable that marks the re-executed child and names its socket.
pub const CHILD_FD_ENV: &str = "_ROOTLESSKIT_RS_CHILD_FD";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToChild {
    /// The id maps are written; set up.
    Start {
        settings: Box<Settings>,
        state_dir: PathBuf,
        parent_euid: u32,
        parent_egid: u32,
    },
    /// The network is up (or `None` for host/none networks).
    Network { config: Option<NetworkConfig> },
    /// Ports are published and `child_pid` is written: CMD may start (a
    /// CMD reading `child_pid`, or connecting to a published port, finds
    /// it there).
    Go,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToParent {
    /// Carries the user namespace and, if there is one, the new network
    /// namespace, as descriptors.
    Namespaces,
    /// Set-up is complete; CMD starts now.
    Ready,
    /// Set-up failed.
    Failed { message: String },
}
