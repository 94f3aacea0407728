//! Which paths pasta is given for the child's namespaces.
//!
//! pasta from 2024_10_30 on closes every descriptor it inherits except
//! stdin, stdout and stderr before it reads its options, so the namespace
//! descriptors cannot be handed down as `/proc/self/fd/N`. Instead pasta is
//! pointed where RootlessKit points it (which is also what the AppArmor
//! profile distributions ship for pasta allows): `/proc/CHILD/ns/user`,
//! and `/proc/CHILD/ns/net` or, with `--detach-netns`, the bind mount at
//! `/proc/CHILD/root/STATE_DIR/netns`. Each path is checked to name the very
//! namespace whose descriptor the core sent (same device and inode), so a
//! recycled pid or an unexpected mount can never point pasta elsewhere; if
//! one does not match, the driver's own descriptor is used through
//! `/proc/DRIVER/fd/N`.

use rk_driver::NamespaceFds;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The `--userns` and `--netns` arguments for pasta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsPaths {
    pub userns: String,
    pub netns: String,
}

/// Whether `path` opens the same file as `fd`.
fn same_file(path: &str, fd: BorrowedFd<'_>) -> bool {
    let Ok(by_path) = std::fs::metadata(path) else {
        return false;
    };
    match nix::sys::stat::fstat(fd) {
        Ok(by_fd) => by_fd.st_dev == by_path.dev() && by_fd.st_ino == by_path.ino(),
        Err(_) => false,
    }
}

fn checked(expected: String, fd: BorrowedFd<'_>) -> String {
    if same_file(&expected, fd) {
        expected
    } else {
        format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())
    }
}

pub fn resolve(child_pid: i32, state_dir: &str, detach_netns: bool, ns: &NamespaceFds) -> NsPaths {
    let userns = checked(format!("/proc/{child_pid}/ns/user"), ns.userns.as_fd());
    let netns = if detach_netns {
        let inside = Path::new(state_dir).join("netns");
        let inside = inside.strip_prefix("/").unwrap_or(&inside);
        format!("/proc/{child_pid}/root/{}", inside.display())
    } else {
        format!("/proc/{child_pid}/ns/net")
    };
    NsPaths {
        userns,
        netns: checked(netns, ns.netns.as_fd()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn own(path: &str) -> OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn matching_paths_are_used_as_they_are() {
        let me = std::process::id() as i32;
        let ns = NamespaceFds {
            userns: own("/proc/self/ns/user"),
            netns: own("/proc/self/ns/net"),
        };
        let p = resolve(me, "/tmp/unused", false, &ns);
        assert_eq!(p.userns, format!("/proc/{me}/ns/user"));
        assert_eq!(p.netns, format!("/proc/{me}/ns/net"));
    }

    #[test]
    fn a_path_naming_something_else_falls_back_to_our_descriptor() {
        let me = std::process::id() as i32;
        let ns = NamespaceFds {
            userns: own("/proc/self/ns/user"),
            // Not a network namespace at all: the check must notice.
            netns: own("/dev/null"),
        };
        let p = resolve(me, "/tmp/unused", false, &ns);
        assert_eq!(
            p.netns,
            format!("/proc/{}/fd/{}", std::process::id(), ns.netns.as_raw_fd())
        );
        let p = resolve(me, "/nonexistent-state", true, &ns);
        assert!(p
            .netns
            .starts_with(&format!("/proc/{}/fd/", std::process::id())));
    }

    #[test]
    fn detached_netns_is_looked_up_through_the_childs_root() {
        let dir = std::env::temp_dir().join(format!("rk-pasta-nspaths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("netns"), "").unwrap();
        let ns = NamespaceFds {
            userns: own("/proc/self/ns/user"),
            netns: own(dir.join("netns").to_str().unwrap()),
        };
        let me = std::process::id() as i32;
        let p = resolve(me, dir.to_str().unwrap(), true, &ns);
        assert_eq!(p.netns, format!("/proc/{me}/root{}/netns", dir.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
