//! The confinement of the driver and of its cleanup guard once set-up is
//! over (docs/security.md).
//!
//! lxc-user-nic (set-user-ID root) is the only program the driver runs, and
//! only once, while it configures; from then on:
//! - the driver answers the core, renews the DHCP lease on a thread over
//!   the UDP socket it already holds (remembering a new address in the MAC
//!   slot's directory), and at shutdown releases the lease, has the guard
//!   delete the veth over the NETLINK_ROUTE socket it already holds (or
//!   does that itself), and reaps the guard;
//! - the guard waits on a pipe, then sends a DHCP release and an
//!   RTM_DELLINK on the sockets it inherited, and exits.
//!
//! Neither creates a socket, starts a program or needs `no_new_privs` off
//! (deleting the veth needs no lxc-user-nic: the netlink socket opened in
//! the child's namespaces may delete it). A refused call fails with EPERM
//! (`OnViolation::Deny`): a lease that cannot be renewed or released must
//! end in a message that says so, not in a dead driver whose veth stays on
//! the bridge.

use rk_driver::confine::{Calls, Confinement, OnViolation};
use std::path::Path;

/// The system calls of supervising the guard: SIGKILL through the pidfd
/// opened when it was forked (no kill(2)), and reaping it (wait only ever
/// reaps one's own children). The base group's tgkill, kept for raise and
/// abort, still reaches other processes (docs/security.md).
pub const SUPERVISE: &[libc::c_long] = &[
    libc::SYS_pidfd_send_signal,
    libc::SYS_wait4,
    libc::SYS_waitid,
];

/// The driver's policy. `memory_dir`: where the MAC slot's last address is
/// kept (the renewal thread rewrites it when the server hands out another
/// one); the only path it may touch. Files stay allowed for that and for
/// releasing the slot's lock (flock) at exit; Landlock allows nothing else.
pub fn driver_policy(memory_dir: Option<&Path>) -> Confinement {
    let mut c = Confinement::new()
        .allow(Calls::Files)
        .allow(Calls::Sockets)
        .allow_syscalls(SUPERVISE)
        .on_violation(OnViolation::Deny);
    if let Some(dir) = memory_dir {
        c = c.write(dir);
    }
    c
}

/// The guard's policy: the base calls and the socket calls on what it
/// holds; no file, no new socket, no process.
pub fn guard_policy() -> Confinement {
    Confinement::new()
        .allow(Calls::Sockets)
        .on_violation(OnViolation::Deny)
}

/// Applies `policy` to the whole process and says what applied, for the
/// `sandbox` entry of the configured answer. A kernel that refuses is
/// reported, not fatal.
pub fn confine(policy: &Confinement) -> String {
    policy.apply_or_warn("rk-lxc-user-nic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn in_confined_child(policy: Confinement, probe: impl FnOnce() -> i32) -> i32 {
        rk_driver::confine::run_confined(&policy, probe)
    }

    fn errno_of(e: std::io::Error) -> i32 {
        e.raw_os_error().unwrap_or(99)
    }

    fn open(path: &Path) -> i32 {
        match std::fs::File::open(path) {
            Ok(_) => 0,
            Err(e) => errno_of(e),
        }
    }

    fn exec_true() -> i32 {
        errno_of(std::os::unix::process::CommandExt::exec(
            &mut std::process::Command::new("/bin/true"),
        ))
    }

    fn new_udp_socket() -> i32 {
        match UdpSocket::bind("127.0.0.1:0") {
            Ok(_) => 0,
            Err(e) => errno_of(e),
        }
    }

    fn landlock() -> bool {
        rk_driver::confine::kernel_landlock_abi() > 0
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rk-lxc-confine-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_driver_keeps_its_address_memory_and_sockets_and_nothing_else() {
        let dir = temp_dir("driver");
        let memory = crate::mac::AddressMemory::at(dir.join("lxcbr0.0.address"));
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let to = b.local_addr().unwrap();
        let code = in_confined_child(driver_policy(Some(&dir)), move || {
            // The renewal thread: a datagram on a socket it holds, and the
            // new address remembered.
            let t = std::thread::spawn(move || {
                memory.store(std::net::Ipv4Addr::new(10, 0, 3, 7));
                a.send_to(b"renew", to).is_ok()
            });
            if !t.join().unwrap_or(false) {
                return 1;
            }
            let mut buf = [0u8; 8];
            match b.recv_from(&mut buf) {
                Ok((5, _)) => 0,
                _ => 2,
            }
        });
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(dir.join("lxcbr0.0.address")).unwrap(),
            "10.0.3.7\n"
        );
        let outside = in_confined_child(driver_policy(Some(&dir)), || {
            open(Path::new("/etc/hostname"))
        });
        // Landlock's refusal (best effort: a kernel without it opens).
        let expected = if landlock() { libc::EACCES } else { 0 };
        assert_eq!(outside, expected, "a file outside the memory directory");
        let exec = in_confined_child(driver_policy(Some(&dir)), exec_true);
        assert_eq!(exec, libc::EPERM, "exec, lxc-user-nic included");
        let udp = in_confined_child(driver_policy(Some(&dir)), new_udp_socket);
        assert_eq!(udp, libc::EPERM, "a new socket");
        let signal = in_confined_child(driver_policy(Some(&dir)), || {
            // SAFETY: kill(2) with signal 0 only checks; refused here.
            if unsafe { libc::kill(libc::getppid(), 0) } == 0 {
                0
            } else {
                errno_of(std::io::Error::last_os_error())
            }
        });
        assert_eq!(signal, libc::EPERM, "kill(2) of another process");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_memory_the_driver_may_open_no_file() {
        let code = in_confined_child(driver_policy(None), || open(&std::env::temp_dir()));
        assert_eq!(code, if landlock() { libc::EACCES } else { 0 });
    }

    #[test]
    fn the_guard_sends_on_what_it_holds_and_may_do_nothing_else() {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let to = b.local_addr().unwrap();
        let code = in_confined_child(guard_policy(), move || {
            i32::from(a.send_to(b"release", to).is_err())
        });
        assert_eq!(code, 0);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 7);
        let opened = in_confined_child(guard_policy(), || open(Path::new("/etc/hostname")));
        assert_eq!(opened, libc::EPERM, "opening a file");
        assert_eq!(in_confined_child(guard_policy(), exec_true), libc::EPERM);
        assert_eq!(
            in_confined_child(guard_policy(), new_udp_socket),
            libc::EPERM
        );
        let netlink = in_confined_child(guard_policy(), || {
            // SAFETY: socket(2) with constant arguments; only the result is read.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) };
            if fd >= 0 {
                0
            } else {
                errno_of(std::io::Error::last_os_error())
            }
        });
        assert_eq!(netlink, libc::EPERM, "a new netlink socket");
    }
}
