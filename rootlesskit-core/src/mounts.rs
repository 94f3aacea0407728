//! Mount-namespace set-up inside the child: propagation and /proc.

use crate::settings::Propagation;
use nix::mount::{mount, MsFlags};
use std::path::Path;

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

/// Mounts a sysfs of the new network namespace on /sys (so /sys/class/net
/// shows its interfaces), keeping the host's /sys/fs/cgroup in place, as
/// RootlessKit does. A read-only sysfs is the fallback when the host's is
/// read-only; failing both is only a warning.
pub fn mount_sysfs_for_netns() -> Result<(), String> {
    const CGROUP: &str = "/sys/fs/cgroup";
    let keep_cgroup = Path::new(CGROUP).is_dir();
    let staging = if keep_cgroup {
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("rksysXXXXXX"))
            .map_err(|e| format!("making a staging directory for {CGROUP}: {e}"))?;
        if let Err(e) = mount(
            Some(CGROUP),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("bind-mounting {CGROUP}: {e}"));
        }
        Some(dir)
    } else {
        None
    };
    let sysfs = |flags| mount(Some("none"), "/sys", Some("sysfs"), flags, None::<&str>);
    if let Err(e) = sysfs(MsFlags::empty()) {
        if let Err(e2) = sysfs(MsFlags::MS_RDONLY) {
            log::warn!("cannot mount sysfs for the network namespace ({e}; read-only: {e2})");
        }
    }
    if let Some(dir) = staging {
        let moved = mount(
            Some(&dir),
            CGROUP,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        );
        let _ = std::fs::remove_dir(&dir);
        moved.map_err(|e| format!("moving {CGROUP} back under the new /sys: {e}"))?;
    }
    Ok(())
}
