//! Cleaning up after a driver that was killed.
//!
//! The kernel deletes the veth only when the child's network namespace is
//! destroyed, and that waits for the last process in it. When rootlesskit
//! is SIGKILLed, the driver dies with it (PDEATHSIG), but CMD's own children
//! may live on in the namespace (without `--pidns` nothing kills them), and
//! with them the veth on the bridge (counting against the user's
//! lxc-usernet quota) and the DHCP lease.
//!
//! So the driver forks a small guard that holds copies of the DHCP and
//! netlink sockets and a pipe from the driver. When the pipe reaches EOF,
//! the driver is gone or done, however it ended: the guard releases the
//! lease (unless the driver said it did) and deletes the veth, then exits.
//! On an orderly shutdown the driver waits for that and reaps the guard, so
//! that nothing of it is left when rootlesskit returns (an orphan would
//! stay a zombie until init gets round to it, 1–2 s on some machines).
//!
//! Once it has left the driver's session and descriptors, the guard confines
//! itself (`crate::confinement::guard_policy`): socket calls on the two
//! sockets it holds, nothing else.

use nix::unistd::{pipe2, read, write};
use rk_dhcp::{Client, Destination, SERVER_PORT};
use rk_driver::netlink::{Link, NetlinkSocket};
use rk_driver::nsexec::{close_other_fds, Resident};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Written by the driver when it released the lease itself.
const RELEASED: u8 = 1;

/// How long an orderly shutdown waits for the guard (a release and a
/// netlink request: milliseconds) before it kills it.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct CleanupGuard {
    pipe: OwnedFd,
    /// Signalled only through its pidfd: the confined driver may not
    /// kill(2) a pid.
    process: Resident,
    /// Reaches EOF once the guard has confined itself.
    confined: Option<OwnedFd>,
}

impl CleanupGuard {
    /// Forks the guard with its own copy of `client` (and so of the lease).
    /// The caller must be single-threaded.
    pub fn spawn(
        socket: &UdpSocket,
        netlink: &OwnedFd,
        link: &Link,
        client: &Client,
    ) -> Result<Self, rk_driver::nsexec::NsExecError> {
        let pipe = |what| {
            pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| rk_driver::nsexec::NsExecError::Helper(format!("{what}: {e}")))
        };
        let (from_driver, to_guard) = pipe("the guard's pipe")?;
        let (confined_r, confined_w) = pipe("the guard's confinement pipe")?;
        // In the guard, `detach` closes the driver's ends (`to_guard`,
        // `confined_r`); in the driver, dropping the closure closes the
        // guard's.
        let guard = move || {
            let keep = [
                from_driver.as_raw_fd(),
                socket.as_raw_fd(),
                netlink.as_raw_fd(),
                confined_w.as_raw_fd(),
            ];
            detach(&keep);
            // Its stderr is closed: what applied is not reported, and
            // a kernel that refuses leaves it working unconfined.
            let _ = crate::confinement::guard_policy().apply();
            drop(confined_w);
            clean_up(&from_driver, socket, netlink, link, client.clone());
            0
        };
        // The guard must outlive the driver: no PDEATHSIG.
        let process = Resident::spawn("the cleanup guard", None, false, guard)?;
        Ok(CleanupGuard {
            pipe: to_guard,
            process,
            confined: Some(confined_r),
        })
    }

    /// Waits (up to a second) until the guard has confined itself, so that
    /// CMD never runs beside an unconfined guard. It confines itself while
    /// the driver does the same, so this rarely waits at all.
    pub fn wait_confined(&mut self) {
        if let Some(fd) = self.confined.take() {
            let _ = rk_driver::fdio::wait_readable(fd.as_fd(), Duration::from_secs(1));
        }
    }

    /// Has the guard clean up now (`released`: the driver released the
    /// lease itself), waits for it to finish and reaps it.
    pub fn finish(self, released: bool) {
        if released {
            let _ = write(&self.pipe, &[RELEASED]);
        }
        drop(self.pipe);
        let pid = self.process.pid();
        if !self.process.finish(FINISH_TIMEOUT) {
            log::warn!(
                "the cleanup guard (pid {pid}) did not finish within {} ms; killed it",
                FINISH_TIMEOUT.as_millis()
            );
        }
    }
}

/// The guard's work: wait until the driver is gone or done, release the
/// lease (unless the driver did) and delete the veth.
fn clean_up(
    from_driver: &OwnedFd,
    socket: &UdpSocket,
    netlink: &OwnedFd,
    link: &Link,
    mut client: Client,
) {
    let mut byte = [0u8; 1];
    let released = loop {
        match read(from_driver.as_fd(), &mut byte) {
            Ok(1) => break byte[0] == RELEASED,
            Err(nix::Error::EINTR) => continue,
            _ => break false,
        }
    };
    if !released {
        if let Some(t) = client.release(Instant::now()) {
            let to = match t.destination {
                Destination::Broadcast => Ipv4Addr::BROADCAST,
                Destination::Server(ip) => ip,
            };
            let _ = socket.send_to(&t.payload, (to, SERVER_PORT));
        }
    }
    let _ = NetlinkSocket::on(netlink.as_fd(), 0).delete_link(link);
}

/// Leaves the driver's session and descriptors: a Ctrl-C at the terminal
/// must not kill the guard before it cleaned up, and it must keep neither
/// the driver's protocol socket (the core would not see the driver go) nor
/// its output open (whoever reads rootlesskit's output would wait for it).
fn detach(keep: &[std::os::fd::RawFd]) {
    // SAFETY: setsid and signal with constant arguments.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    close_other_fds(keep);
}
