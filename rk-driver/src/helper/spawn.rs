//! Starting a helper program with an explicit list of inherited
//! descriptors: everything of ours is close-on-exec, and exactly the
//! descriptors passed with [`HelperCommand::pass_fd`] survive the exec,
//! under the numbers that method returns. The program dies with the
//! driver and its exit is seen through a pidfd ([`Supervised`]).

use super::find::Program;
use crate::process::Supervised;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// A close-on-exec duplicate numbered 3 or above (so that setting up the
/// program's stdio cannot overwrite it).
pub fn dup_above_stdio(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A copy of our stderr for the program's stdout or stderr, so that what
/// it prints reaches the user (debug mode).
pub fn our_stderr() -> io::Result<Stdio> {
    Ok(Stdio::from(io::stderr().as_fd().try_clone_to_owned()?))
}

/// A helper program about to be started.
#[derive(Debug)]
pub struct HelperCommand {
    program: Program,
    path: PathBuf,
    cmd: Command,
    /// Our duplicates of what the program inherits: they close once it runs.
    passed: Vec<OwnedFd>,
    join_userns: Option<OwnedFd>,
    new_session: bool,
}

impl HelperCommand {
    /// `path` (found with [`Program::find`]) with the program's
    /// environment, stdin on /dev/null, stdout and stderr ours until set.
    pub fn new(program: Program, path: &Path) -> Self {
        let mut cmd = Command::new(path);
        program.env.apply(&mut cmd);
        cmd.stdin(Stdio::null());
        HelperCommand {
            program,
            path: path.to_owned(),
            cmd,
            passed: Vec::new(),
            join_userns: None,
            new_session: false,
        }
    }

    /// The command, for arguments and stdio.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Makes (a duplicate of) `fd` survive the exec; returns the number the
    /// program finds it under, for its command line.
    pub fn pass_fd(&mut self, fd: BorrowedFd<'_>) -> io::Result<RawFd> {
        let dup = dup_above_stdio(fd)?;
        let raw = dup.as_raw_fd();
        self.passed.push(dup);
        Ok(raw)
    }

    /// Makes the program start inside the user namespace `userns`
    /// (`setns` before exec), as if it had been started from there.
    pub fn join_userns(&mut self, userns: BorrowedFd<'_>) -> io::Result<()> {
        self.join_userns = Some(dup_above_stdio(userns)?);
        Ok(())
    }

    /// Starts the program in a session of its own (`setsid`): no terminal's
    /// signals reach it, and with the scheduler's autogroups it gets a CPU
    /// share of its own instead of competing with CMD's processes.
    pub fn new_session(&mut self) {
        self.new_session = true;
    }

    /// Starts it. Our duplicates of the passed descriptors and of its
    /// stdio are closed before this returns, so that the program's exit
    /// shows up as EOF on pipes it writes.
    pub fn spawn(self) -> io::Result<Supervised> {
        let HelperCommand {
            program,
            path,
            mut cmd,
            passed,
            join_userns,
            new_session,
        } = self;
        crate::process::keep_across_exec(&mut cmd, passed.iter().map(AsRawFd::as_raw_fd).collect());
        let join = join_userns.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: between fork and exec the closure only calls setns and
        // setsid, which are async-signal-safe, on a descriptor that stays
        // open until `cmd` is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = join {
                    if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if new_session {
                    // Cannot fail in a child just forked (no group leader).
                    libc::setsid();
                }
                Ok(())
            })
        };
        log::debug!("running {cmd:?}");
        let process = Supervised::spawn(program.name, &mut cmd);
        drop(cmd);
        drop((passed, join_userns));
        process.map_err(|e| {
            let inside = if join.is_some() {
                " inside the child's user namespace"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("starting {}{inside}: {e}", path.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::find::tests::SH;
    use super::*;
    use std::io::Read;

    #[test]
    fn duplicates_avoid_stdio_numbers_and_close_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let dup = dup_above_stdio(file.as_fd()).unwrap();
        assert!(dup.as_raw_fd() >= 3);
        let flags = fcntl(dup.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn only_passed_descriptors_survive_the_exec() {
        let (r, w) = pipe().unwrap();
        // Ours, close-on-exec as everything std opens.
        let kept = std::fs::File::open("/dev/null").unwrap();
        let unpassed = std::fs::File::open("/dev/null").unwrap();
        let mut helper = HelperCommand::new(SH, Path::new("/bin/sh"));
        let told = helper.pass_fd(kept.as_fd()).unwrap();
        helper
            .command()
            .args(["-c", "ls /proc/self/fd"])
            .stdout(Stdio::from(w));
        let mut process = helper.spawn().unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert!(crate::process::wait_exit(process.exit_fd(), 5000));
        assert!(process.try_wait().unwrap().unwrap().success());
        let open: Vec<&str> = out.split_whitespace().collect();
        assert!(open.contains(&told.to_string().as_str()), "{out}");
        let ours = unpassed.as_raw_fd().to_string();
        assert!(!open.contains(&ours.as_str()), "{out}");
    }

    #[test]
    fn a_new_session_is_made_on_request() {
        let (r, w) = pipe().unwrap();
        let mut helper = HelperCommand::new(SH, Path::new("/bin/sh"));
        helper.new_session();
        helper
            .command()
            .args(["-c", "cut -d' ' -f6 /proc/self/stat; echo $$"])
            .stdout(Stdio::from(w));
        let _process = helper.spawn().unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        // cut is a child of the shell: its session is the shell's pid.
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], lines[1], "{out}");
    }

    #[test]
    fn a_program_that_cannot_start_is_named() {
        let helper = HelperCommand::new(SH, Path::new("/nonexistent/prog"));
        let e = helper.spawn().unwrap_err();
        assert!(
            e.to_string().starts_with("starting /nonexistent/prog: "),
            "{e}"
        );
    }
}
