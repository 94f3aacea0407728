//! Waiting for a helper program to be ready: until a descriptor it writes
//! to turns readable (a ready pipe, a pid line), it exits, a check the
//! caller makes on every tick succeeds, or the deadline passes. Its output
//! is drained meanwhile, so that it never blocks on a full pipe and its
//! last words are at hand if it fails.

use super::exit::Running;
use super::tail::{format_block, OutputTail};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A helper program that did not get the network going.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("setting up {name}: {what}: {source}")]
    Setup {
        name: String,
        what: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Spawn(io::Error),
    #[error(
        "{name} ({}) exited before the network was up ({status}){}{hint}",
        path.display(), format_block(output)
    )]
    EarlyExit {
        name: String,
        path: PathBuf,
        status: String,
        output: Vec<String>,
        /// A fix the program's own words do not name (empty: none).
        hint: &'static str,
    },
    #[error(
        "{name} ({}) did not finish setting up the network within {}s{}",
        path.display(), timeout.as_secs(), format_block(output)
    )]
    Timeout {
        name: String,
        path: PathBuf,
        timeout: Duration,
        output: Vec<String>,
    },
}

/// What the caller's check made of a wake-up in [`Running::wait_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Waiting,
    Ready,
    /// The program gave up without exiting yet (e.g. it closed its ready
    /// pipe): the sentence says what it did.
    GaveUp(&'static str),
}

impl Running {
    /// Waits up to `timeout` until `check`, called whenever `ready` turns
    /// readable (and every `tick`, if given), says the program is ready.
    /// An exit, a program that gave up or the deadline is an error with
    /// the program's last words; `path` is what was run.
    pub fn wait_ready(
        &mut self,
        path: &Path,
        ready: BorrowedFd<'_>,
        timeout: Duration,
        tick: Option<Duration>,
        mut check: impl FnMut(Wake) -> io::Result<Progress>,
    ) -> Result<(), StartError> {
        let name = self.process.name().to_owned();
        let deadline = Instant::now() + timeout;
        let setup = |what: &'static str| {
            let name = name.clone();
            move |source| StartError::Setup { name, what, source }
        };
        let gave_up = loop {
            let wake = wait(
                Some(ready),
                self.exit_fd(),
                Some(&self.output),
                deadline,
                tick,
            )
            .map_err(setup("waiting for it to be ready"))?;
            match wake {
                Wake::TimedOut => {
                    return Err(StartError::Timeout {
                        name: name.clone(),
                        path: path.to_owned(),
                        timeout,
                        output: self.output.last_lines(Duration::ZERO),
                    })
                }
                Wake::Exited => break "it is still running",
                Wake::Readable | Wake::Tick => match check(wake).map_err(setup("reading it"))? {
                    Progress::Waiting => {}
                    Progress::Ready => return Ok(()),
                    Progress::GaveUp(what) => break what,
                },
            }
        };
        Err(StartError::EarlyExit {
            name,
            path: path.to_owned(),
            status: self.early_exit_status(gave_up),
            output: self.last_lines(),
            hint: "",
        })
    }
}

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The descriptor the caller waits on turned readable (or hung up).
    Readable,
    /// The program's pidfd turned readable: it exited.
    Exited,
    /// `tick` passed without either: time for the caller's own check.
    Tick,
    /// The deadline passed.
    TimedOut,
}

/// Waits for one of the events of [`Wake`]. `ready` is what the program
/// writes to when it is ready (`None`: only the exit, ticks and the
/// deadline count); `exit` is its pidfd; `output`, while no thread drains
/// it, is drained here.
pub fn wait(
    ready: Option<BorrowedFd<'_>>,
    exit: BorrowedFd<'_>,
    output: Option<&OutputTail>,
    deadline: Instant,
    tick: Option<Duration>,
) -> io::Result<Wake> {
    let tick_at = tick.map(|t| Instant::now() + t);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Wake::TimedOut);
        }
        if tick_at.is_some_and(|t| now >= t) {
            return Ok(Wake::Tick);
        }
        let until = tick_at.map_or(deadline, |t| t.min(deadline));
        let ms =
            u16::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u16::MAX);
        let mut fds = vec![PollFd::new(exit, PollFlags::POLLIN)];
        if let Some(fd) = ready {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let out_fd = output.and_then(OutputTail::fd);
        if let Some(fd) = out_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms.max(1))) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let fired = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let exited = fired(0);
        let readable = ready.is_some() && fired(1);
        let printed = out_fd.is_some() && fired(fds.len() - 1);
        drop(fds);
        if printed {
            if let Some(out) = output {
                out.drain_now();
            }
        }
        // Ready before exit: a program that said so and then ended is
        // noticed by the caller's watch, with its own message.
        if readable {
            return Ok(Wake::Readable);
        }
        if exited {
            return Ok(Wake::Exited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::find::tests::SH;
    use super::super::spawn::{pipe, HelperCommand};
    use super::*;
    use std::os::fd::AsFd;
    use std::path::Path;
    use std::process::Stdio;

    fn start(script: &str) -> (crate::process::Supervised, std::os::fd::OwnedFd, OutputTail) {
        let (ready_r, ready_w) = pipe().unwrap();
        let (out_r, out_w) = pipe().unwrap();
        let mut helper = HelperCommand::new(SH, Path::new("/bin/sh"));
        let fd = helper.pass_fd(ready_w.as_fd()).unwrap();
        helper
            .command()
            .args(["-c", &script.replace("READY", &fd.to_string())])
            .stderr(Stdio::from(out_w));
        let process = helper.spawn().unwrap();
        drop(ready_w);
        (process, ready_r, OutputTail::new(out_r, "sh").unwrap())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn ready_is_seen_with_the_output_before_it() {
        let (p, ready, out) =
            start("echo starting >&2; echo 1 >/proc/self/fd/READY; exec sleep 30");
        let wake = wait(Some(ready.as_fd()), p.exit_fd(), Some(&out), soon(), None).unwrap();
        assert_eq!(wake, Wake::Readable);
        assert_eq!(out.last_lines(Duration::ZERO), ["starting"]);
    }

    #[test]
    fn an_exit_before_ready_is_seen() {
        let (p, _ready, out) = start("exec >&-; echo failing >&2; sleep 0.05; exec false");
        // Without a ready descriptor only the exit counts.
        let wake = wait(None, p.exit_fd(), Some(&out), soon(), None).unwrap();
        assert_eq!(wake, Wake::Exited);
        assert_eq!(out.last_lines(Duration::from_secs(5)), ["failing"]);
    }

    #[test]
    fn waiting_ready_ends_in_ready_an_early_exit_or_a_timeout() {
        let read_one = |fd: BorrowedFd<'_>| {
            let mut buf = [0u8; 8];
            Ok(match nix::unistd::read(fd, &mut buf) {
                Ok(0) => Progress::GaveUp("it closed its ready pipe"),
                Ok(_) => Progress::Ready,
                Err(_) => Progress::Waiting,
            })
        };
        let run = |script: &str, timeout: Duration| {
            let (p, ready, out) = start(script);
            let mut running = Running::new(p, out);
            let result =
                running.wait_ready(Path::new("/bin/sh"), ready.as_fd(), timeout, None, |_| {
                    read_one(ready.as_fd())
                });
            (result, running)
        };
        let (ok, _r) = run("echo 1 >/proc/self/fd/READY; exec sleep 30", soon_timeout());
        assert!(ok.is_ok(), "{ok:?}");
        let (e, _r) = run("echo broken >&2; exit 4", soon_timeout());
        assert_eq!(
            e.unwrap_err().to_string(),
            "sh (/bin/sh) exited before the network was up (exit status: 4):\n  broken"
        );
        let (e, _r) = run("exec sleep 30", Duration::from_millis(100));
        assert!(matches!(e, Err(StartError::Timeout { .. })), "{e:?}");
    }

    fn soon_timeout() -> Duration {
        Duration::from_secs(10)
    }

    #[test]
    fn ticks_and_the_deadline_end_a_wait() {
        let (p, ready, out) = start("exec sleep 30");
        let started = Instant::now();
        let wake = wait(
            Some(ready.as_fd()),
            p.exit_fd(),
            Some(&out),
            soon(),
            Some(Duration::from_millis(20)),
        )
        .unwrap();
        assert_eq!(wake, Wake::Tick);
        let deadline = Instant::now() + Duration::from_millis(50);
        let wake = wait(Some(ready.as_fd()), p.exit_fd(), Some(&out), deadline, None).unwrap();
        assert_eq!(wake, Wake::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
