//! Locating the pasta program and running it briefly (`--help`,
//! `--version`) with a time limit.

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--help` or `--version` may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Output beyond this is not kept (`--help` is about 4 KiB).
const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(
        "pasta not found (looked for {0:?} in the absolute directories of $PATH): install \
         passt (e.g. apt-get install passt) or pass --pasta-binary=PATH"
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
        "\"{} {arg}\" timed out after {secs}s and was killed (pasta answers at once): \
         check --pasta-binary",
        path.display()
    )]
    Timeout {
        path: PathBuf,
        arg: &'static str,
        secs: f64,
    },
    #[error(
        "\"{} {arg}\" was killed by signal {signal}{}{}",
        path.display(), signal_name(*signal), quote_output(output)
    )]
    Killed {
        path: PathBuf,
        arg: &'static str,
        signal: i32,
        output: String,
    },
}

/// " (SIGKILL)", or nothing for a number without a name.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default()
}

/// The last lines of what a killed run printed, after a colon.
fn quote_output(output: &str) -> String {
    let lines: Vec<&str> = output.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {:?}", lines[lines.len().saturating_sub(3)..].join("\n"))
}

/// Finds `binary` with the one safe lookup every program of ours uses
/// (never through an empty or relative `$PATH` entry), so that errors
/// come before anything is started and name what was looked for.
pub fn resolve(binary: &str) -> Result<PathBuf, BinaryError> {
    use rk_driver::lookup::{find_program, LookupError};
    find_program(binary).map_err(|e| match e {
        LookupError::NoSuchFile(p) => BinaryError::NoSuchFile(p),
        LookupError::NotExecutable(p) => BinaryError::NotExecutable(p),
        LookupError::NotInPath { name, .. } => BinaryError::NotInPath(name),
    })
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
    run_within(path, arg, RUN_TIMEOUT)
}

fn run_within(path: &Path, arg: &'static str, timeout: Duration) -> Result<RunOutput, BinaryError> {
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
    let deadline = Instant::now() + timeout;
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
        Some((status, text)) => match status.signal() {
            Some(signal) => Err(BinaryError::Killed {
                path: path.to_owned(),
                arg,
                signal,
                output: text,
            }),
            None => Ok(RunOutput {
                success: status.success(),
                text,
            }),
        },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(BinaryError::Timeout {
                path: path.to_owned(),
                arg,
                secs: timeout.as_secs_f64(),
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
        let e = resolve("no-such-pasta").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pasta not found (looked for \"no-such-pasta\" in the absolute directories of \
             $PATH): install passt (e.g. apt-get install passt) or pass --pasta-binary=PATH"
        );
        let e = resolve("/nonexistent").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pasta not found at /nonexistent: install passt or fix --pasta-binary"
        );
        let e = resolve("/etc").unwrap_err();
        assert!(matches!(e, BinaryError::NotExecutable(_)), "{e}");
    }

    #[test]
    fn a_run_that_hangs_is_killed_and_says_it_timed_out() {
        let started = Instant::now();
        let e = run_within(Path::new("/bin/sleep"), "10", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "\"/bin/sleep 10\" timed out after 0.3s and was killed (pasta answers at once): \
             check --pasta-binary"
        );
    }

    #[test]
    fn a_killed_run_says_so() {
        // A program killed by SIGKILL, as by an OOM killer or a sandbox.
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rk-pasta-killed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("pasta");
        std::fs::write(&script, "#!/bin/sh\necho starting\nkill -9 $$\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run(&script, "--help").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "\"{} --help\" was killed by signal 9 (SIGKILL): \"starting\"",
                script.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
