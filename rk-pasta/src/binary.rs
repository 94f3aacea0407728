//! Locating the pasta program and running it briefly (`--help`,
//! `--version`) with a time limit.

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{access, AccessFlags};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--help` or `--version` may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Output beyond this is not kept (`--help` is about 4 KiB).
const MAX_OUTPUT: usize = 64 * 1024;
/// `execvp`'s search path when `$PATH` is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(
        "pasta not found (looked for {0:?} in $PATH): install passt \
         (e.g. apt-get install passt) or pass --pasta-binary=PATH"
    )]
    NotInPath(String),
    #[error("pasta not found at {0}: install passt or fix --pasta-binary")]
    NoSuchFile(PathBuf),
    #[error("{0} is not an executable file: fix --pasta-binary")]
    NotExecutable(PathBuf),
    #[error("running \"{} {arg}\": {source}", path.display())]
    Spawn {
        path: PathBuf,
        arg: &'static str,
        source: io::Error,
    },
    #[error(
        "\"{} {arg}\" did not finish within {}s: is it pasta? fix --pasta-binary",
        path.display(), RUN_TIMEOUT.as_secs()
    )]
    Timeout { path: PathBuf, arg: &'static str },
}

/// Resolves `binary` like `execvp` would, so that errors come before
/// anything is started and name what was looked for.
pub fn resolve(binary: &str, path_var: Option<&OsStr>) -> Result<PathBuf, BinaryError> {
    if binary.contains('/') {
        let path = std::env::current_dir()
            .map(|cwd| cwd.join(binary))
            .unwrap_or_else(|_| PathBuf::from(binary));
        return match executable(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(BinaryError::NotExecutable(path)),
            None => Err(BinaryError::NoSuchFile(path)),
        };
    }
    let dirs = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(dirs)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate) == Some(true))
        .ok_or_else(|| BinaryError::NotInPath(binary.to_owned()))
}

/// `None`: no such file; `Some(executable)` otherwise.
fn executable(path: &Path) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.is_file() && access(path, AccessFlags::X_OK).is_ok())
}

/// What a short run printed and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub success: bool,
    /// stdout and stderr together.
    pub text: String,
}

/// Runs `path arg` with a time limit and returns its combined output. The
/// exit status is reported, not judged: pasta 2023_03_09 exits 1 after
/// printing its `--help`.
pub fn run(path: &Path, arg: &'static str) -> Result<RunOutput, BinaryError> {
    let spawn_err = |source| BinaryError::Spawn {
        path: path.to_owned(),
        arg,
        source,
    };
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let mut child = {
        let mut cmd = Command::new(path);
        cmd.arg(arg)
            .env_remove(rk_driver::DRIVER_FD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone().map_err(spawn_err)?))
            .stderr(Stdio::from(writer));
        rk_driver::process::kill_with_parent(&mut cmd);
        cmd.spawn().map_err(spawn_err)?
        // `cmd` holds our copies of the pipe's write end; they close here so
        // that the reader sees EOF when the program exits.
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    let finished = read_until_eof(reader, deadline).and_then(|text| {
        let pidfd = rk_driver::process::pidfd_open(child.id()).ok();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, text));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match &pidfd {
                Some(fd) => {
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let _ = poll(
                        &mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)],
                        PollTimeout::from(ms),
                    );
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    match finished {
        Some((status, text)) => Ok(RunOutput {
            success: status.success(),
            text,
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(BinaryError::Timeout {
                path: path.to_owned(),
                arg,
            })
        }
    }
}

/// Reads until EOF (or a read error); `None` when the deadline passes first.
fn read_until_eof(reader: OwnedFd, deadline: Instant) -> Option<String> {
    let mut file = std::fs::File::from(reader);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(
            &mut [PollFd::new(file.as_fd(), PollFlags::POLLIN)],
            PollTimeout::from(ms),
        ) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() < MAX_OUTPUT => out.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_names_what_was_looked_for_and_the_fix() {
        let e = resolve("no-such-pasta", Some(OsStr::new("/usr/bin:/bin"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pasta not found (looked for \"no-such-pasta\" in $PATH): install passt \
             (e.g. apt-get install passt) or pass --pasta-binary=PATH"
        );
        let e = resolve("/nonexistent", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pasta not found at /nonexistent: install passt or fix --pasta-binary"
        );
        let e = resolve("/etc", None).unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
    }

    #[test]
    fn output_and_status_of_a_short_run_are_returned() {
        let out = run(Path::new("/bin/sh"), "--no-such-option").unwrap();
        assert!(!out.success);
        assert!(!out.text.is_empty());
        let out = run(Path::new("/bin/echo"), "--version").unwrap();
        assert!(out.success);
    }
}
