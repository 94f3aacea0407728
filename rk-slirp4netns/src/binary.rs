//! Locating the slirp4netns program and running it briefly (`--help`,
//! `--version`) with a time limit.

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rk_driver::lookup::{find_program, unsafe_permissions, LookupError};
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

/// Resolves `binary` with the SDK's lookup (a path as given, a bare name in
/// the absolute directories of `$PATH` only: never the current directory),
/// so that errors come before anything is started and name what was looked
/// for. A program that someone other than root and this user could replace
/// is used, with a warning.
pub fn resolve(binary: &str) -> Result<PathBuf, BinaryError> {
    let path = find_program(binary).map_err(|e| match e {
        LookupError::NoSuchFile(p) => BinaryError::NoSuchFile(p),
        LookupError::NotExecutable(p) => BinaryError::NotExecutable(p),
        LookupError::NotInPath { name, .. } => BinaryError::NotInPath(name),
    })?;
    if let Some(why) = unsafe_permissions(&path) {
        eprintln!("rk-slirp4netns: warning: {why}");
    }
    Ok(path)
}

/// The environment slirp4netns and its probes get: none of this driver's
/// (`RK_DRIVER_FD` names the protocol socket, which they must not find), only
/// what a C program may want for its messages and libslirp's debugging.
pub fn clean_environment(cmd: &mut Command) -> &mut Command {
    cmd.env_clear();
    for (key, value) in std::env::vars_os() {
        if passed_through(&key) {
            cmd.env(key, value);
        }
    }
    cmd
}

fn passed_through(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    matches!(
        key,
        "PATH" | "LANG" | "LANGUAGE" | "TZ" | "G_MESSAGES_DEBUG" | "SLIRP_DEBUG"
    ) || key.starts_with("LC_")
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
        clean_environment(&mut cmd)
            .arg(arg)
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

    #[test]
    fn missing_binary_error_names_what_was_looked_for_and_the_fix() {
        let e = resolve("no-such-slirp4netns").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slirp4netns not found (looked for \"no-such-slirp4netns\" in PATH): \
             install slirp4netns ≥ 0.4 or pass --slirp4netns-binary"
        );
        let e = resolve("/nonexistent/slirp4netns").unwrap_err();
        assert!(matches!(e, BinaryError::NoSuchFile(_)), "{e}");
    }

    #[test]
    fn a_path_that_is_not_an_executable_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("rk-s4-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tool"), "").unwrap();
        let e = resolve(dir.join("tool").to_str().unwrap()).unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
        let e = resolve(dir.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_environment_keeps_only_locale_path_and_debugging() {
        for kept in ["PATH", "LANG", "LC_ALL", "LC_MESSAGES", "TZ", "SLIRP_DEBUG"] {
            assert!(passed_through(OsStr::new(kept)), "{kept}");
        }
        for dropped in [
            "RK_DRIVER_FD",
            "RK_DRIVER_DEBUG",
            "HOME",
            "LD_PRELOAD",
            "XDG_RUNTIME_DIR",
        ] {
            assert!(!passed_through(OsStr::new(dropped)), "{dropped}");
        }
    }

    #[test]
    fn probes_run_without_the_drivers_variables() {
        // No other test of this crate looks at RK_DRIVER_FD.
        std::env::set_var("RK_DRIVER_FD", "3");
        let out = run(Path::new("/usr/bin/env"), "-0").unwrap();
        std::env::remove_var("RK_DRIVER_FD");
        assert!(!out.contains("RK_DRIVER_FD"), "{out}");
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
