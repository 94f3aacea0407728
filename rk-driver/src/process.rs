//! Starting helper programs so that they die with their starter, and
//! noticing when they exit (through a pidfd that becomes readable).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

/// Makes `cmd` receive SIGKILL when the thread that spawns it exits.
pub fn kill_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and kill are async-signal-safe, as required
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        })
    };
    cmd
}

/// Opens a pidfd for `pid`: it turns readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A started helper program that is killed when this value is dropped.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    pidfd: OwnedFd,
}

impl Supervised {
    /// Spawns `cmd` with [`kill_with_parent`].
    pub fn spawn(name: &str, cmd: &mut Command) -> io::Result<Self> {
        kill_with_parent(cmd);
        let child = cmd.spawn()?;
        let pidfd = pidfd_open(child.id())?;
        Ok(Supervised {
            name: name.to_owned(),
            child,
            pidfd,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Readable once the process has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// A sentence saying how it ended, for error messages.
    pub fn describe_exit(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(st)) => format!("{} (pid {}) exited: {}", self.name, self.pid(), st),
            Ok(None) => format!("{} (pid {}) is still running", self.name, self.pid()),
            Err(e) => format!("{} (pid {}): {}", self.name, self.pid(), e),
        }
    }

    /// SIGTERM, a short grace period, then SIGKILL; reaps it.
    pub fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own unreaped child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.terminate();
    }
}
