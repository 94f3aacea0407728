//! rk-gvtap's whole-process confinement (docs/security.md), applied in
//! `configure` once the tap exists and before the network thread starts,
//! so that Landlock covers every thread.
//!
//! The NAT opens IPv4 and IPv6 sockets wherever the guest asks (that is its
//! job; the destination policy in policy.rs decides which), reads the
//! host's resolv.conf again when it changes, and the port driver binds
//! listeners on the host; the network thread may change its own CPU
//! affinity. Nothing else: no files but resolv.conf, no exec,
//! no new processes, no namespaces, no netlink or packet sockets. The
//! network thread parses frames from the guest, so a refused call kills
//! the process (`Kill`): it means the process no longer runs our code.

use rk_driver::confine::{Calls, Confinement, OnViolation, Report};
use std::path::{Path, PathBuf};

/// What the NAT reads: /etc (resolv.conf is replaced by new files, so the
/// directory, not the file) and, when resolv.conf is a link, the directory
/// of what it points to.
fn resolver_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("/etc")];
    if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf") {
        if let Some(dir) = target.parent().filter(|d| *d != Path::new("/etc")) {
            paths.push(dir.to_path_buf());
        }
    }
    paths
}

pub fn policy() -> Confinement {
    let mut c = Confinement::new()
        .allow(Calls::Files)
        // FIONBIO (non-blocking sockets), FIONREAD.
        .allow(Calls::Ioctl)
        // The network thread keeping to one CPU (affinity.rs).
        .allow_syscalls(&[libc::SYS_sched_setaffinity, libc::SYS_getcpu])
        .socket_families(&[libc::AF_INET, libc::AF_INET6])
        .on_violation(OnViolation::Kill);
    for p in resolver_paths() {
        c = c.read(p);
    }
    c
}

pub fn apply() -> Result<Report, String> {
    policy().apply().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::confine::probe::{self, KILLED};

    #[test]
    fn resolv_conf_and_inet_sockets_work() {
        fn probe() -> i32 {
            if probe::open("/etc/resolv.conf") != 0 {
                return 1;
            }
            if probe::udp_socket() != 0 {
                return 2;
            }
            if std::net::TcpListener::bind("[::1]:0").is_err()
                && std::net::TcpListener::bind("127.0.0.1:0").is_err()
            {
                return 3;
            }
            0
        }
        assert_eq!(probe::run_confined(&policy(), probe), 0);
    }

    #[test]
    fn a_netlink_socket_kills_the_process() {
        let netlink = || probe::socket_of(libc::AF_NETLINK);
        assert_eq!(probe::run_confined(&policy(), netlink), KILLED);
    }

    #[test]
    fn files_outside_etc_are_refused() {
        if rk_driver::confine::kernel_landlock_abi() > 0 {
            let status = || probe::open("/proc/self/status");
            assert_eq!(probe::run_confined(&policy(), status), libc::EACCES);
        }
    }
}
