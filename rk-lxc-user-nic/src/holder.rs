//! A process inside a detached network namespace.
//!
//! lxc-user-nic names the target namespace by a pid. Without
//! `--detach-netns` that is the child's pid; with it the namespace has no
//! process (it is only pinned by a bind mount), so the driver forks one that
//! joins it and waits, for as long as lxc-user-nic runs.

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, read, write, ForkResult, Pid};
use rk_driver::DriverError;
use std::os::fd::{AsFd, BorrowedFd};

/// Killed and reaped when dropped.
#[derive(Debug)]
pub struct NetnsHolder {
    pid: Pid,
}

impl NetnsHolder {
    /// Forks a process that joins `userns` and `netns`. The caller must be
    /// single-threaded (only the calling thread survives the fork).
    pub fn spawn(userns: BorrowedFd<'_>, netns: BorrowedFd<'_>) -> Result<Self, DriverError> {
        let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| DriverError::new(format!("pipe: {e}")))?;
        // SAFETY: the child only calls async-signal-safe functions (prctl,
        // setns, write, pause, _exit) before it is killed.
        match unsafe { fork() }.map_err(|e| DriverError::new(format!("fork: {e}")))? {
            ForkResult::Child => {
                drop(ready_r);
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
                let joined = setns(userns, CloneFlags::CLONE_NEWUSER)
                    .and_then(|()| setns(netns, CloneFlags::CLONE_NEWNET))
                    .is_ok();
                let _ = write(&ready_w, &[u8::from(joined)]);
                if !joined {
                    // SAFETY: leaves the forked copy without running the
                    // parent's destructors.
                    unsafe { libc::_exit(1) };
                }
                loop {
                    // SAFETY: pause has no preconditions; the parent kills us.
                    unsafe { libc::pause() };
                }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                let holder = NetnsHolder { pid: child };
                let mut byte = [0u8; 1];
                let ok = wait_readable(ready_r.as_fd())
                    && matches!(read(ready_r.as_fd(), &mut byte), Ok(1))
                    && byte[0] == 1;
                if !ok {
                    return Err(DriverError::new(
                        "could not start a process in the detached network namespace \
                         (joining it failed)",
                    ));
                }
                Ok(holder)
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }
}

fn wait_readable(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::from(10_000u16)), Ok(n) if n > 0)
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}
