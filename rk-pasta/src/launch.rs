//! Starting pasta, waiting until the namespace is configured, and stopping
//! it.
//!
//! pasta runs in the foreground (`--foreground`) as our child, so that it
//! dies with the driver (PR_SET_PDEATHSIG) and its exit is seen at once
//! (pidfd). It writes its pid (`--pid`) to its stdout, a pipe, only after
//! it has set up the interface, addresses and routes in the namespace:
//! that write is the ready signal. Its log arrives on its stderr.

use crate::args::Ready;
use crate::output::{format_block, Output};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rk_driver::process::Supervised;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long pasta may take to configure the namespace.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the last output of a pasta that has exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// Below this many open files (the hard limit, which pasta cannot raise)
/// pasta's socket and pipe pools (about 80 descriptors in 2023_03_09) can
/// take every descriptor before it opens its `--pid` file.
pub const LOW_FILE_LIMIT: u64 = 256;
/// How often a pasta started without `--pid` is looked at.
const SANDBOX_POLL: Duration = Duration::from_millis(2);

/// How to learn that pasta is ready, given the open-file limit pasta
/// inherits.
pub fn readiness() -> Ready {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok && limit.rlim_max < LOW_FILE_LIMIT {
        Ready::Sandboxed
    } else {
        Ready::PidLine
    }
}

/// The number of seccomp filters of process `pid` ("self" for this one).
fn seccomp_filters(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("setting up pasta: {what}: {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
    #[error("starting {}: {source}", path.display())]
    Spawn { path: PathBuf, source: io::Error },
    #[error(
        "pasta ({}) exited before the network was up ({status}){}{}",
        path.display(), format_block(output), hint(output)
    )]
    EarlyExit {
        path: PathBuf,
        status: String,
        output: Vec<String>,
    },
    #[error(
        "pasta ({}) did not finish setting up the network within {}s{}",
        path.display(), READY_TIMEOUT.as_secs(), format_block(output)
    )]
    Timeout { path: PathBuf, output: Vec<String> },
}

/// A fix for the failures whose cause pasta's message does not name.
fn hint(output: &[String]) -> &'static str {
    if output.iter().any(|l| l.contains("tun socket")) {
        "\n(pasta could not create the tap device: /dev/net/tun must be readable and \
         writable by you, and --ifname must not name an existing interface)"
    } else {
        ""
    }
}

/// A running pasta. Dropping it stops the program.
#[derive(Debug)]
pub struct Pasta {
    process: Supervised,
    output: Output,
    /// pasta's log pipe between readiness and [`Pasta::follow_output`]:
    /// the thread that drains it starts only once the driver is confined,
    /// so that it runs inside the Landlock domain too.
    log: Option<OwnedFd>,
}

/// A pasta that has been started and is setting the namespace up. Nothing
/// runs on other threads yet.
#[derive(Debug)]
pub struct Starting {
    pasta: Pasta,
    pid_reader: OwnedFd,
    log_reader: OwnedFd,
    path: PathBuf,
    /// For [`Ready::Sandboxed`]: the filters pasta inherited from us.
    sandboxed_above: Option<u32>,
}

impl Starting {
    /// Waits until the namespace is configured.
    pub fn wait_ready(self) -> Result<Pasta, LaunchError> {
        let Starting {
            mut pasta,
            pid_reader,
            log_reader,
            path,
            sandboxed_above,
        } = self;
        pasta.wait_ready(pid_reader, log_reader, &path, sandboxed_above)?;
        Ok(pasta)
    }
}

impl Pasta {
    /// Starts `path ARGS` and waits until the namespace is configured.
    #[cfg(test)]
    pub fn start(path: &Path, args: &[String], debug: bool) -> Result<Pasta, LaunchError> {
        let mut pasta = Pasta::spawn(path, args, Ready::PidLine, debug)?.wait_ready()?;
        pasta.follow_output().map_err(|source| LaunchError::Setup {
            what: "log reader thread",
            source,
        })?;
        Ok(pasta)
    }

    /// Starts the thread that drains pasta's log from now on (call it
    /// once set-up is over and the process is confined). Until then the
    /// pipe holds what pasta writes (64 KiB before pasta would block).
    pub fn follow_output(&mut self) -> io::Result<()> {
        match self.log.take() {
            Some(reader) => {
                set_nonblocking(reader.as_fd(), false)?;
                self.output.drain_in_background(reader)
            }
            None => Ok(()),
        }
    }

    /// Starts `path ARGS`; [`Starting::wait_ready`] waits for it.
    pub fn spawn(
        path: &Path,
        args: &[String],
        ready: Ready,
        debug: bool,
    ) -> Result<Starting, LaunchError> {
        // pasta starts with our filters; one more means it sandboxed itself.
        let sandboxed_above = match ready {
            Ready::PidLine => None,
            Ready::Sandboxed => {
                Some(seccomp_filters("self").ok_or_else(|| LaunchError::Setup {
                    what: "reading /proc/self/status",
                    source: io::Error::other("no Seccomp_filters line (Linux 5.9 or later has it)"),
                })?)
            }
        };
        let setup = |what| move |source| LaunchError::Setup { what, source };
        let (pid_reader, pid_writer) = pipe().map_err(setup("pid pipe"))?;
        let (log_reader, log_writer) = pipe().map_err(setup("log pipe"))?;
        let mut cmd = Command::new(path);
        cmd.args(args)
            .env_remove(rk_driver::DRIVER_FD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(pid_writer))
            .stderr(Stdio::from(log_writer));
        // A session of its own, as pasta takes when it daemonizes: with the
        // scheduler's autogroups (the default on desktop kernels) the
        // network then gets its own share of the CPU instead of competing
        // with CMD's processes inside rootlesskit's session, and no
        // terminal's signals reach it.
        // SAFETY: setsid is async-signal-safe; it cannot fail in a child
        // that was just forked (it is no process group leader).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            })
        };
        if debug {
            eprintln!("rk-pasta: running {cmd:?}");
        }
        let process =
            Supervised::spawn("pasta", &mut cmd).map_err(|source| LaunchError::Spawn {
                path: path.to_owned(),
                source,
            })?;
        // Our copies of the write ends must go, so that pasta's exit shows
        // up as EOF.
        drop(cmd);
        Ok(Starting {
            pasta: Pasta {
                process,
                output: Output::new(debug),
                log: None,
            },
            pid_reader,
            log_reader,
            path: path.to_owned(),
            sandboxed_above,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Readable once pasta has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.process.exit_fd()
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Reads pasta's log while waiting for its pid on stdout. Reading both
    /// here, in one thread, means that when the pid arrives every line
    /// pasta printed before it (the facts about the network) is in
    /// `output` too.
    fn wait_ready(
        &mut self,
        pid_reader: OwnedFd,
        log_reader: OwnedFd,
        path: &Path,
        sandboxed_above: Option<u32>,
    ) -> Result<(), LaunchError> {
        let setup = |what| move |source| LaunchError::Setup { what, source };
        set_nonblocking(log_reader.as_fd(), true).map_err(setup("log pipe"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pid_pipe = std::fs::File::from(pid_reader);
        let mut log_open = true;
        let mut pid_text = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LaunchError::Timeout {
                    path: path.to_owned(),
                    output: self.output.last_lines(Duration::ZERO),
                });
            }
            let left = match sandboxed_above {
                Some(_) => left.min(SANDBOX_POLL),
                None => left,
            };
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = vec![
                PollFd::new(pid_pipe.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.process.exit_fd(), PollFlags::POLLIN),
            ];
            if log_open {
                fds.push(PollFd::new(log_reader.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(setup("waiting for pasta")(e.into())),
            }
            let fired = |i: usize| {
                fds.get(i)
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            };
            let (pid_fired, exited, log_fired) = (fired(0), fired(1), fired(2));
            drop(fds);
            if log_fired {
                log_open = self.read_available(&log_reader);
            }
            if pid_fired {
                let mut buf = [0u8; 32];
                match pid_pipe.read(&mut buf) {
                    Ok(0) => return Err(self.early_exit(path, log_reader)),
                    Ok(n) => pid_text.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(setup("reading pasta's pid")(e)),
                }
                if pid_text.contains(&b'\n') {
                    break;
                }
            }
            if exited {
                return Err(self.early_exit(path, log_reader));
            }
            if let Some(ours) = sandboxed_above {
                let pid = self.process.pid().to_string();
                if seccomp_filters(&pid).is_some_and(|n| n > ours) {
                    break;
                }
            }
        }
        // Lines written before the pid are in the pipe by now.
        self.read_available(&log_reader);
        self.log = Some(log_reader);
        Ok(())
    }

    /// Reads what the log pipe holds without blocking; `false` at EOF.
    fn read_available(&self, reader: &OwnedFd) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(reader.as_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.output.feed(&buf[..n]),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
    }

    fn early_exit(&mut self, path: &Path, log_reader: OwnedFd) -> LaunchError {
        rk_driver::process::wait_exit(self.process.exit_fd(), OUTPUT_GRACE.as_millis() as u16);
        let status = match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "it closed its standard output".to_owned(),
        };
        let _ = set_nonblocking(log_reader.as_fd(), false);
        let _ = self.output.drain_in_background(log_reader);
        LaunchError::EarlyExit {
            path: path.to_owned(),
            status,
            output: self.output.last_lines(OUTPUT_GRACE),
        }
    }

    /// Says how pasta ended, once `exit_fd` turned readable.
    pub fn describe_exit(&mut self) -> String {
        let status = match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".to_owned(),
            Err(e) => e.to_string(),
        };
        format!(
            "pasta (pid {}) exited unexpectedly ({status}){}",
            self.process.pid(),
            format_block(&self.output.last_lines(OUTPUT_GRACE))
        )
    }

    /// Sends SIGKILL to pasta and every process of its session (its own
    /// short-lived helpers), without waiting.
    pub fn kill_all(&self) {
        // pasta leads its own process group (setsid before exec).
        // SAFETY: kill with integer arguments; the group is pasta's, which
        // is our unreaped child, so its id cannot have been reused.
        unsafe { libc::kill(-(self.process.pid() as libc::pid_t), libc::SIGKILL) };
    }

    /// Kills pasta at once (it keeps no state worth a clean exit) and
    /// reaps it; rootlesskit's own exit waits for the driver's.
    pub fn stop(&mut self) {
        self.kill_all();
        self.process.kill();
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes this process the reaper of its orphaned descendants, so that
/// pasta's helpers (which it does not always wait for) come back to the
/// driver when pasta exits, and [`reap_orphans`] can reap them instead of
/// leaving zombies for init.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps every child left (orphans adopted as subreaper included) until
/// none is left, or `limit` has passed.
pub fn reap_orphans(limit: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            // ECHILD: nothing is left.
            Err(_) => return,
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Result<Pasta, LaunchError> {
        Pasta::start(
            Path::new("/bin/sh"),
            &["-c".to_owned(), script.to_owned()],
            false,
        )
    }

    #[test]
    fn ready_when_the_pid_line_arrives_with_the_output_before_it() {
        let mut p =
            sh("echo 'NDP/DHCPv6:' >&2; echo '    assign: fd00::2' >&2; echo $$; exec sleep 30")
                .unwrap();
        assert_eq!(
            p.output().facts().ipv6_address,
            Some("fd00::2".parse().unwrap())
        );
        p.stop();
    }

    #[test]
    fn exit_before_ready_reports_status_and_output() {
        let e = sh("echo 'Failed to open tun socket in namespace' >&2; exit 3").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("pasta (/bin/sh) exited before the network was up (exit status: 3):\n  Failed to open tun socket in namespace\n(pasta could not create the tap device"), "{text}");
        let e = sh("exec >&-; sleep 0.1; echo gone >&2").unwrap_err();
        assert!(matches!(e, LaunchError::EarlyExit { .. }), "{e}");
    }

    #[test]
    fn exit_after_ready_is_described() {
        let mut p = sh("echo $$; echo bye >&2; exit 7").unwrap();
        assert!(rk_driver::process::wait_exit(p.exit_fd(), 5000));
        let text = p.describe_exit();
        assert!(
            text.contains("exited unexpectedly (exit status: 7):\n  bye"),
            "{text}"
        );
    }
}
