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

use rk_driver::confine::{Calls, Confinement};

/// Confines the whole driver once slirp4netns runs; the result is the
/// `sandbox` entry of the answer (a kernel that refuses shows there).
pub fn confine() -> String {
    policy().apply_or_warn("rk-slirp4netns")
}

/// The policy: the base calls, sockets of `AF_UNIX` only (the API socket;
/// the core's socket is already open), supervising slirp4netns (SIGKILL
/// through its pidfd, reaping it); Landlock with no path at all; a refused
/// call fails with EPERM (the default).
pub fn policy() -> Confinement {
    let api_socket = [libc::AF_UNIX];
    Confinement::new()
        .socket_families(&api_socket)
        .allow(Calls::Supervise)
}

#[cfg(test)]
mod tests {
    use super::policy;
    use rk_driver::confine::probe::{self, *};
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

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
        let code = probe::run_confined(&policy(), || {
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
        let refused = [OPEN_A_FILE, UDP_SOCKET, NETLINK_SOCKET];
        expect_all(&policy(), libc::EPERM, &refused).unwrap();
        expect_all(&policy(), libc::EPERM, NEVER).unwrap();
    }

    #[test]
    fn a_thread_started_afterwards_is_confined_too() {
        let code = probe::run_confined(&policy(), || {
            std::thread::spawn(probe::open_a_file).join().unwrap_or(98)
        });
        assert_eq!(code, libc::EPERM);
    }

    #[test]
    fn only_the_helper_it_holds_a_pidfd_of_can_be_signalled() {
        let signalled = probe::signal_helpers(&policy()).unwrap();
        assert_eq!(signalled, (0, libc::EPERM), "(through the pidfd, kill(2))");
    }
}
