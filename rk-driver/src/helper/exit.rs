//! A running helper program with its output, and the sentences that say
//! how it ended.

use super::tail::{format_block, OutputTail};
use crate::process::{wait_exit, Supervised};
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// How long to wait for the last output of a program that has exited.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// A started helper program and its collected output. Dropping it stops
/// the program (see [`Supervised`]).
#[derive(Debug)]
pub struct Running {
    pub process: Supervised,
    pub output: OutputTail,
}

impl Running {
    pub fn new(process: Supervised, output: OutputTail) -> Self {
        Running { process, output }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Readable once the program has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.process.exit_fd()
    }

    /// Drains the output on a thread from now on: call it once the driver
    /// is confined, so that the thread starts inside its Landlock domain.
    pub fn follow_output(&mut self) -> io::Result<()> {
        self.output.follow()
    }

    /// How the program ended, for a program that gave up before it was
    /// ready: its exit status (waiting [`OUTPUT_GRACE`] for it), or
    /// `instead` (e.g. "it closed its ready descriptor") when it still runs.
    pub fn early_exit_status(&mut self, instead: &str) -> String {
        wait_exit(self.process.exit_fd(), OUTPUT_GRACE.as_millis() as u16);
        match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => instead.to_owned(),
        }
    }

    /// Its last lines, waiting up to [`OUTPUT_GRACE`] for the pipe to end.
    pub fn last_lines(&self) -> Vec<String> {
        self.output.last_lines(OUTPUT_GRACE)
    }

    /// Says how the program ended, once `exit_fd` turned readable:
    /// `NAME (pid N) exited unexpectedly (STATUS):` and its last lines.
    pub fn describe_exit(&mut self) -> String {
        let status = match self.process.try_wait() {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "still running".to_owned(),
            Err(e) => e.to_string(),
        };
        format!(
            "{} (pid {}) exited unexpectedly ({status}){}",
            self.process.name(),
            self.process.pid(),
            format_block(&self.last_lines())
        )
    }

    /// Kills the program at once (for programs that keep no state worth
    /// a clean exit) and reaps it; logs how long that took (mostly the
    /// kernel tearing down what it held, such as a tap device).
    pub fn kill(&mut self) {
        let started = Instant::now();
        let running = matches!(self.process.try_wait(), Ok(None));
        self.process.kill();
        if running {
            log::debug!(
                "{} (pid {}) killed and reaped in {:.1} ms",
                self.process.name(),
                self.process.pid(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::find::tests::SH;
    use super::super::spawn::{pipe, HelperCommand};
    use super::*;
    use std::path::Path;
    use std::process::Stdio;

    fn start(script: &str) -> Running {
        let (r, w) = pipe().unwrap();
        let mut helper = HelperCommand::new(SH, Path::new("/bin/sh"));
        helper.command().args(["-c", script]).stderr(Stdio::from(w));
        let process = helper.spawn().unwrap();
        Running::new(process, OutputTail::new(r, "sh").unwrap())
    }

    #[test]
    fn an_unexpected_exit_is_described_with_status_and_last_words() {
        let mut r = start("echo bye >&2; exit 7");
        assert!(wait_exit(r.exit_fd(), 5000));
        assert_eq!(
            r.describe_exit(),
            format!(
                "sh (pid {}) exited unexpectedly (exit status: 7):\n  bye",
                r.pid()
            )
        );
        assert_eq!(r.early_exit_status("-"), "exit status: 7");
    }

    #[test]
    fn a_killed_program_says_signal_9_and_is_reaped() {
        let mut r = start("exec sleep 30");
        r.follow_output().unwrap();
        assert_eq!(r.early_exit_status("it still runs"), "it still runs");
        let pid = r.pid();
        r.kill();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "not reaped");
        assert!(r.describe_exit().contains("exited unexpectedly (signal: 9"));
    }
}
