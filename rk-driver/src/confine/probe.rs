//! Testing a policy: [`run_confined`] applies it in a forked child and runs
//! a probe there; the probes below each try one thing a confined process
//! might do and return 0 when it worked, else the errno (so a test reads
//! `assert_eq!(run_confined(&policy, probe::exec_true), libc::EPERM)`).
//! Every driver's confinement tests use these, so that each test says only
//! what its policy allows and refuses.

use super::Confinement;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

/// The exit status [`run_confined`] reports for a child killed by
/// SIGSYS (a refused call under [`super::OnViolation::Kill`]).
pub const KILLED: i32 = 1000 + libc::SIGSYS;

/// For tests of a policy: forks; the child applies `policy` (exit status
/// 100 if seccomp could not be installed) and runs `probe`, whose result
/// is its exit status. Returns that status, or 1000 + the signal that
/// killed the child (e.g. [`KILLED`]).
pub fn run_confined(policy: &Confinement, probe: impl FnOnce() -> i32) -> i32 {
    run_forked(|| match policy.apply() {
        Ok(r) if r.seccomp => probe(),
        _ => 100,
    })
}

/// Forks and runs `body` in the child; returns its exit status (its
/// result), or 1000 + the signal that killed it; -1 if fork failed.
pub fn run_forked(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the caller may be multi-threaded (a test harness); the child
    // only runs `body` and _exits, without running the parent's
    // destructors.
    match unsafe { libc::fork() } {
        0 => {
            let code = body();
            // SAFETY: leave without running the harness's code.
            unsafe { libc::_exit(code) }
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waiting for the child just forked.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1000 + libc::WTERMSIG(status)
            }
        }
        _ => -1,
    }
}

/// 0 for `Ok`, else the error's errno (99 without one).
pub fn errno_of<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(99),
    }
}

/// 0 for a non-negative return of a system call, else the errno.
pub fn errno_if_negative(r: libc::c_long) -> i32 {
    if r >= 0 {
        0
    } else {
        errno_of::<()>(Err(io::Error::last_os_error()))
    }
}

/// Opens `path` for reading.
pub fn open(path: impl AsRef<std::path::Path>) -> i32 {
    errno_of(std::fs::File::open(path))
}

/// Opens `/etc/hostname`: a file no relay or driver needs.
pub fn open_a_file() -> i32 {
    open("/etc/hostname")
}

/// Executes `path` (`/bin/true` exits 0 once executed).
pub fn exec(path: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    errno_of::<()>(Err(std::process::Command::new(path).exec()))
}

pub fn exec_true() -> i32 {
    exec("/bin/true")
}

/// Makes a socket (closed again at once).
pub fn socket(family: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> i32 {
    // SAFETY: socket(2) with integer arguments; a descriptor is owned
    // (and closed) right away.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd >= 0 {
        // SAFETY: just created, owned by nothing else.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    errno_if_negative(fd.into())
}

/// A socket of `family` of the type that family has (raw for netlink and
/// packet sockets, a stream otherwise).
pub fn socket_of(family: libc::c_int) -> i32 {
    let ty = match family {
        libc::AF_NETLINK | libc::AF_PACKET => libc::SOCK_RAW,
        _ => libc::SOCK_STREAM,
    };
    socket(family, ty, 0)
}

pub fn unix_socket() -> i32 {
    socket_of(libc::AF_UNIX)
}

pub fn netlink_socket() -> i32 {
    socket_of(libc::AF_NETLINK)
}

pub fn packet_socket() -> i32 {
    socket_of(libc::AF_PACKET)
}

/// A TCP socket over IPv4.
pub fn tcp_socket() -> i32 {
    socket_of(libc::AF_INET)
}

/// A TCP socket over IPv6.
pub fn tcp6_socket() -> i32 {
    socket_of(libc::AF_INET6)
}

/// Binds a new UDP socket on 127.0.0.1.
pub fn udp_socket() -> i32 {
    errno_of(std::net::UdpSocket::bind("127.0.0.1:0"))
}

/// PTRACE_ATTACH to the parent.
pub fn ptrace_parent() -> i32 {
    // SAFETY: PTRACE_ATTACH on our parent with null pointers; refused by
    // the filter before the kernel looks at it.
    errno_if_negative(unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            libc::getppid(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    })
}

/// kill(2) with signal 0 (a permission check) to the parent.
pub fn kill_parent() -> i32 {
    // SAFETY: kill(2) with signal 0 only checks.
    errno_if_negative(unsafe { libc::kill(libc::getppid(), 0) }.into())
}

/// setns(2) into a network namespace (on descriptor 0, whatever it is:
/// the filter refuses before the kernel looks).
pub fn setns_net() -> i32 {
    // SAFETY: setns with integer arguments.
    errno_if_negative(unsafe { libc::setns(0, libc::CLONE_NEWNET) }.into())
}

/// How a process under `policy` may signal a helper it supervises:
/// (SIGKILL through a pidfd it holds, kill(2) of another process). Starts
/// `sleep 30` for the first; the helper is gone when this returns `Ok`.
pub fn signal_helpers(policy: &Confinement) -> io::Result<(i32, i32)> {
    let mut helper = std::process::Command::new("sleep").arg("30").spawn()?;
    let pidfd = crate::process::pidfd_open(helper.id())?;
    let through_pidfd = run_confined(policy, move || {
        errno_of(crate::process::pidfd_send_signal(
            pidfd.as_fd(),
            libc::SIGKILL,
        ))
    });
    if through_pidfd != 0 {
        let _ = helper.kill();
    }
    helper.wait()?;
    Ok((through_pidfd, run_confined(policy, kill_parent)))
}

/// A probe, and what it tries (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Probe(pub &'static str, pub fn() -> i32);

pub const OPEN_A_FILE: Probe = Probe("opening /etc/hostname", open_a_file);
pub const EXEC: Probe = Probe("exec", exec_true);
pub const PTRACE: Probe = Probe("ptrace", ptrace_parent);
pub const SETNS: Probe = Probe("setns", setns_net);
pub const KILL: Probe = Probe("kill(2) of another process", kill_parent);
pub const UNIX_SOCKET: Probe = Probe("an AF_UNIX socket", unix_socket);
pub const NETLINK_SOCKET: Probe = Probe("an AF_NETLINK socket", netlink_socket);
pub const PACKET_SOCKET: Probe = Probe("an AF_PACKET socket", packet_socket);
pub const TCP_SOCKET: Probe = Probe("a TCP socket", tcp_socket);
pub const TCP6_SOCKET: Probe = Probe("a TCP socket over IPv6", tcp6_socket);
pub const UDP_SOCKET: Probe = Probe("a UDP socket", udp_socket);

/// What no process of ours may do once confined, whatever its policy:
/// execute a program, trace another, join a namespace.
pub const NEVER: &[Probe] = &[EXEC, PTRACE, SETNS];

/// Runs each probe under `policy`; `Err` lists those that did not end
/// with `expected` (0, an errno, or [`KILLED`]), and what they gave.
pub fn expect_all(policy: &Confinement, expected: i32, probes: &[Probe]) -> Result<(), String> {
    let wrong: Vec<String> = probes
        .iter()
        .map(|Probe(what, probe)| (what, run_confined(policy, probe)))
        .filter(|(_, got)| *got != expected)
        .map(|(what, got)| format!("{what}: {got}"))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {}", wrong.join(", ")))
    }
}
