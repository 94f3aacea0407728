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

/// The driver's policy. `memory_dir`: where the MAC slot's last address is
/// kept (the renewal thread rewrites it when the server hands out another
/// one); the only path it may touch. Files stay allowed for that and for
/// releasing the slot's lock (flock) at exit; Landlock allows nothing else.
/// It supervises the guard (SIGKILL through its pidfd, reaping it).
pub fn driver_policy(memory_dir: Option<&Path>) -> Confinement {
    let c = guard_policy().allow(Calls::Files).allow(Calls::Supervise);
    match memory_dir {
        Some(dir) => c.write(dir),
        None => c,
    }
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
    use rk_driver::confine::probe::{self, *};
    use std::net::UdpSocket;

    /// Landlock's refusal (best effort: a kernel without it allows).
    fn landlock_refusal() -> i32 {
        if rk_driver::confine::kernel_landlock_abi() > 0 {
            libc::EACCES
        } else {
            0
        }
    }

    #[test]
    fn the_driver_keeps_its_address_memory_and_sockets_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("rk-lxc-confine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let memory = crate::mac::AddressMemory::at(dir.join("lxcbr0.0.address"));
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let to = b.local_addr().unwrap();
        let policy = driver_policy(Some(&dir));
        let code = run_confined(&policy, move || {
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
        let outside = run_confined(&policy, probe::open_a_file);
        assert_eq!(
            outside,
            landlock_refusal(),
            "a file outside the memory directory"
        );
        let refused = [UDP_SOCKET, KILL];
        expect_all(&policy, libc::EPERM, &refused).unwrap();
        expect_all(&policy, libc::EPERM, NEVER).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_memory_the_driver_may_open_no_file() {
        let code = run_confined(&driver_policy(None), || probe::open(std::env::temp_dir()));
        assert_eq!(code, landlock_refusal());
    }

    #[test]
    fn the_guard_sends_on_what_it_holds_and_may_do_nothing_else() {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        let to = b.local_addr().unwrap();
        let code = run_confined(&guard_policy(), move || {
            probe::errno_of(a.send_to(b"release", to))
        });
        assert_eq!(code, 0);
        let mut buf = [0u8; 8];
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 7);
        let refused = [OPEN_A_FILE, UDP_SOCKET, NETLINK_SOCKET];
        expect_all(&guard_policy(), libc::EPERM, &refused).unwrap();
        expect_all(&guard_policy(), libc::EPERM, NEVER).unwrap();
    }
}
