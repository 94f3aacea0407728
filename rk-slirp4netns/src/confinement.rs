//! The driver's confinement once slirp4netns is running (docs/security.md):
//! from then on the process answers the core on its socket, watches
//! slirp4netns through a pidfd, drains its stderr on a thread (started
//! after this, inside the Landlock domain), connects to
//! slirp4netns's API socket for the port driver, and at shutdown kills and
//! reaps slirp4netns. It opens no file and starts no program.
//!
//! A refused call fails with EPERM (`OnViolation::Deny`): nothing this
//! process reads is hostile (the core's messages, slirp4netns's JSON
//! answers), and a port request that hits the filter should come back as
//! an error the user can read, not as a dead network.

use rk_driver::confine::{Confinement, OnViolation};

/// The system calls of supervising slirp4netns: SIGKILL through the pidfd
/// opened when it was started (no kill(2)), and reaping it (wait only ever
/// reaps one's own children). The base group's tgkill, kept for raise and
/// abort, still reaches other processes (docs/security.md).
pub const SUPERVISE: &[libc::c_long] = &[
    libc::SYS_pidfd_send_signal,
    libc::SYS_wait4,
    libc::SYS_waitid,
];

/// The policy: the base calls, sockets of `AF_UNIX` only (the API socket;
/// the core's socket is already open), supervising slirp4netns; Landlock
/// with no path at all.
pub fn policy() -> Confinement {
    Confinement::new()
        .socket_families(&[libc::AF_UNIX])
        .allow_syscalls(SUPERVISE)
        .on_violation(OnViolation::Deny)
}

/// Applies [`policy`] to the whole process and says what applied, for the
/// `sandbox` entry of the configured answer. A kernel that refuses is
/// reported, not fatal.
pub fn confine() -> String {
    policy().apply_or_warn("rk-slirp4netns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    fn in_confined_child(probe: impl FnOnce() -> i32) -> i32 {
        rk_driver::confine::run_confined(&policy(), probe)
    }

    fn errno_of(e: std::io::Error) -> i32 {
        e.raw_os_error().unwrap_or(99)
    }

    #[test]
    fn the_api_socket_still_works() {
        let dir = std::env::temp_dir().join(format!("rk-s4nn-confine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = String::new();
            s.read_to_string(&mut req).unwrap();
            s.write_all(b"{\"return\":{}}").unwrap();
            req
        });
        let code = in_confined_child(|| {
            let Ok(mut s) = UnixStream::connect(&path) else {
                return 1;
            };
            let ok = s.write_all(b"{\"execute\":\"list_hostfwd\"}").is_ok()
                && s.shutdown(std::net::Shutdown::Write).is_ok();
            let mut answer = String::new();
            if !ok || s.read_to_string(&mut answer).is_err() {
                return 2;
            }
            i32::from(answer != "{\"return\":{}}") * 3
        });
        assert_eq!(code, 0);
        assert_eq!(server.join().unwrap(), "{\"execute\":\"list_hostfwd\"}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_exec_and_inet_sockets_are_refused() {
        let open = in_confined_child(|| match std::fs::File::open("/etc/hostname") {
            Ok(_) => 0,
            Err(e) => errno_of(e),
        });
        assert_eq!(open, libc::EPERM, "opening a file");
        let exec = in_confined_child(|| {
            errno_of(std::os::unix::process::CommandExt::exec(
                &mut std::process::Command::new("/bin/true"),
            ))
        });
        assert_eq!(exec, libc::EPERM, "exec");
        let inet = in_confined_child(|| match std::net::UdpSocket::bind("127.0.0.1:0") {
            Ok(_) => 0,
            Err(e) => errno_of(e),
        });
        assert_eq!(inet, libc::EPERM, "an AF_INET socket");
        let netlink = in_confined_child(|| {
            // SAFETY: socket(2) with constant arguments; only the result is read.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
            if fd >= 0 {
                0
            } else {
                errno_of(std::io::Error::last_os_error())
            }
        });
        assert_eq!(netlink, libc::EPERM, "a netlink socket");
    }

    #[test]
    fn a_thread_started_afterwards_is_confined_too() {
        let code = in_confined_child(|| {
            std::thread::spawn(|| match std::fs::File::open("/etc/hostname") {
                Ok(_) => 0,
                Err(e) => errno_of(e),
            })
            .join()
            .unwrap_or(98)
        });
        assert_eq!(code, libc::EPERM);
    }

    #[test]
    fn only_the_helper_it_holds_a_pidfd_of_can_be_signalled() {
        let mut helper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = rk_driver::process::pidfd_open(helper.id()).unwrap();
        let through_pidfd = in_confined_child(move || {
            let sent = rk_driver::process::pidfd_send_signal(
                std::os::fd::AsFd::as_fd(&pidfd),
                libc::SIGKILL,
            );
            i32::from(sent.is_err())
        });
        assert_eq!(through_pidfd, 0);
        let status = helper.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        let by_pid = in_confined_child(|| {
            // SAFETY: kill(2) with signal 0 only checks; refused here.
            if unsafe { libc::kill(libc::getppid(), 0) } == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(99)
            }
        });
        assert_eq!(by_pid, libc::EPERM, "kill(2) of another process");
    }
}
