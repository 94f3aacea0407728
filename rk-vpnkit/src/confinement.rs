//! The driver's confinement once the tap is open (docs/security.md): from
//! then on the process pumps frames between the tap and vpnkit's socket on
//! two threads (with the segmentation and checksum offload paths), drains
//! vpnkit's stderr on a third, answers the core on its socket, and at
//! shutdown stops the pump and kills and reaps vpnkit. It opens no file,
//! creates no socket and starts no program.
//!
//! The pump parses frames from the child (hostile: whatever runs there can
//! send anything) and from vpnkit, so a refused system call kills the whole
//! process at once (`OnViolation::Kill`, SIGSYS): a call outside this list
//! means the process is no longer doing what it was written to do, and the
//! core reports the dead driver like any other crash.
//!
//! This replaces the per-thread filters the pump threads used to install:
//! a filter on one thread does not contain a thread that shares its
//! address space with unfiltered ones.

use rk_driver::confine::{Calls, Confinement, OnViolation};

/// The policy: the base calls, the socket calls on descriptors it already
/// holds (no socket family at all: `socket(2)` is refused), supervising
/// vpnkit (SIGKILL through its pidfd, reaping it); Landlock with no path;
/// a refused call kills the process.
pub fn policy() -> Confinement {
    Confinement::new()
        .allow(Calls::Sockets)
        .allow(Calls::Supervise)
        .on_violation(OnViolation::Kill)
}

/// Call before the pump threads start, so that Landlock covers them too.
/// Returns what applied, for the answer's `sandbox` entry; a kernel that
/// refuses is reported there and in a warning, and the pump runs anyway.
pub fn confine() -> String {
    policy().apply_or_warn("rk-vpnkit")
}

#[cfg(test)]
mod tests {
    use super::policy;
    use rk_driver::confine::probe::{self, *};
    use std::io::{Read, Write};

    #[test]
    fn the_pump_still_moves_bytes_on_threads_it_starts() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            ours.read_exact(&mut buf).unwrap();
            buf.reverse();
            ours.write_all(&buf).unwrap();
        });
        let code = probe::run_confined(&policy(), move || {
            // What the pump does: a thread, an eventfd, reading and writing
            // a stream it holds, shutting it down, joining.
            let ended = rk_driver::fdio::EventFd::new();
            let t = std::thread::Builder::new()
                .name("pump".into())
                .spawn(move || {
                    let mut s = theirs;
                    let mut back = [0u8; 4];
                    let ok = s.write_all(b"abcd").is_ok()
                        && s.read_exact(&mut back).is_ok()
                        && &back == b"dcba"
                        && s.shutdown(std::net::Shutdown::Both).is_ok();
                    if let Ok(e) = &ended {
                        e.signal();
                    }
                    ok
                });
            match t.map(|t| t.join()) {
                Ok(Ok(true)) => 0,
                _ => 1,
            }
        });
        assert_eq!(code, 0);
        echo.join().unwrap();
    }

    #[test]
    fn a_forbidden_call_kills_the_process() {
        let refused = [
            OPEN_A_FILE,
            UNIX_SOCKET,
            UDP_SOCKET,
            probe::Probe("a file opened from a pump thread", || {
                std::thread::spawn(probe::open_a_file).join().unwrap_or(2)
            }),
        ];
        expect_all(&policy(), KILLED, &refused).unwrap();
        expect_all(&policy(), KILLED, NEVER).unwrap();
    }

    #[test]
    fn only_the_helper_it_holds_a_pidfd_of_can_be_signalled() {
        let signalled = probe::signal_helpers(&policy()).unwrap();
        assert_eq!(signalled, (0, KILLED), "(through the pidfd, kill(2))");
    }
}
