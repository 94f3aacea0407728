//! Facts about this machine that decide what `auto` means.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The kernel offers seccomp filters.
    pub kernel_seccomp: bool,
    /// Where `/etc/resolv.conf` really is, when that is outside `/etc` and
    /// `/run` (the only trees slirp4netns's sandbox keeps).
    pub escaped_resolv_conf: Option<PathBuf>,
}

impl Host {
    pub fn detect() -> Self {
        Host {
            kernel_seccomp: kernel_supports_seccomp_filter(),
            escaped_resolv_conf: escaped(Path::new("/etc/resolv.conf")),
        }
    }
}

fn escaped(resolv_conf: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(resolv_conf).ok()?;
    (!real.starts_with("/etc") && !real.starts_with("/run")).then_some(real)
}

/// Checked the way RootlessKit does: `PR_SET_SECCOMP` in filter mode
/// without a filter fails with `EINVAL` only when filters are not built in.
fn kernel_supports_seccomp_filter() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer and changes nothing.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0
        && nix::Error::last() == nix::Error::EINVAL
    {
        return false;
    }
    // SAFETY: with a null program pointer the kernel fails (EFAULT, or EACCES
    // without no_new_privs) before it installs anything.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
            0,
            0,
        )
    };
    !(r < 0 && nix::Error::last() == nix::Error::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_outside_etc_and_run_is_reported() {
        assert_eq!(escaped(Path::new("/etc/passwd")), None);
        let dir = std::env::temp_dir().join(format!("rk-s4-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(escaped(&dir.join("missing")), None);
        let file = dir.join("resolv.conf");
        std::fs::write(&file, "").unwrap();
        assert_eq!(escaped(&file), Some(std::fs::canonicalize(&file).unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_kernel_has_seccomp_filters() {
        assert!(kernel_supports_seccomp_filter());
        assert!(Host::detect().kernel_seccomp);
    }
}
