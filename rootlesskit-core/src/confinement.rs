//! The parent's own confinement once set-up is over (docs/security.md):
//! from then on it serves the API, forwards signals, reaps, and cleans the
//! state directory at exit. Nothing else, except with the builtin port
//! driver: then it also opens host sockets for published ports and starts
//! relay workers (`rootlesskit-port-builtin`, to replace one that died or
//! add one when all are busy). A worker runs under this filter and Landlock
//! domain (they survive exec) until it confines itself more tightly, so the
//! parent's policy includes what a worker does before that: exec the relay,
//! join the child's namespaces (setns) and, to keep client addresses, open
//! a netlink socket.

use crate::statedir::StateDir;
use rk_driver::confine::{Calls, Confinement, Report};
use std::path::Path;

/// Directories the dynamic loader and libc read a program's libraries
/// from, when the binaries are not static.
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/etc/ld.so.cache",
];

/// Waiting for, signalling and reaping processes, without starting any
/// (`Calls::Spawn` minus exec and fork): what the parent needs when no
/// relay worker may still be started.
const REAP_AND_SIGNAL: &[libc::c_long] = &[
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_close_range,
];

pub fn parent_policy(state: &StateDir) -> Confinement {
    parent_policy_with(state, crate::ports::relay_needs())
}

fn parent_policy_with(state: &StateDir, relay: Option<&crate::ports::RelayNeeds>) -> Confinement {
    let mut c = Confinement::new()
        .allow(Calls::Files)
        .write(state.path())
        .read("/proc")
        .write("/dev/null");
    for parent in state.removal_parents() {
        c = c.remove_dirs_in(parent);
    }
    for dir in LIBRARY_DIRS {
        if Path::new(dir).exists() {
            c = c.read(dir);
        }
    }
    let Some(relay) = relay else {
        // The API socket and the drivers' channels are all it talks on.
        return c
            .socket_families(&[libc::AF_UNIX])
            .allow_syscalls(REAP_AND_SIGNAL);
    };
    let mut families = vec![libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
    if relay.netlink {
        families.push(libc::AF_NETLINK);
    }
    c = c
        .allow(Calls::Spawn)
        // setns only (not unshare): a new worker joins the child's
        // namespaces before it confines itself.
        .allow_syscalls(&[libc::SYS_setns])
        .socket_families(&families)
        .exec(&relay.path);
    for dir in LIBRARY_DIRS {
        if Path::new(dir).exists() {
            c = c.exec(dir);
        }
    }
    c
}

/// Applies [`parent_policy`]; a kernel that refuses is reported, not fatal.
pub fn confine_parent(state: &StateDir) -> Option<Report> {
    match parent_policy(state).apply() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("[rootlesskit:parent] warning: running without a sandbox: {e}");
            None
        }
    }
}
