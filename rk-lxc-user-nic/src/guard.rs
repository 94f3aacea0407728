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

use crate::link;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, read, write, ForkResult, Pid};
use rk_dhcp::{Client, Destination, SERVER_PORT};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Written by the driver when it released the lease itself.
const RELEASED: u8 = 1;

/// How long an orderly shutdown waits for the guard (a release and a
/// netlink request: milliseconds) before it kills it.
const FINISH_TIMEOUT_MS: u16 = 2000;

#[derive(Debug)]
pub struct CleanupGuard {
    pipe: OwnedFd,
    pid: Pid,
    /// Opened at once, while set-up may still open one: the confined driver
    /// signals the guard only through it (no kill(2) of a pid).
    pidfd: Option<OwnedFd>,
    /// Reaches EOF once the guard has confined itself.
    confined: Option<OwnedFd>,
}

impl CleanupGuard {
    /// Forks the guard with its own copy of `client` (and so of the lease).
    /// The caller must be single-threaded.
    pub fn spawn(
        socket: &UdpSocket,
        netlink: &OwnedFd,
        index: u32,
        client: &Client,
    ) -> std::io::Result<Self> {
        let (from_driver, to_guard) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (confined_r, confined_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the process is single-threaded here (see above), so the
        // child may run ordinary code.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop((to_guard, confined_r));
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
                let mut client = client.clone();
                let mut byte = [0u8; 1];
                let released = loop {
                    match read(from_driver.as_fd(), &mut byte) {
                        Ok(1) => break byte[0] == RELEASED,
                        Ok(_) => break false,
                        Err(nix::Error::EINTR) => continue,
                        Err(_) => break false,
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
                let _ = link::delete(netlink, index);
                // SAFETY: ends the forked copy without running the driver's
                // destructors (they would act on the driver's state).
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop((from_driver, confined_w));
                Ok(CleanupGuard {
                    pipe: to_guard,
                    pid: child,
                    pidfd: rk_driver::process::pidfd_open(child.as_raw() as u32).ok(),
                    confined: Some(confined_r),
                })
            }
        }
    }

    /// Waits (up to a second) until the guard has confined itself, so that
    /// CMD never runs beside an unconfined guard. It confines itself while
    /// the driver does the same, so this rarely waits at all.
    pub fn wait_confined(&mut self) {
        if let Some(fd) = self.confined.take() {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
        }
    }

    /// Has the guard clean up now (`released`: the driver released the
    /// lease itself), waits for it to finish and reaps it.
    pub fn finish(self, released: bool) {
        if released {
            let _ = write(&self.pipe, &[RELEASED]);
        }
        drop(self.pipe);
        let exited = match &self.pidfd {
            Some(fd) => rk_driver::process::wait_exit(fd.as_fd(), FINISH_TIMEOUT_MS),
            None => false,
        };
        if let (false, Some(fd)) = (exited, &self.pidfd) {
            eprintln!(
                "rk-lxc-user-nic: the cleanup guard (pid {}) did not finish within {} ms; killing it",
                self.pid, FINISH_TIMEOUT_MS
            );
            let _ = rk_driver::process::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
        }
        // Without a pidfd (kernel before 5.3) this blocks until it is done.
        let _ = waitpid(self.pid, None);
    }
}

/// Leaves the driver's session and descriptors: a Ctrl-C at the terminal
/// must not kill the guard before it cleaned up, and it must keep neither
/// the driver's protocol socket (the core would not see the driver go) nor
/// its output open (whoever reads rootlesskit's output would wait for it).
fn detach(keep: &[RawFd]) {
    // SAFETY: setsid and signal with constant arguments.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if !keep.contains(&fd) {
            // SAFETY: closing a descriptor of this forked copy that nothing
            // in it uses (the directory listing's own is already closed).
            unsafe { libc::close(fd) };
        }
    }
}
