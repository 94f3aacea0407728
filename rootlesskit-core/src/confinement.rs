//! The parent's own confinement once set-up is over (docs/security.md):
//! from then on it serves the API, forwards signals, reaps, starts relay
//! workers of the builtin port driver (which inherit this filter and
//! Landlock domain, so both include what a worker needs) and cleans the
//! state directory at exit. Nothing else.

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

pub fn parent_policy(state: &StateDir) -> Confinement {
    let mut c = Confinement::new()
        .allow(Calls::Files)
        .allow(Calls::Spawn)
        // Relay workers join the child's namespaces.
        .allow(Calls::Namespaces)
        .socket_families(&[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6])
        .write(state.path())
        // Workers read their namespace files and the loader its libraries.
        .read("/proc")
        .write("/dev/null");
    for parent in state.removal_parents() {
        c = c.remove_dirs_in(parent);
    }
    if let Ok(exe) = std::env::current_exe() {
        c = c.exec(exe);
    }
    for dir in LIBRARY_DIRS {
        if Path::new(dir).exists() {
            c = c.read(dir).exec(dir);
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
