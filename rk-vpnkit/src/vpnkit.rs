//! Starting the vpnkit program and connecting to its ethernet socket.

use crate::settings::{Settings, BINARY_OPTION};
use crate::stderr_tail::StderrTail;
use rk_driver::lookup::{find_program, unsafe_permissions, LookupError};
use rk_driver::process::Supervised;
use rk_driver::DriverError;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long vpnkit may take to listen on its socket (RootlessKit's limit).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running vpnkit, killed when dropped.
pub struct Vpnkit {
    pub process: Supervised,
    pub stderr: Arc<StderrTail>,
}

impl Vpnkit {
    /// Starts `vpnkit --ethernet SOCK --mtu N [--host-ip 0.0.0.0]`.
    pub fn start(settings: &Settings, debug: bool) -> Result<Self, DriverError> {
        // A socket left by a run that was killed would make vpnkit fail to
        // listen; the core holds the state directory's lock, so it is ours.
        let _ = std::fs::remove_file(&settings.socket);
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| DriverError::new(format!("pipe: {e}")))?;
        let stderr = StderrTail::new(read, debug)?;
        let path = locate(&settings.binary)?;
        let mut cmd = Command::new(&path);
        cmd.args(settings.vpnkit_args())
            .env_remove(rk_driver::DRIVER_FD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write));
        // rootlesskit may start drivers with the signals it forwards
        // blocked (they feed its signalfd); vpnkit must not inherit that.
        // SAFETY: sigemptyset and sigprocmask are async-signal-safe, as
        // required between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let process =
            Supervised::spawn("vpnkit", &mut cmd).map_err(|e| spawn_error(&settings.binary, &e))?;
        Ok(Vpnkit { process, stderr })
    }

    /// Connects to the ethernet socket once vpnkit listens on it.
    pub fn connect(&mut self, settings: &Settings) -> Result<UnixStream, DriverError> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let mut pause = Duration::from_millis(2);
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
                        "connecting to vpnkit's socket {}: {e}",
                        settings.socket.display()
                    )))
                }
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                return Err(DriverError::new(format!(
                    "vpnkit ({}) exited with {status} before it listened on {}{}",
                    settings.binary,
                    settings.socket.display(),
                    self.stderr.suffix()
                )));
            }
            if Instant::now() > deadline {
                return Err(DriverError::new(format!(
                    "vpnkit ({}) did not listen on {} within {}s{}",
                    settings.binary,
                    settings.socket.display(),
                    LISTEN_TIMEOUT.as_secs(),
                    self.stderr.suffix()
                )));
            }
            self.stderr.drain();
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// A sentence on how vpnkit ended, if it has.
    pub fn exit_note(&mut self) -> Option<String> {
        // The socket may close a moment before the process is reaped.
        for _ in 0..50 {
            if let Ok(Some(status)) = self.process.try_wait() {
                return Some(format!(
                    "vpnkit (pid {}) exited: {status}",
                    self.process.pid()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills vpnkit at once: it holds no state worth a graceful stop, and
    /// gvproxy, which stands in for it in tests, ignores SIGTERM while a
    /// client is connected.
    pub fn kill(&mut self) {
        let started = Instant::now();
        // Through its pidfd, not kill(2), which the confined driver may not
        // make (docs/security.md): then `terminate` finds it exited and
        // only reaps it.
        if let Ok(None) = self.process.try_wait() {
            let fd = self.process.exit_fd();
            if rk_driver::process::pidfd_send_signal(fd, libc::SIGKILL).is_ok() {
                // A SIGKILLed process goes at once; bounded all the same.
                for _ in 0..10 {
                    if rk_driver::process::wait_exit(fd, 1000) {
                        break;
                    }
                }
            }
        }
        self.process.terminate();
        if rk_driver::debug_enabled() {
            eprintln!(
                "rk-vpnkit: vpnkit (pid {}) killed and reaped in {:.1} ms",
                self.process.pid(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

/// The program to run, found with the SDK's lookup: a bare name only in
/// the absolute directories of `$PATH` (never the current directory, which
/// `execvp` would search for an empty or `.` entry). A program someone other
/// than root and this user could replace is used, with a warning.
fn locate(binary: &str) -> Result<PathBuf, DriverError> {
    let path = find_program(binary).map_err(|e| {
        let kind = match e {
            LookupError::NoSuchFile(_) | LookupError::NotInPath { .. } => io::ErrorKind::NotFound,
            LookupError::NotExecutable(_) => io::ErrorKind::PermissionDenied,
        };
        spawn_error(binary, &io::Error::new(kind, e.to_string()))
    })?;
    if let Some(why) = unsafe_permissions(&path) {
        eprintln!("rk-vpnkit: warning: {why}");
    }
    Ok(path)
}

fn spawn_error(binary: &str, e: &io::Error) -> DriverError {
    let hint =
        format!("install vpnkit (https://github.com/moby/vpnkit) or point --{BINARY_OPTION} at it");
    DriverError::new(match e.kind() {
        io::ErrorKind::NotFound if binary.contains('/') => {
            format!("vpnkit binary {binary} not found (--{BINARY_OPTION}): {hint}")
        }
        io::ErrorKind::NotFound => {
            format!("vpnkit binary {binary:?} not found in $PATH (--{BINARY_OPTION}): {hint}")
        }
        io::ErrorKind::PermissionDenied => {
            format!("vpnkit binary {binary} is not executable (--{BINARY_OPTION}): {e}")
        }
        _ => format!("starting vpnkit binary {binary} (--{BINARY_OPTION}): {e}"),
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

    #[test]
    fn missing_binary_names_the_flag() {
        let e = spawn_error("/nonexistent", &io::Error::from(io::ErrorKind::NotFound));
        assert!(
            e.0.contains("/nonexistent not found (--vpnkit-binary)"),
            "{e}"
        );
        let e = spawn_error("vpnkit", &io::Error::from(io::ErrorKind::NotFound));
        assert!(e.0.contains("$PATH"), "{e}");
    }
}
