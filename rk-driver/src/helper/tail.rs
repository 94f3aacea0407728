//! A helper program's output (its stderr, or stdout and stderr on one
//! pipe): every line goes to the debug log, the first and last lines are
//! kept for error messages and for facts the program prints as it starts.
//!
//! While the program starts, the driver drains the pipe itself between its
//! other waits ([`OutputTail::drain_now`], which [`ready`](super::ready)
//! does); once set-up is over and the driver is confined, a thread takes
//! over ([`OutputTail::follow`]), so that it starts inside the process's
//! Landlock domain and the program never blocks on a full pipe.

use crate::fdio::set_nonblocking;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A kept line is cut to this many characters.
const MAX_LINE: usize = 300;
/// A line without newline is cut here rather than growing without bound.
const MAX_PENDING: usize = 4096;
/// Stack of the draining thread: it only reads and splits lines.
const THREAD_STACK: usize = 64 * 1024;

/// Decides, line by line, what is worth keeping of a program's output:
/// `Some(text)` keeps `text` (the line as it is, or rewritten), `None`
/// drops the line (noise, a duplicate).
pub type LineFilter = Box<dyn FnMut(&str) -> Option<String> + Send>;

struct State {
    head: Vec<String>,
    tail: VecDeque<String>,
    /// Bytes after the last newline.
    pending: Vec<u8>,
    eof: bool,
    filter: Option<LineFilter>,
    head_lines: usize,
    tail_lines: usize,
}

struct Shared {
    label: &'static str,
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
pub struct OutputTail {
    shared: Arc<Shared>,
    /// The pipe (non-blocking) until a thread takes it over.
    pending: Option<File>,
}

impl std::fmt::Debug for OutputTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputTail")
            .field("label", &self.shared.label)
            .field("followed", &self.pending.is_none())
            .finish()
    }
}

impl OutputTail {
    /// Takes the read end of the pipe (made non-blocking); nothing reads it
    /// yet. Lines are logged at debug level as `label: line`; the last 8
    /// are kept.
    pub fn new(reader: OwnedFd, label: &'static str) -> io::Result<Self> {
        set_nonblocking(&reader)?;
        let state = State {
            head: Vec::new(),
            tail: VecDeque::new(),
            pending: Vec::new(),
            eof: false,
            filter: None,
            head_lines: 0,
            tail_lines: 8,
        };
        Ok(OutputTail {
            shared: Arc::new(Shared {
                label,
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
            pending: Some(File::from(reader)),
        })
    }

    /// Keeps the first `head` and the last `tail` lines.
    pub fn keeping(self, head: usize, tail: usize) -> Self {
        {
            let mut state = self.shared.lock();
            state.head_lines = head;
            state.tail_lines = tail;
        }
        self
    }

    /// Passes every line through `filter` before it is logged and kept.
    pub fn filtered(self, filter: LineFilter) -> Self {
        self.shared.lock().filter = Some(filter);
        self
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
    pub fn drain_now(&self) {
        if let Some(file) = self.pending.as_ref() {
            drain_available(file, &self.shared);
        }
    }

    /// Drains the pipe on a new thread from now on, until EOF.
    pub fn follow(&mut self) -> io::Result<()> {
        let Some(file) = self.pending.take() else {
            return Ok(());
        };
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name(format!("{}-output", shared.label))
            .stack_size(THREAD_STACK)
            .spawn(move || loop {
                let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(_) => {
                        finish(&shared);
                        break;
                    }
                }
                if drain_available(&file, &shared) {
                    break;
                }
            });
        spawned.map(drop)
    }

    /// The last lines (a line still missing its newline last), after
    /// waiting up to `wait` for the writer to finish: a program that just
    /// exited may still have output in the pipe.
    pub fn last_lines(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        if let Some(file) = self.pending.as_ref() {
            // No thread: read until EOF or the deadline here.
            while !drain_available(file, &self.shared) {
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
            return snapshot(&self.shared.lock());
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
        snapshot(&state)
    }

    /// The first lines kept (see [`keeping`](Self::keeping)).
    pub fn head(&self) -> Vec<String> {
        self.shared.lock().head.clone()
    }
}

fn snapshot(state: &State) -> Vec<String> {
    let mut lines: Vec<String> = state.tail.iter().cloned().collect();
    let partial = String::from_utf8_lossy(&state.pending);
    if !partial.trim().is_empty() {
        lines.push(partial.trim_end().chars().take(MAX_LINE).collect());
    }
    lines
}

/// Reads `file` (non-blocking) until it is empty; `true` at EOF (or an
/// error that ends reading), which it records and announces.
fn drain_available(file: &File, shared: &Shared) -> bool {
    let mut buf = [0u8; 4096];
    let ended = loop {
        match (&*file).read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => take(buf.get(..n).unwrap_or_default(), shared),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    if ended {
        finish(shared);
    }
    ended
}

/// The output ended: a last line without newline still counts.
fn finish(shared: &Shared) {
    let mut state = shared.lock();
    let rest = std::mem::take(&mut state.pending);
    if !rest.is_empty() {
        line(&mut state, shared.label, &rest);
    }
    state.eof = true;
    drop(state);
    shared.changed.notify_all();
}

/// Splits `bytes` into lines, holding back what follows the last newline.
fn take(bytes: &[u8], shared: &Shared) {
    let mut state = shared.lock();
    for &b in bytes {
        if b == b'\n' || state.pending.len() >= MAX_PENDING {
            let raw = std::mem::take(&mut state.pending);
            line(&mut state, shared.label, &raw);
            if b == b'\n' {
                continue;
            }
        }
        state.pending.push(b);
    }
}

fn line(state: &mut State, label: &str, raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end();
    if text.trim().is_empty() {
        return;
    }
    let kept = match state.filter.as_mut() {
        Some(filter) => match filter(text) {
            Some(kept) => kept,
            None => return,
        },
        None => text.to_owned(),
    };
    let kept: String = kept.chars().take(MAX_LINE).collect();
    log::debug!("{label}: {kept}");
    if state.head.len() < state.head_lines {
        state.head.push(kept.clone());
    }
    if state.tail_lines == 0 {
        return;
    }
    if state.tail.len() == state.tail_lines {
        state.tail.pop_front();
    }
    state.tail.push_back(kept);
}

/// `lines` as an indented block after a colon, or nothing: the end of an
/// error message that quotes a program.
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
    use std::io::Write;

    fn pipe() -> (OwnedFd, File) {
        let (r, w) = super::super::spawn::pipe().unwrap();
        (r, File::from(w))
    }

    #[test]
    fn keeps_the_last_lines_until_eof() {
        let (r, mut w) = pipe();
        let mut tail = OutputTail::new(r, "test").unwrap();
        tail.follow().unwrap();
        for i in 0..20 {
            writeln!(w, "line {i}").unwrap();
        }
        writeln!(w).unwrap();
        write!(w, "no newline at the end").unwrap();
        drop(w);
        let lines = tail.last_lines(Duration::from_secs(5));
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[0], "line 13");
        assert_eq!(lines[7], "no newline at the end");
    }

    #[test]
    fn gives_up_waiting_for_a_writer_that_stays_open() {
        let (r, w) = pipe();
        let mut tail = OutputTail::new(r, "test").unwrap();
        tail.follow().unwrap();
        let started = Instant::now();
        assert!(tail.last_lines(Duration::from_millis(50)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(w);
    }

    #[test]
    fn a_line_without_its_newline_is_shown_before_eof() {
        let (r, mut w) = pipe();
        let tail = OutputTail::new(r, "test").unwrap();
        writeln!(w, "first").unwrap();
        write!(w, "half").unwrap();
        assert_eq!(tail.last_lines(Duration::ZERO), ["first", "half"]);
        write!(w, " and the rest").unwrap();
        drop(w);
        assert_eq!(
            tail.last_lines(Duration::from_secs(5)),
            ["first", "half and the rest"]
        );
        assert!(tail.fd().is_none());
    }

    #[test]
    fn a_thread_started_later_keeps_what_was_drained_before() {
        let (r, mut w) = pipe();
        let mut tail = OutputTail::new(r, "test").unwrap();
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
    fn head_and_tail_are_bounded_long_lines_cut_and_the_filter_applied() {
        let (r, mut w) = pipe();
        let filter: LineFilter =
            Box::new(|l: &str| (!l.starts_with("noise")).then(|| l.to_uppercase()));
        let tail = OutputTail::new(r, "test")
            .unwrap()
            .keeping(2, 3)
            .filtered(filter);
        for i in 0..10 {
            writeln!(w, "line {i}\nnoise {i}").unwrap();
        }
        w.write_all(&[b'x'; 5000]).unwrap();
        drop(w);
        let lines = tail.last_lines(Duration::from_secs(5));
        assert_eq!(tail.head(), ["LINE 0", "LINE 1"]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "LINE 9");
        // Cut at MAX_PENDING bytes into two lines, each cut to MAX_LINE.
        assert_eq!(lines[1].len(), MAX_LINE);
        assert_eq!(lines[2].len(), MAX_LINE);
    }

    #[test]
    fn the_output_of_a_real_program_is_collected() {
        let (r, w) = super::super::spawn::pipe().unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .stdout(std::process::Stdio::from(w.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(w))
            .spawn()
            .unwrap();
        let tail = OutputTail::new(r, "sh").unwrap();
        assert_eq!(tail.last_lines(Duration::from_secs(5)), ["out", "err"]);
        assert_eq!(child.wait().unwrap().code(), Some(3));
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
