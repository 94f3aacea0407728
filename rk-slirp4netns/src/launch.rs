//! Starting slirp4netns with the namespaces as inherited descriptors,
//! waiting until it is ready, and stopping it.

use crate::args::{ChildFds, Invocation};
use crate::network::Network;
use crate::output::{format_block, OutputTail};
use crate::plan::Plan;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rk_driver::process::Supervised;
use rk_driver::NamespaceFds;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long slirp4netns may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the last output of a program that has exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("setting up slirp4netns: {what}: {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
    #[error("starting {}{}: {source}", path.display(), if *in_userns { " inside the child's user namespace (for the sandbox)" } else { "" })]
    Spawn {
        path: PathBuf,
        in_userns: bool,
        source: io::Error,
    },
    #[error("slirp4netns ({}) exited before the network was ready ({status}){}", path.display(), format_block(output))]
    EarlyExit {
        path: PathBuf,
        status: String,
        output: Vec<String>,
    },
    #[error(
        "slirp4netns ({}) did not report ready within {}s{}",
        path.display(), READY_TIMEOUT.as_secs(), format_block(output)
    )]
    Timeout { path: PathBuf, output: Vec<String> },
}

/// A running slirp4netns. Dropping it stops the program.
#[derive(Debug)]
pub struct Slirp {
    /// Closing this makes slirp4netns exit (its `--exit-fd` sees HUP).
    exit_writer: Option<OwnedFd>,
    process: Supervised,
    stderr: OutputTail,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub network: &'a Network,
    pub plan: &'a Plan,
    pub disable_host_loopback: bool,
    pub api_socket: Option<&'a Path>,
    /// Echo slirp4netns's output to our stderr.
    pub debug: bool,
}

impl Launch<'_> {
    /// Starts slirp4netns on `namespaces` and waits until it is ready.
    ///
    /// With the sandbox, slirp4netns is started inside the child's user
    /// namespace: slirp4netns (1.2 and 1.3 alike) ignores `--userns-path`
    /// when it sets the sandbox up, and then fails unprivileged with
    /// "setegid(0)" (slirp4netns#317). Entering the namespace first is what
    /// slirp4netns itself does when given a pid, and makes the sandbox work
    /// with `--detach-netns` too. Its sockets stay in the host's network
    /// namespace either way.
    pub fn start(&self, namespaces: &NamespaceFds) -> Result<Slirp, LaunchError> {
        let setup = |what| move |source| LaunchError::Setup { what, source };
        let join_userns = self.plan.sandbox;

        // The descriptors slirp4netns gets, all numbered ≥ 3 so that setting
        // up its stdio cannot overwrite them.
        let netns = for_child(namespaces.netns.as_fd()).map_err(setup("netns descriptor"))?;
        let userns = for_child(namespaces.userns.as_fd()).map_err(setup("userns descriptor"))?;
        let (ready_reader, ready_writer) = pipe().map_err(setup("ready pipe"))?;
        let ready_writer = for_child(ready_writer.as_fd()).map_err(setup("ready pipe"))?;
        let (exit_reader, exit_writer) = pipe().map_err(setup("exit pipe"))?;
        let exit_reader = for_child(exit_reader.as_fd()).map_err(setup("exit pipe"))?;
        let (stderr_reader, stderr_writer) = pipe().map_err(setup("stderr pipe"))?;

        let fds = ChildFds {
            netns: netns.as_raw_fd(),
            userns: (!join_userns).then(|| userns.as_raw_fd()),
            ready: ready_writer.as_raw_fd(),
            exit: exit_reader.as_raw_fd(),
        };
        let invocation = Invocation::new(
            self.network,
            self.plan,
            self.disable_host_loopback,
            self.api_socket,
            fds,
        );
        let stdout = if self.debug {
            Stdio::from(
                io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(setup("stdout"))?,
            )
        } else {
            Stdio::null()
        };
        let mut cmd = Command::new(self.binary);
        crate::binary::clean_environment(&mut cmd)
            .args(invocation.args())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(stderr_writer));
        let inherit: Vec<RawFd> = [Some(fds.netns), fds.userns, Some(fds.ready), Some(fds.exit)]
            .into_iter()
            .flatten()
            .collect();
        let join = join_userns.then(|| userns.as_raw_fd());
        // SAFETY: between fork and exec the closure only calls fcntl and
        // setns, which are async-signal-safe, on descriptors that stay open
        // until `cmd` is dropped, and reads the vector allocated before fork.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(fd) = join {
                    if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        if self.debug {
            eprintln!("rk-slirp4netns: running {cmd:?}");
        }
        let process =
            Supervised::spawn("slirp4netns", &mut cmd).map_err(|source| LaunchError::Spawn {
                path: self.binary.to_owned(),
                in_userns: join_userns,
                source,
            })?;
        // Our copies of what slirp4netns holds must go, so that its exit
        // shows up as EOF on the ready and stderr pipes.
        drop(cmd);
        drop((netns, userns, ready_writer, exit_reader));

        let stderr = OutputTail::new(stderr_reader, "slirp4netns", self.debug)
            .map_err(setup("stderr pipe"))?;
        let mut slirp = Slirp {
            exit_writer: Some(exit_writer),
            process,
            stderr,
        };
        slirp.wait_ready(ready_reader, self.binary)?;
        Ok(slirp)
    }
}

impl Slirp {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Drains slirp4netns's output on a thread from now on: called once
    /// the driver is confined, so that the thread starts inside its
    /// Landlock domain.
    pub fn follow_output(&mut self) -> io::Result<()> {
        self.stderr.follow()
    }

    /// Readable once slirp4netns has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.process.exit_fd()
    }

    fn wait_ready(&mut self, ready: OwnedFd, path: &Path) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = std::fs::File::from(ready);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LaunchError::Timeout {
                    path: path.to_owned(),
                    output: self.stderr.last_lines(Duration::ZERO),
                });
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = vec![
                PollFd::new(ready.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.process.exit_fd(), PollFlags::POLLIN),
            ];
            // Its output is drained here until the driver, confined, starts
            // a thread for it (`follow_output`).
            if let Some(fd) = self.stderr.fd() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    return Err(LaunchError::Setup {
                        what: "waiting for ready",
                        source: e.into(),
                    })
                }
            }
            let fired = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            let (ready_fired, exit_fired, output_fired) = (fired(0), fired(1), fired(2));
            drop(fds);
            if output_fired {
                self.stderr.drain_now();
                if !ready_fired && !exit_fired {
                    continue;
                }
            }
            if ready_fired {
                let mut buf = [0u8; 16];
                match ready.read(&mut buf) {
                    Ok(n) if n > 0 => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // EOF: it closed the pipe without saying ready, so it is
                    // on its way out.
                    _ => {}
                }
            }
            return Err(self.early_exit(path));
        }
    }

    fn early_exit(&mut self, path: &Path) -> LaunchError {
        wait_readable(self.process.exit_fd(), OUTPUT_GRACE);
        let status = match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "it closed its ready descriptor".to_owned(),
        };
        LaunchError::EarlyExit {
            path: path.to_owned(),
            status,
            output: self.stderr.last_lines(OUTPUT_GRACE),
        }
    }

    /// Says how slirp4netns ended, once `exit_fd` turned readable.
    pub fn describe_exit(&mut self) -> String {
        let status = match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".to_owned(),
            Err(e) => e.to_string(),
        };
        format!(
            "slirp4netns exited unexpectedly: {status}{}",
            format_block(&self.stderr.last_lines(OUTPUT_GRACE))
        )
    }

    /// Closes the exit descriptor and kills slirp4netns at once: it keeps no
    /// state worth a clean exit, and rootlesskit's own exit waits for this
    /// (slirp4netns takes 10–30 ms to notice its exit descriptor or SIGTERM).
    pub fn stop(&mut self) {
        let started = Instant::now();
        let running = self.exit_writer.is_some();
        drop(self.exit_writer.take());
        // Through its pidfd, not kill(2): the confined driver may signal no
        // other process (docs/security.md).
        if let Ok(None) = self.process.try_wait() {
            if rk_driver::process::pidfd_send_signal(self.process.exit_fd(), libc::SIGKILL).is_ok()
            {
                rk_driver::process::wait_exit(self.process.exit_fd(), 2000);
            }
        }
        // Reaps it (and, unconfined on a kernel without pidfd_send_signal,
        // kills it by pid).
        self.process.kill();
        if running && rk_driver::debug_enabled() {
            // Mostly the kernel removing the tap as its descriptor closes.
            eprintln!(
                "rk-slirp4netns: slirp4netns (pid {}) killed and reaped in {:.1} ms",
                self.process.pid(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// A close-on-exec duplicate numbered 3 or above.
fn for_child(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Waits up to `timeout` for `fd` to turn readable.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => return n > 0,
            Err(nix::Error::EINTR) if !left.is_zero() => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_for_the_child_avoid_stdio_numbers_and_close_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let dup = for_child(file.as_fd()).unwrap();
        assert!(dup.as_raw_fd() >= 3);
        let flags = fcntl(dup.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn early_exit_error_shows_status_and_output() {
        let e = LaunchError::EarlyExit {
            path: PathBuf::from("/usr/bin/slirp4netns"),
            status: "exit status: 1".to_owned(),
            output: vec!["bind: No such file or directory".to_owned()],
        };
        assert_eq!(
            e.to_string(),
            "slirp4netns (/usr/bin/slirp4netns) exited before the network was ready \
             (exit status: 1):\n  bind: No such file or directory"
        );
    }
}
