//! Waiting for a helper program to be ready: until a descriptor it writes
//! to turns readable (a ready pipe, a pid line), it exits, a check the
//! caller makes on every tick succeeds, or the deadline passes. Its output
//! is drained meanwhile, so that it never blocks on a full pipe and its
//! last words are at hand if it fails.

use super::tail::OutputTail;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

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
        let (p, ready, out) = start("echo starting >&2; echo 1 >/proc/self/fd/READY; exec sleep 30");
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
