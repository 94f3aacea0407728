//! Asking a program what it is: short runs (`--help`, `--version`) with a
//! time limit, both at once, and reading their answers (long options,
//! release numbers).

use super::find::{FindError, Program};
use super::spawn::pipe;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long `--help` or `--version` may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Output beyond this is not kept (`--help` texts are a few KiB).
const MAX_OUTPUT: usize = 64 * 1024;

/// A short run that gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("running \"{} {arg}\": {source}", path.display())]
    Spawn {
        path: PathBuf,
        arg: String,
        source: io::Error,
    },
    #[error(
        "\"{} {arg}\" did not finish within {:.1}s and was killed (it should answer at once): \
         is it {name}? fix --{flag}",
        path.display(), timeout.as_secs_f64()
    )]
    Timeout {
        name: &'static str,
        flag: &'static str,
        path: PathBuf,
        arg: String,
        timeout: Duration,
    },
    #[error(
        "\"{} {arg}\" failed ({status}){}: is it {name}? fix --{flag}",
        path.display(), quote_tail(output)
    )]
    Failed {
        name: &'static str,
        flag: &'static str,
        path: PathBuf,
        arg: String,
        status: ExitStatus,
        output: String,
    },
}

/// A program that cannot be used: not found, or no answer to a probe.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Find(#[from] FindError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Which exits of `--help` and `--version` count as answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Status 0 only.
    Success,
    /// Any exit (some programs exit 1 after printing their `--help`);
    /// killed by a signal is still a failure.
    AnyExit,
}

/// What a program said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    /// The resolved path that was run.
    pub path: PathBuf,
    pub help: String,
    /// `None` when `--version` gave no answer (the program may still work).
    pub version: Option<String>,
}

/// The last three lines of `output`, quoted, after a colon.
pub fn quote_tail(output: &str) -> String {
    let lines: Vec<&str> = output.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {:?}", lines[lines.len().saturating_sub(3)..].join("\n"))
}

/// What a short run printed (stdout and stderr together) and how it ended.
#[derive(Debug)]
pub struct RunOutput {
    pub program: Program,
    pub path: PathBuf,
    pub arg: String,
    pub status: ExitStatus,
    pub text: String,
}

impl RunOutput {
    /// The text, if the program exited with status 0.
    pub fn success(self) -> Result<String, RunError> {
        if self.status.success() {
            return Ok(self.text);
        }
        Err(self.failed())
    }

    /// The text, if the program exited at all (some print their `--help`
    /// and exit 1); killed by a signal is a failure.
    pub fn exited(self) -> Result<String, RunError> {
        if self.status.signal().is_none() {
            return Ok(self.text);
        }
        Err(self.failed())
    }

    fn failed(self) -> RunError {
        RunError::Failed {
            name: self.program.name,
            flag: self.program.flag,
            path: self.path,
            arg: self.arg,
            status: self.status,
            output: self.text,
        }
    }
}

impl Program {
    /// Finds the program (see [`Program::find`]) and asks it `--help` and
    /// `--version` at once; only the help is required.
    pub fn ask(&self, given: &str, accept: Accept) -> Result<Answers, ProgramError> {
        let path = self.find(given)?;
        let (help, version) = self.help_and_version(&path);
        let answer = |out: RunOutput| match accept {
            Accept::Success => out.success(),
            Accept::AnyExit => out.exited(),
        };
        let help = answer(help?)?;
        let version = version.ok().and_then(|v| answer(v).ok());
        Ok(Answers {
            path,
            help,
            version,
        })
    }

    /// Runs `path arg` with [`RUN_TIMEOUT`] and returns its output.
    pub fn run(&self, path: &Path, arg: &str) -> Result<RunOutput, RunError> {
        self.run_within(path, arg, RUN_TIMEOUT)
    }

    /// Runs `path --help` and `path --version` at once (each is a process
    /// start, and start-up time is what users notice).
    pub fn help_and_version(
        &self,
        path: &Path,
    ) -> (Result<RunOutput, RunError>, Result<RunOutput, RunError>) {
        std::thread::scope(|s| {
            let version = s.spawn(|| self.run(path, "--version"));
            let help = self.run(path, "--help");
            let version = version.join().unwrap_or_else(|_| {
                Err(RunError::Spawn {
                    path: path.to_owned(),
                    arg: "--version".to_owned(),
                    source: io::Error::other("the thread that ran it failed"),
                })
            });
            (help, version)
        })
    }

    pub fn run_within(
        &self,
        path: &Path,
        arg: &str,
        timeout: Duration,
    ) -> Result<RunOutput, RunError> {
        let spawn_err = |source| RunError::Spawn {
            path: path.to_owned(),
            arg: arg.to_owned(),
            source,
        };
        let (reader, writer) = pipe().map_err(spawn_err)?;
        let mut child = {
            let mut cmd = Command::new(path);
            self.env.apply(&mut cmd);
            cmd.arg(arg)
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer.try_clone().map_err(spawn_err)?))
                .stderr(Stdio::from(writer));
            crate::process::kill_with_parent(&mut cmd);
            cmd.spawn().map_err(spawn_err)?
            // `cmd` holds our copies of the pipe's write end; they close
            // here, so that the reader sees EOF when the program exits.
        };
        let deadline = Instant::now() + timeout;
        let pidfd = crate::process::pidfd_open(child.id()).ok();
        // The output ended: the program has exited or is about to.
        let finished = read_until_eof(reader, deadline).and_then(|text| loop {
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
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        });
        let Some((status, text)) = finished else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout {
                name: self.name,
                flag: self.flag,
                path: path.to_owned(),
                arg: arg.to_owned(),
                timeout,
            });
        };
        Ok(RunOutput {
            program: *self,
            path: path.to_owned(),
            arg: arg.to_owned(),
            status,
            text,
        })
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

/// The long options (`--name`, lower-case first letter) a `--help` text
/// mentions, each whole: `--netns-only` is not `--netns`, and a trailing
/// dash (`--netns-`) is not part of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LongOptions(BTreeSet<String>);

impl LongOptions {
    pub fn from_help(text: &str) -> Self {
        let mut options = BTreeSet::new();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let name = word.trim_end_matches('-');
            if let Some(rest) = name.strip_prefix("--") {
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) {
                    options.insert(name.to_owned());
                }
            }
        }
        LongOptions(options)
    }

    /// Whether `--help` offers `name` (with its dashes).
    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A release number, e.g. 1.2.0 of `1.2.0-beta.1+dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Reads the leading `MAJOR.MINOR[.PATCH]`, ignoring any suffix.
    pub fn parse(text: &str) -> Option<Self> {
        let core = text.split(['-', '+', '~']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The first word after `prefix` on the line that starts with it
/// (`value_after(text, "libslirp:")`).
pub fn value_after(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::super::find::tests::SH;
    use super::*;

    #[test]
    fn a_run_that_hangs_is_killed_and_says_it_timed_out() {
        let started = Instant::now();
        let e = SH
            .run_within(Path::new("/bin/sleep"), "10", Duration::from_millis(300))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "\"/bin/sleep 10\" did not finish within 0.3s and was killed (it should answer \
             at once): is it sh? fix --sh-binary"
        );
    }

    #[test]
    fn a_failing_program_is_reported_with_its_last_output() {
        let out = SH.run(Path::new("/bin/sh"), "--no-such-option").unwrap();
        assert_eq!(out.status.code(), Some(2));
        let e = out.success().unwrap_err().to_string();
        assert!(
            e.starts_with("\"/bin/sh --no-such-option\" failed (exit status: 2): \""),
            "{e}"
        );
        assert!(e.ends_with("is it sh? fix --sh-binary"), "{e}");
        let out = SH.run(Path::new("/bin/false"), "x").unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(out.exited().unwrap(), "");
    }

    /// An executable shell script `body` in a fresh directory (removed by
    /// the caller).
    fn script(tag: &str, body: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rk-helper-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("prog");
        std::fs::write(&prog, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, prog)
    }

    #[test]
    fn a_killed_run_is_a_failure_even_where_any_exit_is_accepted() {
        let (dir, prog) = script("killed", "echo starting\nkill -9 $$");
        let e = SH.run(&prog, "--help").unwrap().exited().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "\"{} --help\" failed (signal: 9 (SIGKILL)): \"starting\": is it sh? fix --sh-binary",
                prog.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_get_the_programs_environment_only() {
        let only = Program {
            env: super::super::find::Env::Only(&[]),
            ..SH
        };
        let env = Path::new("/usr/bin/env");
        let out = only.run(env, "-0").unwrap().success().unwrap();
        assert!(!out.contains("HOME="), "{out}");
        assert!(out.contains("PATH="), "{out}");
        let all = SH.run(env, "-0").unwrap().success().unwrap();
        if std::env::var_os("HOME").is_some() {
            assert!(all.contains("HOME="), "{all}");
        }
    }

    #[test]
    fn help_and_version_run_together() {
        // Each answer takes 0.3 s: together they take well under 0.6 s.
        let (dir, prog) = script("both", "sleep 0.3\necho \"$1\"");
        let started = Instant::now();
        let (help, version) = SH.help_and_version(&prog);
        assert!(started.elapsed() < Duration::from_millis(580));
        assert_eq!(help.unwrap().success().unwrap(), "--help\n");
        assert_eq!(version.unwrap().success().unwrap(), "--version\n");
        std::fs::remove_dir_all(&dir).unwrap();
        let (help, _) = SH.help_and_version(Path::new("/nonexistent"));
        assert!(matches!(help, Err(RunError::Spawn { .. })));
    }

    #[test]
    fn asking_finds_the_program_and_judges_its_exit() {
        let e = SH.ask("/nonexistent/sh", Accept::Success).unwrap_err();
        assert!(matches!(e, ProgramError::Find(_)), "{e}");
        // `false --help` prints coreutils' help and exits 1.
        let e = SH.ask("false", Accept::Success).unwrap_err();
        assert!(
            e.to_string().contains("--help\" failed (exit status: 1)"),
            "{e}"
        );
        let a = SH.ask("false", Accept::AnyExit).unwrap();
        assert!(a.help.contains("--help"), "{}", a.help);
        assert!(a.version.is_some_and(|v| v.contains("false")));
        assert!(a.path.is_absolute());
    }

    #[test]
    fn long_options_are_read_whole() {
        let o = LongOptions::from_help(
            "  -r, --ready-fd=FD   [--enable-sandbox] --outbound-addr6=IPv6 --netns-only\n\
             --enable-sandboxing --Capital --netns- ---x --9",
        );
        for has in [
            "--ready-fd",
            "--enable-sandbox",
            "--outbound-addr6",
            "--netns-only",
        ] {
            assert!(o.has(has), "{has}");
        }
        // A trailing dash is not part of the name.
        assert!(o.has("--netns"));
        for not in [
            "--netns-",
            "--enable-sandboxi",
            "--Capital",
            "--9",
            "---x",
            "-r",
        ] {
            assert!(!o.has(not), "{not}");
        }
        assert!(LongOptions::from_help("no options").is_empty());
    }

    #[test]
    fn release_numbers_compare_and_ignore_suffixes() {
        assert_eq!(Version::parse("1.2.0"), Some(Version(1, 2, 0)));
        assert_eq!(Version::parse("1.1.0-beta.1"), Some(Version(1, 1, 0)));
        assert_eq!(Version::parse("1.2.3+dev"), Some(Version(1, 2, 3)));
        assert_eq!(Version::parse("0.4"), Some(Version(0, 4, 0)));
        assert_eq!(Version::parse("unknown"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version(1, 2, 0) < Version(1, 2, 1));
        assert!(Version(0, 4, 9) < Version(1, 0, 0));
        assert_eq!(Version(1, 2, 0).to_string(), "1.2.0");
    }

    #[test]
    fn values_are_read_after_their_prefix() {
        let text = "slirp4netns version 1.2.0\ncommit: 656041d\n libslirp: 4.7.0\n";
        assert_eq!(
            value_after(text, "slirp4netns version").as_deref(),
            Some("1.2.0")
        );
        assert_eq!(value_after(text, "libslirp:").as_deref(), Some("4.7.0"));
        assert_eq!(value_after(text, "libseccomp:"), None);
    }
}
