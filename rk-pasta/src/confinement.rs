//! What rk-pasta's processes may still do once set-up is over
//! (docs/security.md, "rk-pasta").
//!
//! The driver, once pasta is ready and the answer for the core is
//! computed: it answers the core on its socket, watches pasta through a
//! pidfd, drains pasta's log on a thread, and, when it forwards ports
//! itself (an older pasta), runs the forwarding loop (epoll, accept,
//! connect, splice through pipes, recvfrom/sendto, reading the
//! namespace's `/proc/net` tables and sock_diag answers through
//! descriptors the namespace helper made). At shutdown it kills pasta's
//! process group and the helper and reaps them. It opens no file, starts
//! no program, and creates sockets of `AF_INET` and `AF_INET6` only (the
//! host side of forwarded ports), none at all without forwarding (it still
//! sends and receives on the sockets it holds: the core's, the relay's).
//!
//! The namespace helper, inside the child's user and network namespaces:
//! it reads one byte, makes a TCP or UDP socket, a NETLINK_SOCK_DIAG
//! socket or opens one of `/proc/self/net/{tcp,tcp6,udp,udp6}`, and sends
//! it back. Nothing else.
//!
//! A refused call fails with EPERM (`OnViolation::Deny`) in both: neither
//! parses hostile input (the relay moves bytes without looking at them;
//! the tables and sock_diag answers come from the kernel), and a refused
//! call then shows as a port that is not forwarded with the reason in a
//! warning, or an error the core reports, not as the whole network dying.

use rk_driver::confine::{Calls, Confinement, OnViolation};
use std::path::Path;

/// Supervising pasta and the helper: pasta's process group gets SIGKILL
/// through kill(2) (its short-lived helpers are in it), pasta itself
/// through its pidfd, the helper through kill(2); wait reaps them and the
/// orphans that come back to this subreaper.
const SUPERVISE: &[libc::c_long] = &[
    libc::SYS_kill,
    libc::SYS_pidfd_send_signal,
    libc::SYS_wait4,
    libc::SYS_waitid,
];

/// The driver's policy; `forwards`: it runs the forwarding loop.
pub fn driver_policy(forwards: bool) -> Confinement {
    // The socket calls, for the core's socket (sendmsg, recvmsg) and the
    // relay; without a family listed, socket(2) itself stays refused.
    let policy = Confinement::new()
        .allow(Calls::Sockets)
        .allow_syscalls(SUPERVISE)
        .on_violation(OnViolation::Deny);
    if forwards {
        policy.socket_families(&[libc::AF_INET, libc::AF_INET6])
    } else {
        policy
    }
}

/// The namespace helper's directory of tables: `/proc/self/net` shows the
/// tables of the network namespace the reader is in.
pub const NET_TABLES: &str = "/proc/self/net";

/// The namespace helper's policy: sockets of the families it hands out,
/// opening files (Landlock: below [`NET_TABLES`] only, read-only).
pub fn helper_policy() -> Confinement {
    Confinement::new()
        .socket_families(&[libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK])
        .allow_syscalls(&[libc::SYS_openat])
        .read(Path::new(NET_TABLES))
        .on_violation(OnViolation::Deny)
}

/// Applies the driver's policy to the whole process and says what applied,
/// for the `sandbox` entry of the configured answer. A kernel that
/// refuses is reported, not fatal.
pub fn confine_driver(forwards: bool) -> String {
    driver_policy(forwards).apply_or_warn("rk-pasta")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};

    fn in_confined_child(policy: Confinement, probe: impl FnOnce() -> i32) -> i32 {
        rk_driver::confine::run_confined(&policy, probe)
    }

    fn errno_of(e: std::io::Error) -> i32 {
        e.raw_os_error().unwrap_or(99)
    }

    fn socket_errno(family: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> i32 {
        // SAFETY: socket(2) with integer arguments; the descriptor is
        // owned right away.
        let fd = unsafe { libc::socket(family, ty, proto) };
        if fd >= 0 {
            // SAFETY: just created, owned by nothing else.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            0
        } else {
            errno_of(std::io::Error::last_os_error())
        }
    }

    #[test]
    fn the_driver_still_relays_a_tcp_connection_with_splice() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let code = in_confined_child(driver_policy(true), move || {
            // What the forwarding loop does: a host listener, a connection
            // to it, one to the target, bytes spliced through a pipe.
            let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
                return 1;
            };
            let Ok(mut client) = std::net::TcpStream::connect(listener.local_addr().unwrap())
            else {
                return 2;
            };
            let Ok((accepted, _)) = listener.accept() else {
                return 3;
            };
            let Ok(mut inside) = std::net::TcpStream::connect(target) else {
                return 4;
            };
            if client.write_all(b"hello").is_err() {
                return 5;
            }
            let Ok((r, w)) = nix::unistd::pipe() else {
                return 6;
            };
            let flags = nix::fcntl::SpliceFFlags::empty();
            let moved = nix::fcntl::splice(&accepted, None, &w, None, 5, flags)
                .and_then(|n| nix::fcntl::splice(&r, None, &inside, None, n, flags));
            if moved != Ok(5) {
                return 7;
            }
            let mut back = [0u8; 5];
            if inside.read_exact(&mut back).is_err() || &back != b"hello" {
                return 8;
            }
            0
        });
        assert_eq!(code, 0);
        echo.join().unwrap();
    }

    #[test]
    fn the_driver_may_not_open_files_exec_or_make_other_sockets() {
        let open = in_confined_child(driver_policy(true), || {
            match std::fs::File::open("/etc/hostname") {
                Ok(_) => 0,
                Err(e) => errno_of(e),
            }
        });
        assert_eq!(open, libc::EPERM, "opening a file");
        let exec = in_confined_child(driver_policy(true), || {
            errno_of(std::os::unix::process::CommandExt::exec(
                &mut std::process::Command::new("/bin/true"),
            ))
        });
        assert_eq!(exec, libc::EPERM, "exec");
        for (family, what) in [(libc::AF_UNIX, "AF_UNIX"), (libc::AF_NETLINK, "AF_NETLINK")] {
            let code = in_confined_child(driver_policy(true), || {
                socket_errno(family, libc::SOCK_DGRAM, 0)
            });
            assert_eq!(code, libc::EPERM, "a socket of {what}");
        }
        let inet = in_confined_child(driver_policy(false), || {
            match std::net::UdpSocket::bind("127.0.0.1:0") {
                Ok(_) => 0,
                Err(e) => errno_of(e),
            }
        });
        assert_eq!(inet, libc::EPERM, "AF_INET without forwarding");
        let ptrace = in_confined_child(driver_policy(true), || {
            // SAFETY: PTRACE_ATTACH on our parent; refused by the filter.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_ATTACH,
                    libc::getppid(),
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            if r == 0 {
                0
            } else {
                errno_of(std::io::Error::last_os_error())
            }
        });
        assert_eq!(ptrace, libc::EPERM, "ptrace");
    }

    #[test]
    fn the_helper_opens_the_net_tables_and_nothing_else() {
        let code = in_confined_child(helper_policy(), || {
            let tables = ["tcp", "tcp6", "udp", "udp6"];
            for (i, t) in tables.iter().enumerate() {
                if std::fs::File::open(Path::new(NET_TABLES).join(t)).is_err() {
                    return 10 + i as i32;
                }
            }
            let diag = libc::NETLINK_SOCK_DIAG;
            if socket_errno(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, diag) != 0
                || socket_errno(libc::AF_INET6, libc::SOCK_STREAM, 0) != 0
            {
                return 20;
            }
            0
        });
        assert_eq!(code, 0);
        let landlocked = rk_driver::confine::kernel_landlock_abi() > 0;
        let other_file = in_confined_child(helper_policy(), || {
            match std::fs::File::open("/etc/hostname") {
                Ok(_) => 0,
                Err(e) => errno_of(e),
            }
        });
        if landlocked {
            assert_eq!(other_file, libc::EACCES, "a file outside the tables");
        }
        let unix = in_confined_child(helper_policy(), || {
            socket_errno(libc::AF_UNIX, libc::SOCK_STREAM, 0)
        });
        assert_eq!(unix, libc::EPERM, "an AF_UNIX socket");
        let exec = in_confined_child(helper_policy(), || {
            errno_of(std::os::unix::process::CommandExt::exec(
                &mut std::process::Command::new("/bin/true"),
            ))
        });
        assert_eq!(exec, libc::EPERM, "exec");
        let kill = in_confined_child(helper_policy(), || {
            // SAFETY: kill(2) with signal 0 only checks; refused here.
            if unsafe { libc::kill(libc::getppid(), 0) } == 0 {
                0
            } else {
                errno_of(std::io::Error::last_os_error())
            }
        });
        assert_eq!(kill, libc::EPERM, "kill(2)");
    }
}
