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

/// The driver's policy; `forwards`: it runs the forwarding loop.
/// Supervising pasta and the helper: pasta itself gets SIGKILL through its
/// pidfd, pasta's process group (its short-lived helpers are in it) and
/// the namespace helper through kill(2); wait reaps them and the orphans
/// that come back to this subreaper.
pub fn driver_policy(forwards: bool) -> Confinement {
    // The socket calls, for the core's socket (sendmsg, recvmsg) and the
    // relay; without a family listed, socket(2) itself stays refused.
    let policy = Confinement::new()
        .allow(Calls::Sockets)
        .allow(Calls::Supervise)
        .allow_syscalls(&[libc::SYS_kill])
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
    use super::{driver_policy, helper_policy, NET_TABLES};
    use rk_driver::confine::probe::{self, *};
    use std::io::{Read, Write};
    use std::path::Path;

    #[test]
    fn the_driver_still_relays_a_tcp_connection_with_splice() {
        // An echo server for one connection, outside the sandbox.
        let (server, target) = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr().map(|a| (s, a)))
            .unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        // What the forwarding loop does: a host listener, a connection to
        // it, one to the target, bytes spliced through a pipe.
        let relay_once = move || -> std::io::Result<[u8; 5]> {
            use std::net::{TcpListener, TcpStream};
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let mut client = TcpStream::connect(listener.local_addr()?)?;
            let (accepted, _) = listener.accept()?;
            let mut inside = TcpStream::connect(target)?;
            client.write_all(b"hello")?;
            let (r, w) = nix::unistd::pipe()?;
            let flags = nix::fcntl::SpliceFFlags::empty();
            let n = nix::fcntl::splice(&accepted, None, &w, None, 5, flags)?;
            nix::fcntl::splice(&r, None, &inside, None, n, flags)?;
            let mut back = [0u8; 5];
            inside.read_exact(&mut back)?;
            Ok(back)
        };
        let code = run_confined(&driver_policy(true), || match relay_once() {
            Ok(back) => i32::from(&back != b"hello"),
            Err(e) => probe::errno_of::<()>(Err(e)),
        });
        assert_eq!(code, 0);
        echo.join().unwrap();
    }

    #[test]
    fn the_driver_may_not_open_files_exec_or_make_other_sockets() {
        let refused = [OPEN_A_FILE, UNIX_SOCKET, NETLINK_SOCKET];
        expect_all(&driver_policy(true), libc::EPERM, &refused).unwrap();
        expect_all(&driver_policy(true), libc::EPERM, NEVER).unwrap();
        let inet = run_confined(&driver_policy(false), probe::udp_socket);
        assert_eq!(inet, libc::EPERM, "AF_INET without forwarding");
    }

    #[test]
    fn the_helper_opens_the_net_tables_and_nothing_else() {
        let code = run_confined(&helper_policy(), || {
            let tables = ["tcp", "tcp6", "udp", "udp6"];
            for (i, t) in tables.iter().enumerate() {
                if probe::open(Path::new(NET_TABLES).join(t)) != 0 {
                    return 10 + i as i32;
                }
            }
            let diag = libc::NETLINK_SOCK_DIAG;
            if probe::socket(libc::AF_NETLINK, libc::SOCK_RAW, diag) != 0
                || probe::socket_of(libc::AF_INET6) != 0
            {
                return 20;
            }
            0
        });
        assert_eq!(code, 0);
        if rk_driver::confine::kernel_landlock_abi() > 0 {
            let other_file = run_confined(&helper_policy(), probe::open_a_file);
            assert_eq!(other_file, libc::EACCES, "a file outside the tables");
        }
        let refused = [UNIX_SOCKET, KILL];
        expect_all(&helper_policy(), libc::EPERM, &refused).unwrap();
        expect_all(&helper_policy(), libc::EPERM, NEVER).unwrap();
    }
}
