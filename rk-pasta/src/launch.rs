//! Starting pasta, waiting until the namespace is configured, and stopping
//! it.
//!
//! pasta runs in the foreground (`--foreground`) as our child, so that it
//! dies with the driver (PR_SET_PDEATHSIG) and its exit is seen at once
//! (pidfd). It writes its pid (`--pid`) to its stdout, a pipe, only after
//! it has set up the interface, addresses and routes in the namespace:
//! that write is the ready signal. Its log arrives on its stderr.

use crate::args::Ready;
use crate::output::Facts;
use crate::probe::PASTA;
use rk_driver::helper::spawn::pipe;
use rk_driver::helper::{HelperCommand, Progress, Running, StartError, Wake};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long pasta may take to configure the namespace.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
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

/// Errors in setting pasta up.
fn setup(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Setup {
        name: PASTA.name.to_owned(),
        what,
        source,
    }
}

/// A fix for the failures whose cause pasta's message does not name.
fn tap_hint(output: &[String]) -> &'static str {
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
    /// pasta's log is drained by the thread that [`Pasta::follow_output`]
    /// starts once the driver is confined, so that it runs inside the
    /// Landlock domain too; until then the pipe holds what pasta writes
    /// (64 KiB before pasta would block).
    running: Running,
}

/// A pasta that has been started and is setting the namespace up. Nothing
/// runs on other threads yet.
#[derive(Debug)]
pub struct Starting {
    pasta: Pasta,
    pid_reader: OwnedFd,
    path: PathBuf,
    /// For [`Ready::Sandboxed`]: the filters pasta inherited from us.
    sandboxed_above: Option<u32>,
}

impl Starting {
    /// Waits until the namespace is configured.
    pub fn wait_ready(self) -> Result<Pasta, StartError> {
        let Starting {
            mut pasta,
            pid_reader,
            path,
            sandboxed_above,
        } = self;
        pasta.wait_ready(pid_reader, &path, sandboxed_above)?;
        Ok(pasta)
    }
}

impl Pasta {
    /// Starts `path ARGS` and waits until the namespace is configured.
    #[cfg(test)]
    pub fn start(path: &Path, args: &[String]) -> Result<Pasta, StartError> {
        let mut pasta = Pasta::spawn(path, args, Ready::PidLine)?.wait_ready()?;
        pasta.follow_output().map_err(setup("log reader thread"))?;
        Ok(pasta)
    }

    /// Starts the thread that drains pasta's log from now on (call it
    /// once set-up is over and the process is confined).
    pub fn follow_output(&mut self) -> io::Result<()> {
        self.running.follow_output()
    }

    /// Starts `path ARGS`; [`Starting::wait_ready`] waits for it.
    pub fn spawn(path: &Path, args: &[String], ready: Ready) -> Result<Starting, StartError> {
        // pasta starts with our filters; one more means it sandboxed itself.
        let sandboxed_above = match ready {
            Ready::PidLine => None,
            Ready::Sandboxed => {
                let none =
                    || io::Error::other("no Seccomp_filters line (Linux 5.9 or later has it)");
                let filters = seccomp_filters("self").ok_or_else(none);
                Some(filters.map_err(setup("reading /proc/self/status"))?)
            }
        };
        let (pid_reader, pid_writer) = pipe().map_err(setup("pid pipe"))?;
        let (log_reader, log_writer) = pipe().map_err(setup("log pipe"))?;
        let mut helper = HelperCommand::new(PASTA, path);
        helper
            .command()
            .args(args)
            .stdout(Stdio::from(pid_writer))
            .stderr(Stdio::from(log_writer));
        // A session of its own, as pasta takes when it daemonizes.
        helper.new_session();
        let process = helper.spawn().map_err(StartError::Spawn)?;
        let output = crate::output::collect(log_reader).map_err(setup("log pipe"))?;
        Ok(Starting {
            pasta: Pasta {
                running: Running::new(process, output),
            },
            pid_reader,
            path: path.to_owned(),
            sandboxed_above,
        })
    }

    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// Readable once pasta has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.running.exit_fd()
    }

    /// What pasta said about the network it built.
    pub fn facts(&self) -> Facts {
        Facts::from_lines(&self.running.output.head())
    }

    /// Reads pasta's log while waiting for its pid on stdout. Reading both
    /// here, in one thread, means that when the pid arrives every line
    /// pasta printed before it (the facts about the network) is collected
    /// too.
    fn wait_ready(
        &mut self,
        pid_reader: OwnedFd,
        path: &Path,
        sandboxed_above: Option<u32>,
    ) -> Result<(), StartError> {
        let pid_pipe = std::fs::File::from(pid_reader);
        let pid = self.running.pid().to_string();
        let mut pid_text = Vec::new();
        let check = |wake| {
            if wake == Wake::Readable {
                let mut buf = [0u8; 32];
                match (&pid_pipe).read(&mut buf) {
                    Ok(0) => return Ok(Progress::GaveUp("it closed its standard output")),
                    Ok(n) => pid_text.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                if pid_text.contains(&b'\n') {
                    return Ok(Progress::Ready);
                }
            }
            let sandboxed =
                sandboxed_above.is_some_and(|ours| seccomp_filters(&pid).is_some_and(|n| n > ours));
            Ok(if sandboxed {
                Progress::Ready
            } else {
                Progress::Waiting
            })
        };
        let tick = sandboxed_above.map(|_| SANDBOX_POLL);
        let waited = self
            .running
            .wait_ready(path, pid_pipe.as_fd(), READY_TIMEOUT, tick, check);
        waited.map_err(|mut e| {
            if let StartError::EarlyExit { output, hint, .. } = &mut e {
                *hint = tap_hint(output);
            }
            e
        })?;
        // Lines written before the pid are in the pipe by now.
        self.running.output.drain_now();
        Ok(())
    }

    /// Says how pasta ended, once `exit_fd` turned readable.
    pub fn describe_exit(&mut self) -> String {
        self.running.describe_exit()
    }

    /// Sends SIGKILL to pasta and every process of its session (its own
    /// short-lived helpers), without waiting.
    pub fn kill_all(&self) {
        // pasta leads its own process group (setsid before exec).
        // SAFETY: kill with integer arguments; the group is pasta's, which
        // is our unreaped child, so its id cannot have been reused.
        unsafe { libc::kill(-(self.running.pid() as libc::pid_t), libc::SIGKILL) };
    }

    /// Kills pasta at once (it keeps no state worth a clean exit) and
    /// reaps it; rootlesskit's own exit waits for the driver's.
    pub fn stop(&mut self) {
        self.kill_all();
        self.running.kill();
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
#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Result<Pasta, StartError> {
        Pasta::start(Path::new("/bin/sh"), &["-c".to_owned(), script.to_owned()])
    }

    #[test]
    fn ready_when_the_pid_line_arrives_with_the_output_before_it() {
        let mut p =
            sh("echo 'NDP/DHCPv6:' >&2; echo '    assign: fd00::2' >&2; echo $$; exec sleep 30")
                .unwrap();
        assert_eq!(p.facts().ipv6_address, Some("fd00::2".parse().unwrap()));
        p.stop();
    }

    #[test]
    fn exit_before_ready_reports_status_and_output() {
        let e = sh("echo 'Failed to open tun socket in namespace' >&2; exit 3").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("pasta (/bin/sh) exited before the network was up (exit status: 3):\n  Failed to open tun socket in namespace\n(pasta could not create the tap device"), "{text}");
        let e = sh("exec >&-; sleep 0.1; echo gone >&2").unwrap_err();
        assert!(matches!(e, StartError::EarlyExit { .. }), "{e}");
    }

    #[test]
    fn exit_after_ready_is_described() {
        let mut p = sh("echo $$; echo bye >&2; exit 7").unwrap();
        assert!(rk_driver::process::wait_exit(p.exit_fd(), 5000));
        let text = p.describe_exit();
        assert_eq!(
            text,
            format!(
                "pasta (pid {}) exited unexpectedly (exit status: 7):\n  bye",
                p.pid()
            )
        );
    }
}
