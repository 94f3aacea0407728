//! Mount-namespace set-up inside the child: propagation and /proc.

use crate::settings::Propagation;
use nix::mount::{mount, MsFlags};

/// Sets the propagation of every mount (RootlessKit's `--propagation`).
pub fn set_propagation(p: Propagation) -> Result<(), String> {
    let flags = match p {
        Propagation::Private => MsFlags::MS_PRIVATE,
        Propagation::RPrivate => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Propagation::Slave => MsFlags::MS_SLAVE,
        Propagation::RSlave => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Propagation::Shared => MsFlags::MS_SHARED,
        Propagation::RShared => MsFlags::MS_SHARED | MsFlags::MS_REC,
    };
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("setting mount propagation of / to {p:?}: {e}"))
}

/// Mounts a /proc that shows the new PID namespace.
pub fn mount_proc() -> Result<(), String> {
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting /proc for the PID namespace: {e}"))
}

/// Bind-mounts file `from` over file `to`.
pub fn bind_file(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind-mounting {} on {}: {e}", from.display(), to.display()))
}
