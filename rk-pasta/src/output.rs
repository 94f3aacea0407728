//! pasta's output: kept for error messages and for the facts pasta prints
//! about the network it built, echoed to our stderr only in debug mode.
//!
//! pasta writes to its log file (here: its own stderr, see `args`) and,
//! until it has finished starting, also to stderr directly: every early
//! message arrives twice, first in the log file's format
//! (`0.0460: info:    DHCP:`), then plain. Plain duplicates are dropped.
//! Without `--log-file`, a pasta with no syslog daemon to talk to adds
//! "Failed to send N bytes to syslog" lines, which are dropped too.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines kept from the start (they describe the network).
const HEAD_LINES: usize = 48;
/// Lines kept from the end, for error messages.
const TAIL_LINES: usize = 10;
/// A longer line is cut to this many characters.
const MAX_LINE: usize = 300;
/// A line without newline is cut here rather than growing without bound.
const MAX_PENDING: usize = 4096;

/// The lines of pasta's output that are worth keeping.
#[derive(Debug, Default)]
pub struct Collector {
    pending: Vec<u8>,
    /// The message of the last log-file line, to drop its plain echo.
    last_logged: Option<String>,
    head: Vec<String>,
    tail: VecDeque<String>,
    echo: bool,
}

/// How one line of pasta's output is treated.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// Not worth keeping.
    Noise,
    /// A log-file line: its level (possibly empty) and message.
    Logged(&'a str, &'a str),
    Plain(&'a str),
}

fn classify(line: &str) -> Line<'_> {
    if line.trim().is_empty() {
        return Line::Noise;
    }
    if line.starts_with("Failed to send ") && line.ends_with(" bytes to syslog") {
        return Line::Noise;
    }
    // The log file's first line: "pasta VERSION: EXECUTABLE (PID)".
    if line.starts_with("pasta ") && line.contains(": /") && line.ends_with(')') {
        return Line::Noise;
    }
    if let Some((stamp, rest)) = line.split_once(": ") {
        let is_stamp = stamp.split_once('.').is_some_and(|(s, f)| {
            !s.is_empty()
                && !f.is_empty()
                && (s.bytes().chain(f.bytes())).all(|b| b.is_ascii_digit())
        });
        if is_stamp {
            if rest.contains(" - log truncated at ") {
                return Line::Noise;
            }
            for (prefix, level) in [
                ("ERROR:   ", "ERROR"),
                ("WARNING: ", "WARNING"),
                ("info:    ", ""),
                ("         ", ""),
            ] {
                if let Some(message) = rest.strip_prefix(prefix) {
                    return Line::Logged(level, message);
                }
            }
            return Line::Logged("", rest);
        }
    }
    Line::Plain(line)
}

impl Collector {
    pub fn new(echo: bool) -> Self {
        Collector {
            echo,
            ..Default::default()
        }
    }

    /// Takes raw bytes as they come.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' || self.pending.len() >= MAX_PENDING {
                let raw = std::mem::take(&mut self.pending);
                self.line(&String::from_utf8_lossy(&raw));
                if b == b'\n' {
                    continue;
                }
            }
            self.pending.push(b);
        }
    }

    /// The output ended: a last line without newline still counts.
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            let raw = std::mem::take(&mut self.pending);
            self.line(&String::from_utf8_lossy(&raw));
        }
    }

    fn line(&mut self, raw: &str) {
        let line = raw.trim_end();
        let kept = match classify(line) {
            Line::Noise => return,
            Line::Logged(level, message) => {
                self.last_logged = Some(message.to_owned());
                if level.is_empty() {
                    message.to_owned()
                } else {
                    format!("{level}: {message}")
                }
            }
            Line::Plain(text) => {
                if self.last_logged.take().as_deref() == Some(text) {
                    return;
                }
                text.to_owned()
            }
        };
        let kept: String = kept.chars().take(MAX_LINE).collect();
        if self.echo {
            let _ = writeln!(io::stderr().lock(), "rk-pasta: pasta: {kept}");
        }
        if self.head.len() < HEAD_LINES {
            self.head.push(kept.clone());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(kept);
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// What pasta said about the network it built.
    pub fn facts(&self) -> Facts {
        Facts::from_lines(&self.head)
    }
}

/// Facts pasta prints when it starts (the "NDP/DHCPv6:" block tells the
/// IPv6 address and router it copied from the host).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    pub ipv6_address: Option<Ipv6Addr>,
    pub ipv6_router: Option<Ipv6Addr>,
}

impl Facts {
    pub fn from_lines(lines: &[String]) -> Self {
        let mut facts = Facts::default();
        let mut in_ipv6 = false;
        for line in lines {
            if !line.starts_with(char::is_whitespace) {
                in_ipv6 = line.trim_end() == "NDP/DHCPv6:";
                continue;
            }
            if !in_ipv6 {
                continue;
            }
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            let value = value.trim().parse().ok();
            match key {
                "assign" => facts.ipv6_address = value,
                "router" => facts.ipv6_router = value,
                _ => {}
            }
        }
        facts
    }
}

#[derive(Debug, Default)]
struct State {
    collector: Collector,
    eof: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// pasta's collected output, shared with the thread that drains it.
#[derive(Debug, Clone, Default)]
pub struct Output {
    shared: Arc<Shared>,
}

impl Output {
    pub fn new(echo: bool) -> Self {
        let state = State {
            collector: Collector::new(echo),
            eof: false,
        };
        Output {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn feed(&self, bytes: &[u8]) {
        self.lock().collector.feed(bytes);
    }

    pub fn end(&self) {
        let mut state = self.lock();
        state.collector.finish();
        state.eof = true;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Reads `reader` (blocking) until EOF on a new thread, so that pasta
    /// never blocks on a full pipe.
    pub fn drain_in_background(&self, reader: OwnedFd) -> io::Result<()> {
        let output = self.clone();
        let consequence = "pasta's later messages are not collected";
        crate::contain::spawn("pasta-output", 64 * 1024, consequence, move || {
            let mut file = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => output.feed(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            output.end();
        })?;
        Ok(())
    }

    /// The last lines, after waiting up to `wait` for the output to end (a
    /// program that just exited may still have output in the pipe).
    pub fn last_lines(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
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
        state.collector.tail()
    }

    pub fn facts(&self) -> Facts {
        self.lock().collector.facts()
    }
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

    /// The start of pasta 2023_03_09's output with `--log-file` pointing at
    /// its own stderr, as recorded.
    const STARTUP: &str = "pasta unknown version: /usr/bin/passt.avx2 (27322)\n\
        0.0460: info:    Template interface: eth0 (IPv4), eth0 (IPv6)\n\
        Template interface: eth0 (IPv4), eth0 (IPv6)\n\
        0.0460: info:    Namespace interface: tap0\n\
        Namespace interface: tap0\n\
        0.0460: info:    DHCP:\n\
        DHCP:\n\
        0.0460: info:        assign: 10.0.2.100\n    assign: 10.0.2.100\n\
        0.0460: info:        router: 10.0.2.2\n    router: 10.0.2.2\n\
        0.0460: info:    NDP/DHCPv6:\n\
        NDP/DHCPv6:\n\
        0.0460: info:        assign: fd00::2\n    assign: fd00::2\n\
        0.0460: info:        router: fd00::1\n    router: fd00::1\n\
        0.0460: info:        our link-local: fe80::fc:ff:fe00:1\n    our link-local: fe80::fc:ff:fe00:1\n";

    #[test]
    fn log_file_lines_are_kept_once_and_the_header_dropped() {
        let mut c = Collector::new(false);
        c.feed(STARTUP.as_bytes());
        assert_eq!(c.head[0], "Template interface: eth0 (IPv4), eth0 (IPv6)");
        assert_eq!(c.head[1], "Namespace interface: tap0");
        assert_eq!(c.head[3], "    assign: 10.0.2.100");
        assert_eq!(c.head.len(), 9, "{:#?}", c.head);
    }

    #[test]
    fn ipv6_facts_come_from_the_ndp_block_only() {
        let mut c = Collector::new(false);
        c.feed(STARTUP.as_bytes());
        let f = c.facts();
        assert_eq!(f.ipv6_address, Some("fd00::2".parse().unwrap()));
        assert_eq!(f.ipv6_router, Some("fd00::1".parse().unwrap()));
        let mut c = Collector::new(false);
        c.feed(b"DHCP:\n    assign: 10.0.2.100\n    router: 10.0.2.2\n");
        assert_eq!(c.facts(), Facts::default());
    }

    #[test]
    fn errors_keep_their_level_and_syslog_complaints_go() {
        let mut c = Collector::new(false);
        c.feed(
            b"Failed to send 54 bytes to syslog\nCouldn't open network namespace /proc/1/ns/net\n",
        );
        c.feed(b"3.0001: ERROR:   Namespace x is gone\nlast words");
        c.finish();
        assert_eq!(
            c.tail(),
            [
                "Couldn't open network namespace /proc/1/ns/net",
                "ERROR: Namespace x is gone",
                "last words"
            ]
        );
    }

    #[test]
    fn a_plain_line_is_dropped_only_right_after_its_logged_twin() {
        let mut c = Collector::new(false);
        c.feed(b"1.0000: info:    a\nb\na\n");
        assert_eq!(c.tail(), ["a", "b", "a"]);
    }

    #[test]
    fn tail_is_bounded_and_long_lines_cut() {
        let mut c = Collector::new(false);
        for i in 0..50 {
            c.feed(format!("line {i}\n").as_bytes());
        }
        c.feed(&[b'x'; 5000]);
        c.finish();
        let tail = c.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        // The line without end is cut at MAX_PENDING bytes into two.
        assert_eq!(tail[0], "line 42");
        assert_eq!(tail[TAIL_LINES - 2].len(), MAX_LINE);
        assert_eq!(tail[TAIL_LINES - 1].len(), MAX_LINE);
    }

    #[test]
    fn background_drain_collects_until_eof() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let out = Output::new(false);
        out.drain_in_background(r).unwrap();
        let mut w = std::fs::File::from(w);
        writeln!(w, "hello").unwrap();
        drop(w);
        assert_eq!(out.last_lines(Duration::from_secs(5)), ["hello"]);
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
