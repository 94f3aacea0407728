//! slirp4netns's error output: drained on a thread so that it never blocks
//! on a full pipe, the last lines kept for error messages, and echoed to
//! our stderr only in debug mode.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines kept for error messages.
const KEPT_LINES: usize = 8;
/// A longer line is cut to this many characters.
const MAX_LINE: usize = 300;

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<String>,
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
#[derive(Debug, Clone)]
pub struct OutputTail {
    shared: Arc<Shared>,
}

impl OutputTail {
    /// Reads `reader` until EOF on a new thread. With `echo`, every line is
    /// also written to our stderr, prefixed with `label`.
    pub fn collect(reader: OwnedFd, label: &'static str, echo: bool) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("{label}-output"))
            .spawn(move || drain(reader, &theirs, label, echo))?;
        Ok(OutputTail { shared })
    }

    /// The last lines, after waiting up to `wait` for the writer to finish
    /// (a program that just exited may still have output in the pipe).
    pub fn last_lines(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
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

fn drain(reader: OwnedFd, shared: &Shared, label: &str, echo: bool) {
    let mut reader = BufReader::new(std::fs::File::from(reader));
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end();
        if echo {
            let _ = writeln!(io::stderr().lock(), "{label}: {line}");
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut state = shared.lock();
        if state.lines.len() == KEPT_LINES {
            state.lines.pop_front();
        }
        state.lines.push_back(line.chars().take(MAX_LINE).collect());
    }
    shared.lock().eof = true;
    shared.changed.notify_all();
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
        let tail = OutputTail::collect(r, "test", false).unwrap();
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
        let tail = OutputTail::collect(r, "test", false).unwrap();
        let started = Instant::now();
        assert!(tail.last_lines(Duration::from_millis(50)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(w);
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
