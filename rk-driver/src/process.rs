//! Starting helper programs so that they die with their starter, and
//! noticing when they exit (through a pidfd that becomes readable).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

/// Makes `cmd` start with an empty signal mask: std does not reset it, and
/// rootlesskit blocks the signals it forwards.
pub fn reset_signal_mask(cmd: &mut Command) -> &mut Command {
    // SAFETY: sigemptyset and pthread_sigmask are async-signal-safe, as
    // required between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            Ok(())
        })
    }
}

/// Makes the descriptors `fds` (ours, close-on-exec) survive the exec of
/// `cmd`, under the same numbers: the one "these descriptors are
/// inherited" step of every program we start. The caller keeps them open
/// until `cmd` has been spawned; everything else stays close-on-exec.
pub fn keep_across_exec(cmd: &mut Command, fds: Vec<RawFd>) -> &mut Command {
    // SAFETY: between fork and exec the closure only calls fcntl, which is
    // async-signal-safe, and reads the vector allocated before fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// Makes `cmd` receive SIGKILL when the thread that spawns it exits, and
/// start with an empty signal mask.
pub fn kill_with_parent(cmd: &mut Command) -> &mut Command {
    reset_signal_mask(cmd);
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

/// Puts `cmd` in a process group of its own, so that a terminal's Ctrl-C
/// reaches rootlesskit (which shuts the driver down in order) and not the
/// driver directly.
pub fn own_process_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
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

/// Sends `signal` to the process of `pidfd` (no pid reuse race, and the one
/// call a confined driver keeps for its helpers: `kill(2)` could reach any
/// process of the user).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on a pidfd we hold, with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `ms` milliseconds for a pidfd to turn readable (the process
/// exited); `true` if it did.
pub fn wait_exit(pidfd: BorrowedFd<'_>, ms: u16) -> bool {
    crate::fdio::wait_readable(pidfd, std::time::Duration::from_millis(ms.into())).unwrap_or(false)
}

/// A started helper program that is killed when this value is dropped.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    pidfd: OwnedFd,
    /// SIGKILL was sent; nothing more to do on drop.
    killed: bool,
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
            killed: false,
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

    /// SIGKILL at once and reap, for programs that keep nothing worth a
    /// clean exit. Reaping is not optional: a driver must leave nothing
    /// behind, not even a zombie, when it exits (a process holding a tap
    /// device takes the kernel some milliseconds to tear down; that is part
    /// of the exit).
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
        self.killed = true;
    }

    /// Through the pidfd; `kill(2)` only where the kernel lacks
    /// pidfd_send_signal (before 5.1).
    fn signal(&mut self, signal: libc::c_int) {
        match pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                // SAFETY: signalling our own unreaped child by pid.
                unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
            }
            _ => {}
        }
    }

    /// SIGTERM, up to half a second's grace (woken by the pidfd the moment
    /// it exits), then SIGKILL; reaps it.
    pub fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal(libc::SIGTERM);
        if wait_exit(self.pidfd.as_fd(), 500) {
            let _ = self.child.wait();
            return;
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !self.killed {
            self.terminate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Stdio;

    #[test]
    fn a_supervised_program_is_stopped_and_reaped_when_dropped() {
        let p = Supervised::spawn("sleep", Command::new("sleep").arg("30")).unwrap();
        let pid = p.pid();
        assert_eq!(p.name(), "sleep");
        assert!(!wait_exit(p.exit_fd(), 50));
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "not reaped");
    }

    #[test]
    fn kept_descriptors_survive_the_exec_and_others_do_not() {
        use std::os::fd::AsRawFd;
        let kept = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        let (k, o) = (kept.as_raw_fd(), other.as_raw_fd());
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("test -e /proc/self/fd/{k} && ! test -e /proc/self/fd/{o}"),
        ]);
        keep_across_exec(&mut cmd, vec![k]);
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn the_pidfd_turns_readable_at_exit() {
        let mut p = Supervised::spawn("true", &mut Command::new("true")).unwrap();
        assert!(wait_exit(p.exit_fd(), 5000));
        assert!(p.try_wait().unwrap().unwrap().success());
    }

    #[test]
    fn programs_start_with_an_empty_signal_mask() {
        // SAFETY: blocks SIGUSR1 in this test's thread only.
        unsafe {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
        }
        let mut cmd = Command::new("grep");
        cmd.args(["^SigBlk:", "/proc/self/status"])
            .stdout(Stdio::piped());
        kill_with_parent(&mut cmd);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), "SigBlk:\t0000000000000000");
    }
}
