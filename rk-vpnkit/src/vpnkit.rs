//! Starting the vpnkit program and connecting to its ethernet socket.

use crate::settings::{Settings, BINARY_OPTION};
use rk_driver::helper::ready::{self, Wake};
use rk_driver::helper::spawn::pipe;
use rk_driver::helper::{Env, HelperCommand, OutputTail, Program, Running};
use rk_driver::lookup::LookupError;
use rk_driver::{Context, DriverError};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long vpnkit may take to listen on its socket (RootlessKit's limit).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// vpnkit as the user knows it.
const VPNKIT: Program = Program {
    name: "vpnkit",
    flag: BINARY_OPTION,
    install: "install vpnkit (https://github.com/moby/vpnkit)",
    env: Env::Inherit,
};

/// A running vpnkit, killed when dropped. Its output stays out of the
/// user's terminal (as RootlessKit does) unless `--debug`, but its last
/// lines go into error messages.
pub struct Vpnkit {
    running: Running,
}

impl Vpnkit {
    /// Starts `vpnkit --ethernet SOCK --mtu N [--host-ip 0.0.0.0]`.
    pub fn start(settings: &Settings) -> Result<Self, DriverError> {
        // A socket left by a run that was killed would make vpnkit fail to
        // listen; the core holds the state directory's lock, so it is ours.
        let _ = std::fs::remove_file(&settings.socket);
        let path = locate(&settings.binary)?;
        let (read, write) = pipe().context("vpnkit's output pipe")?;
        let mut helper = HelperCommand::new(VPNKIT, &path);
        helper
            .command()
            .args(settings.vpnkit_args())
            .stdout(Stdio::from(
                write.try_clone().context("vpnkit's output pipe")?,
            ))
            .stderr(Stdio::from(write));
        let process = helper.spawn().context(format_args!("--{BINARY_OPTION}"))?;
        let output = OutputTail::new(read, "vpnkit")
            .context("vpnkit's output pipe")?
            .keeping(0, 12);
        Ok(Vpnkit {
            running: Running::new(process, output),
        })
    }

    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// Connects to the ethernet socket once vpnkit listens on it.
    pub fn connect(&mut self, settings: &Settings) -> Result<UnixStream, DriverError> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        let socket = settings.socket.display();
        loop {
            match UnixStream::connect(&settings.socket) {
                Ok(s) => return Ok(s),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => {
                    return Err(DriverError::new(format!(
                        "connecting to vpnkit's socket {socket}: {e}"
                    )))
                }
            }
            let running = &self.running;
            let wake = ready::wait(
                None,
                running.exit_fd(),
                Some(&running.output),
                deadline,
                Some(pause),
            )
            .context("waiting for vpnkit")?;
            pause = (pause * 2).min(Duration::from_millis(10));
            let binary = &settings.binary;
            match wake {
                Wake::Tick | Wake::Readable => {}
                Wake::Exited => {
                    let status = self.running.early_exit_status("it is still running");
                    return Err(DriverError::new(format!(
                        "vpnkit ({binary}) exited with {status} before it listened on {socket}{}",
                        self.said()
                    )));
                }
                Wake::TimedOut => {
                    return Err(DriverError::new(format!(
                        "vpnkit ({binary}) did not listen on {socket} within {}s{}",
                        LISTEN_TIMEOUT.as_secs(),
                        self.said()
                    )))
                }
            }
        }
    }

    /// `"; vpnkit said:\n..."` with its last lines, or nothing, to append
    /// to a message.
    pub fn said(&self) -> String {
        let lines = self.running.output.last_lines(Duration::ZERO);
        if lines.is_empty() {
            return String::new();
        }
        format!("; vpnkit said:\n{}", lines.join("\n"))
    }

    /// Drains vpnkit's output on a thread from now on. Start it only after
    /// the last fork (the namespace helper) and the confinement.
    pub fn follow_output(&mut self) -> io::Result<()> {
        self.running.follow_output()
    }

    /// A sentence on how vpnkit ended, if it has (the socket may close a
    /// moment before the process is reaped), with its last words when it
    /// exited by itself.
    pub fn exit_note(&mut self) -> Option<String> {
        rk_driver::process::wait_exit(self.running.exit_fd(), 500);
        let status = self.running.process.try_wait().ok().flatten()?;
        let said = if status.code().is_some() {
            self.said()
        } else {
            String::new()
        };
        Some(format!(
            "vpnkit (pid {}) exited: {status}{said}",
            self.pid()
        ))
    }

    /// Kills vpnkit at once: it holds no state worth a graceful stop, and
    /// gvproxy, which stands in for it in tests, ignores SIGTERM while a
    /// client is connected.
    pub fn kill(&mut self) {
        self.running.kill();
    }
}

/// The program to run, found with the SDK's lookup (absolute `$PATH`
/// entries only), with this driver's words for what is wrong.
fn locate(binary: &str) -> Result<PathBuf, DriverError> {
    VPNKIT.find(binary).map_err(|e| {
        let hint = format!("{} or point --{BINARY_OPTION} at it", VPNKIT.install);
        DriverError::new(match e.cause {
            LookupError::NotInPath { .. } => {
                format!("vpnkit binary {binary:?} not found in $PATH (--{BINARY_OPTION}): {hint}")
            }
            LookupError::NoSuchFile(_) => {
                format!("vpnkit binary {binary} not found (--{BINARY_OPTION}): {hint}")
            }
            LookupError::NotExecutable(_) => {
                format!("vpnkit binary {binary} is not executable (--{BINARY_OPTION}): {e}")
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_errors_name_the_flag() {
        let e = locate("/nonexistent/vpnkit").unwrap_err();
        assert!(
            e.0.contains("/nonexistent/vpnkit not found (--vpnkit-binary)"),
            "{e}"
        );
        let e = locate("no-such-vpnkit-anywhere").unwrap_err();
        assert!(e.0.contains("not found in $PATH (--vpnkit-binary)"), "{e}");
        let e = locate("/etc/passwd").unwrap_err();
        assert!(e.0.contains("/etc/passwd is not executable"), "{e}");
        assert_eq!(locate("/bin/sh").unwrap(), PathBuf::from("/bin/sh"));
    }
}
