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

/// The system calls of supervising vpnkit: SIGKILL through the pidfd
/// opened when it was started (no kill(2)), and reaping it (wait only ever
/// reaps one's own children). The base group's tgkill, kept for raise and
/// abort, still reaches other processes (docs/security.md).
pub const SUPERVISE: &[libc::c_long] = &[
    libc::SYS_pidfd_send_signal,
    libc::SYS_wait4,
    libc::SYS_waitid,
];

/// The policy: the base calls, the socket calls on descriptors it already
/// holds (no socket family at all: `socket(2)` is refused), supervising
/// vpnkit; Landlock with no path; a refused call kills the process.
pub fn policy() -> Confinement {
    Confinement::new()
        .allow(Calls::Sockets)
        .allow_syscalls(SUPERVISE)
        .on_violation(OnViolation::Kill)
}

/// Applies [`policy`] to the whole process, before the pump threads start
/// (so that Landlock covers them too), and says what applied, for the
/// `sandbox` entry of the configured answer. A kernel that refuses is
/// reported, not fatal.
pub fn confine() -> String {
    policy().apply_or_warn("rk-vpnkit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn in_confined_child(probe: impl FnOnce() -> i32) -> i32 {
        rk_driver::confine::run_confined(&policy(), probe)
    }

    const KILLED: i32 = 1000 + libc::SIGSYS;

    #[test]
    fn the_pump_still_moves_bytes_on_threads_it_starts() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            ours.read_exact(&mut buf).unwrap();
            buf.reverse();
            ours.write_all(&buf).unwrap();
        });
        let code = in_confined_child(move || {
            // What the pump does: a thread, an eventfd, reading and writing
            // a stream it holds, shutting it down, joining.
            let ended = crate::event::Event::new();
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
        let open = in_confined_child(|| i32::from(std::fs::File::open("/etc/hostname").is_ok()));
        assert_eq!(open, KILLED, "opening a file");
        let exec = in_confined_child(|| {
            let _ = std::os::unix::process::CommandExt::exec(&mut std::process::Command::new(
                "/bin/true",
            ));
            1
        });
        assert_eq!(exec, KILLED, "exec");
        let unix = in_confined_child(|| i32::from(UnixStream::pair().is_ok()));
        assert_eq!(unix, KILLED, "a new socket, even AF_UNIX");
        let inet =
            in_confined_child(|| i32::from(std::net::UdpSocket::bind("127.0.0.1:0").is_ok()));
        assert_eq!(inet, KILLED, "an AF_INET socket");
        let ptrace = in_confined_child(|| {
            // SAFETY: PTRACE_TRACEME with null pointers; refused by the filter.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_TRACEME,
                    0,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            i32::from(r == 0)
        });
        assert_eq!(ptrace, KILLED, "ptrace");
        let pump_thread_open = in_confined_child(|| {
            std::thread::spawn(|| i32::from(std::fs::File::open("/etc/hostname").is_ok()))
                .join()
                .unwrap_or(2)
        });
        assert_eq!(pump_thread_open, KILLED, "a file opened from a pump thread");
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
        assert_eq!(by_pid, KILLED, "kill(2) of another process");
    }
}
