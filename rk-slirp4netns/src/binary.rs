//! Locating the slirp4netns program and running it briefly (`--help`,
//! `--version`) with a time limit.

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{access, AccessFlags};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long `--help` or `--version` may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Output beyond this is not kept (`--help` is about 2 KiB).
const MAX_OUTPUT: usize = 64 * 1024;
/// `execvp`'s search path when `$PATH` is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(
        "slirp4netns not found (looked for {0:?} in PATH): install slirp4netns ≥ 0.4 \
         or pass --slirp4netns-binary"
    )]
    NotInPath(String),
    #[error("slirp4netns not found at {0}: install slirp4netns ≥ 0.4 or fix --slirp4netns-binary")]
    NoSuchFile(PathBuf),
    #[error("{0} is not an executable file: fix --slirp4netns-binary")]
    NotExecutable(PathBuf),
    #[error("running \"{} {arg}\": {source}", path.display())]
    Spawn {
        path: PathBuf,
        arg: &'static str,
        source: io::Error,
    },
    #[error(
        "\"{} {arg}\" failed ({status}){}: is it slirp4netns ≥ 0.4? fix --slirp4netns-binary",
        path.display(), quote_tail(output)
    )]
    Failed {
        path: PathBuf,
        arg: &'static str,
        status: ExitStatus,
        output: String,
    },
    #[error(
        "\"{} {arg}\" did not finish within {}s: is it slirp4netns? fix --slirp4netns-binary",
        path.display(), RUN_TIMEOUT.as_secs()
    )]
    Timeout { path: PathBuf, arg: &'static str },
}

/// The last three lines of `output`, quoted, after a colon.
fn quote_tail(output: &str) -> String {
    let lines: Vec<&str> = output.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {:?}", lines[lines.len().saturating_sub(3)..].join("\n"))
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

/// Runs `path arg` with a time limit; returns its combined output, or
/// [`BinaryError::Failed`] if it exits unsuccessfully.
pub fn run(path: &Path, arg: &'static str) -> Result<String, BinaryError> {
    let spawn_err = |source| BinaryError::Spawn {
        path: path.to_owned(),
        arg,
        source,
    };
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let mut child = {
        let mut cmd = Command::new(path);
        cmd.arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone().map_err(spawn_err)?))
            .stderr(Stdio::from(writer));
        rk_driver::process::kill_with_parent(&mut cmd);
        cmd.spawn().map_err(spawn_err)?
        // `cmd` holds our copies of the pipe's write end; it drops here so
        // that the reader sees EOF when the program exits.
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    // The output ended: the program has exited or is about to.
    let finished = read_until_eof(reader, deadline)
        .and_then(|output| wait_until(&mut child, deadline).map(|status| (status, output)));
    let Some((status, output)) = finished else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(BinaryError::Timeout {
            path: path.to_owned(),
            arg,
        });
    };
    if !status.success() {
        return Err(BinaryError::Failed {
            path: path.to_owned(),
            arg,
            status,
            output,
        });
    }
    Ok(output)
}

/// Waits for `child` to exit, sleeping on its pidfd; `None` at the deadline.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    let pidfd = rk_driver::process::pidfd_open(child.id()).ok();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
            }
            None => std::thread::sleep(Duration::from_millis(1)),
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
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn missing_binary_error_names_what_was_looked_for_and_the_fix() {
        let e = resolve("no-such-slirp4netns", Some(OsStr::new("/usr/bin:/bin"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "slirp4netns not found (looked for \"no-such-slirp4netns\" in PATH): \
             install slirp4netns ≥ 0.4 or pass --slirp4netns-binary"
        );
        let e = resolve("/nonexistent/slirp4netns", None).unwrap_err();
        assert!(matches!(e, BinaryError::NoSuchFile(_)), "{e}");
    }

    #[test]
    fn path_lookup_skips_non_executables_and_relative_entries() {
        let dir = std::env::temp_dir().join(format!("rk-s4-binary-{}", std::process::id()));
        let plain = dir.join("plain");
        let exec = dir.join("exec");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&exec).unwrap();
        std::fs::write(plain.join("tool"), "").unwrap();
        std::fs::write(exec.join("tool"), "").unwrap();
        std::fs::set_permissions(exec.join("tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path_var =
            std::env::join_paths(["relative", plain.to_str().unwrap(), exec.to_str().unwrap()])
                .unwrap();
        assert_eq!(resolve("tool", Some(&path_var)).unwrap(), exec.join("tool"));
        // Without any execute bit even root may not run it.
        let e = resolve(plain.join("tool").to_str().unwrap(), None).unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
        let e = resolve(plain.to_str().unwrap(), None).unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_program_is_reported_with_its_last_output() {
        let e = run(Path::new("/bin/sh"), "--no-such-option").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, BinaryError::Failed { .. }), "{text}");
        assert!(
            text.starts_with("\"/bin/sh --no-such-option\" failed (exit status: 2)"),
            "{text}"
        );
        assert!(text.contains("--slirp4netns-binary"), "{text}");
    }

    #[test]
    fn output_of_a_successful_run_is_returned() {
        let out = run(Path::new("/usr/bin/slirp4netns"), "--version").unwrap();
        assert!(out.starts_with("slirp4netns version "), "{out}");
    }

    #[test]
    fn tail_quotes_only_the_last_lines() {
        assert_eq!(quote_tail(""), "");
        assert_eq!(quote_tail("a\nb\nc\nd\n"), ": \"b\\nc\\nd\"");
    }
}
