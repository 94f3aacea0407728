//! Finding lxc-user-nic and checking that it can work: it is set-user-ID
//! root, and the kernel will honour that bit.

use rk_driver::helper::{Env, Program};
use rk_driver::lookup::unsafe_permissions;
use rk_driver::DriverError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// lxc-user-nic as the user knows it.
pub const LXC_USER_NIC: Program = Program {
    name: "lxc-user-nic",
    flag: crate::options::BINARY,
    install: "install lxc (Debian/Ubuntu: apt install lxc; it must come with the SUID \
              lxc-user-nic)",
    env: Env::Inherit,
};

/// Where distributions install it: Debian/Ubuntu (lxc >= 4), the
/// multiarch directory of older Debian/Ubuntu, and Fedora/Arch/others.
pub fn candidates() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/usr/libexec/lxc/lxc-user-nic"),
        PathBuf::from(format!("/usr/lib/{}/lxc/lxc-user-nic", multiarch_triplet())),
        PathBuf::from("/usr/lib/lxc/lxc-user-nic"),
    ]
}

/// Debian's multiarch directory name for this build's architecture.
fn multiarch_triplet() -> String {
    match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".into(),
        "arm" => "arm-linux-gnueabihf".into(),
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le-linux-gnu".into(),
        arch => format!("{arch}-linux-gnu"),
    }
}

/// The binary to run: the one given (a path, or a name looked up with the
/// SDK's lookup: absolute `$PATH` entries only, never the current
/// directory), or the first candidate that exists. A program that someone
/// other than root and this user could replace is used, with a warning.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, DriverError> {
    if let Some(p) = explicit {
        return LXC_USER_NIC
            .find(&p.to_string_lossy())
            .map_err(|e| DriverError::new(e.to_string()));
    }
    let all = candidates();
    let found = all.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
        let list: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
        DriverError::new(format!(
            "lxc-user-nic not found (looked at {}): {}, or pass --{}=PATH",
            list.join(", "),
            LXC_USER_NIC.install,
            LXC_USER_NIC.flag
        ))
    })?;
    if let Some(why) = unsafe_permissions(&found) {
        log::warn!("{why}");
    }
    Ok(found)
}

/// lxc-user-nic creates a veth as root on the user's behalf: without the
/// set-user-ID bit, owned by root, on a filesystem that honours it, it
/// fails with an obscure "Operation not permitted". Say what to fix instead.
pub fn check_setuid_root(path: &Path) -> Result<(), DriverError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| DriverError::new(format!("lxc-user-nic at {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(DriverError::new(format!(
            "lxc-user-nic at {} is not a regular file: pass the program's path with --lxc-user-nic-binary",
            path.display()
        )));
    }
    let setuid = meta.mode() & libc::S_ISUID != 0;
    if !setuid || meta.uid() != 0 {
        return Err(DriverError::new(format!(
            "lxc-user-nic at {} is not setuid root: reinstall lxc or chmod u+s it (as root{})",
            path.display(),
            if meta.uid() != 0 {
                format!("; it is owned by uid {}, chown root it first", meta.uid())
            } else {
                String::new()
            }
        )));
    }
    if meta.mode() & 0o111 == 0 {
        return Err(DriverError::new(format!(
            "lxc-user-nic at {} is not executable: chmod 4755 it (as root)",
            path.display()
        )));
    }
    if mounted_nosuid(path) {
        return Err(DriverError::new(format!(
            "lxc-user-nic at {} is on a filesystem mounted nosuid, so its setuid bit has no effect: \
             install it elsewhere or remount without nosuid",
            path.display()
        )));
    }
    Ok(())
}

fn mounted_nosuid(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn candidates_cover_the_distributions() {
        let c = candidates();
        assert_eq!(c[0], PathBuf::from("/usr/libexec/lxc/lxc-user-nic"));
        assert!(c[1]
            .to_string_lossy()
            .contains("-linux-gnu/lxc/lxc-user-nic"));
        assert_eq!(c[2], PathBuf::from("/usr/lib/lxc/lxc-user-nic"));
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let e = locate(Some(Path::new("/nonexistent/lxc-user-nic"))).unwrap_err();
        assert!(e.0.contains("/nonexistent/lxc-user-nic"), "{e}");
        assert!(e.0.contains("install lxc"), "{e}");
    }

    #[test]
    fn a_bare_name_is_never_found_in_the_current_directory() {
        // The lookup skips relative $PATH entries; a name that only exists
        // here (in the crate's directory, where cargo runs the tests) is
        // not found whatever PATH says.
        let e = locate(Some(Path::new("Cargo.toml"))).unwrap_err();
        assert!(
            e.0.contains("lxc-user-nic not found (looked for \"Cargo.toml\" in the absolute"),
            "{e}"
        );
    }

    #[test]
    fn a_copy_without_the_setuid_bit_is_refused() {
        let dir = std::env::temp_dir().join(format!("rk-lxcbin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lxc-user-nic");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_setuid_root(&p).unwrap_err();
        assert!(e.0.contains("is not setuid root"), "{e}");
        assert!(e.0.contains("chmod u+s"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
