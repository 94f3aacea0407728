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
            log::warn!("running without a sandbox: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::RelayNeeds;
    use std::path::PathBuf;

    /// Forks; the child applies `policy` and runs `probe`, whose result (0
    /// or an errno) is its exit status.
    fn confined(policy: Confinement, probe: fn() -> i32) -> i32 {
        rk_driver::confine::run_confined(&policy, probe)
    }

    fn state(tag: &str) -> StateDir {
        let dir =
            std::env::temp_dir().join(format!("rk-confinement-test-{}-{tag}", std::process::id()));
        StateDir::open(Some(&dir)).unwrap()
    }

    fn socket_of(family: libc::c_int) -> i32 {
        let kind = if family == libc::AF_NETLINK {
            libc::SOCK_RAW
        } else {
            libc::SOCK_STREAM
        };
        // SAFETY: socket(2) with constant arguments.
        let r = unsafe { libc::socket(family, kind, 0) };
        if r >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
        }
    }

    fn exec(path: &str) -> i32 {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(path).exec();
        err.raw_os_error().unwrap_or(1)
    }

    #[test]
    fn without_the_builtin_relay_the_parent_runs_nothing_and_opens_no_inet_socket() {
        let s = state("none");
        let p = parent_policy_with(&s, None);
        assert_eq!(confined(p.clone(), || socket_of(libc::AF_UNIX)), 0);
        assert_eq!(
            confined(p.clone(), || socket_of(libc::AF_INET)),
            libc::EPERM
        );
        assert_eq!(confined(p.clone(), || exec("/bin/true")), libc::EPERM);
        let setns = || -> i32 {
            // SAFETY: setns on descriptor 0; refused by the filter first.
            if unsafe { libc::setns(0, libc::CLONE_NEWNET) } == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
            }
        };
        assert_eq!(confined(p, setns), libc::EPERM);
        s.cleanup();
    }

    #[test]
    fn with_the_builtin_relay_the_parent_runs_the_relay_only() {
        let s = state("relay");
        let relay = RelayNeeds {
            path: PathBuf::from("/bin/true"),
            netlink: false,
        };
        let p = parent_policy_with(&s, Some(&relay));
        assert_eq!(confined(p.clone(), || socket_of(libc::AF_INET6)), 0);
        assert_eq!(
            confined(p.clone(), || socket_of(libc::AF_NETLINK)),
            libc::EPERM
        );
        // /bin/true exits 0 once exec'd.
        assert_eq!(confined(p.clone(), || exec("/bin/true")), 0);
        if rk_driver::confine::kernel_landlock_abi() > 0 {
            assert_eq!(confined(p, || exec("/bin/false")), libc::EACCES);
        }
        let with_netlink = RelayNeeds {
            netlink: true,
            ..relay
        };
        let p = parent_policy_with(&s, Some(&with_netlink));
        assert_eq!(confined(p, || socket_of(libc::AF_NETLINK)), 0);
        s.cleanup();
    }
}
