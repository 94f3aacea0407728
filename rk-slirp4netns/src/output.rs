//! slirp4netns's error output: the last lines kept for error messages,
//! and echoed to our stderr only in debug mode. While slirp4netns starts,
//! the driver drains the pipe itself between its other waits
//! ([`OutputTail::drain_now`]); once set-up is over and the driver is
//! confined, a thread takes over ([`OutputTail::follow`]), so that it is
//! started under the whole process's Landlock domain and never blocks
//! slirp4netns on a full pipe.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines kept for error messages.
const KEPT_LINES: usize = 8;
/// A longer line is cut to this many characters.
const MAX_LINE: usize = 300;
/// A partial line is held up to this many bytes.
const MAX_PARTIAL: usize = 4096;

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<String>,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The collected output of one program.
#[derive(Debug)]
pub struct OutputTail {
    shared: Arc<Shared>,
    /// The pipe (non-blocking) until a thread takes it over.
    pending: Option<File>,
    label: &'static str,
    echo: bool,
}

impl OutputTail {
    /// Takes the read end of the pipe; nothing reads it yet. With `echo`,
    /// every line is also written to our stderr, prefixed with `label`.
    pub fn new(reader: OwnedFd, label: &'static str, echo: bool) -> io::Result<Self> {
        let flags = nix::fcntl::fcntl(reader.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(reader.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(OutputTail {
            shared: Arc::new(Shared::default()),
            pending: Some(File::from(reader)),
            label,
            echo,
        })
    }

    /// [`new`](Self::new), then [`follow`](Self::follow) at once.
    #[cfg(test)]
    pub fn collect(reader: OwnedFd, label: &'static str, echo: bool) -> io::Result<Self> {
        let mut tail = Self::new(reader, label, echo)?;
        tail.follow()?;
        Ok(tail)
    }

    /// The pipe, for a caller's poll, while no thread drains it and the
    /// writer has not closed it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        if self.shared.lock().eof {
            return None;
        }
        self.pending.as_ref().map(|f| f.as_fd())
    }

    /// Reads what is in the pipe now, without waiting (before `follow`).
    pub fn drain_now(&mut self) {
        if let Some(file) = self.pending.as_mut() {
            drain_available(file, &self.shared, self.label, self.echo);
        }
    }

    /// Drains the pipe on a new thread from now on, until EOF.
    pub fn follow(&mut self) -> io::Result<()> {
        let Some(file) = self.pending.take() else {
            return Ok(());
        };
        let (shared, label, echo) = (Arc::clone(&self.shared), self.label, self.echo);
        std::thread::Builder::new()
            .name(format!("{label}-output"))
            .spawn(move || {
                let mut file = file;
                loop {
                    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(nix::Error::EINTR) => {}
                        Err(_) => break,
                    }
                    if drain_available(&mut file, &shared, label, echo) {
                        break;
                    }
                }
            })?;
        Ok(())
    }

    /// The last lines, after waiting up to `wait` for the writer to finish
    /// (a program that just exited may still have output in the pipe).
    pub fn last_lines(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        if let Some(file) = self.pending.as_mut() {
            // No thread: read until EOF or the deadline here.
            while !drain_available(file, &self.shared, self.label, self.echo) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                if let Err(e) = poll(&mut fds, PollTimeout::from(ms)) {
                    if e != nix::Error::EINTR {
                        break;
                    }
                }
            }
            return self.shared.lock().lines.iter().cloned().collect();
        }
        let mut state = self.shared.lock();
        while !state.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
        state.lines.iter().cloned().collect()
    }
}

/// Reads `file` (non-blocking) until it is empty; `true` at EOF (or an
/// error that ends reading), which it records and announces.
fn drain_available(file: &mut File, shared: &Shared, label: &str, echo: bool) -> bool {
    let mut buf = [0u8; 4096];
    let ended = loop {
        match file.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => take(&buf[..n], shared, label, echo),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    if ended {
        let mut state = shared.lock();
        let rest = std::mem::take(&mut state.partial);
        drop(state);
        if !rest.is_empty() {
            keep_line(&rest, shared, label, echo);
        }
        shared.lock().eof = true;
        shared.changed.notify_all();
    }
    ended
}

/// Splits `bytes` into lines, holding back what follows the last newline.
fn take(bytes: &[u8], shared: &Shared, label: &str, echo: bool) {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        let mut line = std::mem::take(&mut shared.lock().partial);
        line.extend_from_slice(&rest[..i]);
        keep_line(&line, shared, label, echo);
        rest = &rest[i + 1..];
    }
    let mut state = shared.lock();
    let room = MAX_PARTIAL.saturating_sub(state.partial.len());
    state
        .partial
        .extend_from_slice(&rest[..rest.len().min(room)]);
}

fn keep_line(raw: &[u8], shared: &Shared, label: &str, echo: bool) {
    let text = String::from_utf8_lossy(raw);
    let line = text.trim_end();
    if echo {
        let _ = writeln!(io::stderr().lock(), "{label}: {line}");
    }
    if line.trim().is_empty() {
        return;
    }
    let mut state = shared.lock();
    if state.lines.len() == KEPT_LINES {
        state.lines.pop_front();
    }
    state.lines.push_back(line.chars().take(MAX_LINE).collect());
}

/// `lines` as an indented block after a colon, or nothing.
pub fn format_block(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(":");
    for line in lines {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;

    #[test]
    fn keeps_the_last_lines_until_eof() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut tail = OutputTail::collect(r, "test", false).unwrap();
        let mut w = std::fs::File::from(w);
        for i in 0..20 {
            writeln!(w, "line {i}").unwrap();
        }
        writeln!(w).unwrap();
        write!(w, "no newline at the end").unwrap();
        drop(w);
        let lines = tail.last_lines(Duration::from_secs(5));
        assert_eq!(lines.len(), KEPT_LINES);
        assert_eq!(lines[0], "line 13");
        assert_eq!(lines[KEPT_LINES - 1], "no newline at the end");
    }

    #[test]
    fn gives_up_waiting_for_a_writer_that_stays_open() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut tail = OutputTail::collect(r, "test", false).unwrap();
        let started = Instant::now();
        assert!(tail.last_lines(Duration::from_millis(50)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(w);
    }

    #[test]
    fn without_a_thread_the_caller_drains_until_eof() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut tail = OutputTail::new(r, "test", false).unwrap();
        let mut w = std::fs::File::from(w);
        writeln!(w, "first").unwrap();
        tail.drain_now();
        write!(w, "second, no newline").unwrap();
        drop(w);
        assert_eq!(
            tail.last_lines(Duration::from_secs(5)),
            ["first", "second, no newline"]
        );
    }

    #[test]
    fn a_thread_started_later_keeps_what_was_drained_before() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut tail = OutputTail::new(r, "test", false).unwrap();
        let mut w = std::fs::File::from(w);
        write!(w, "split ").unwrap();
        tail.drain_now();
        assert!(tail.fd().is_some());
        tail.follow().unwrap();
        assert!(tail.fd().is_none());
        writeln!(w, "line").unwrap();
        writeln!(w, "after").unwrap();
        drop(w);
        assert_eq!(
            tail.last_lines(Duration::from_secs(5)),
            ["split line", "after"]
        );
    }

    #[test]
    fn block_is_indented_and_empty_output_adds_nothing() {
        assert_eq!(format_block(&[]), "");
        assert_eq!(
            format_block(&["a".to_owned(), "b".to_owned()]),
            ":\n  a\n  b"
        );
    }
}
