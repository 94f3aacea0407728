//! What pasta prints: which lines are worth keeping (for error messages
//! and for the facts pasta prints about the network it built). Collecting
//! and logging them is the SDK's ([`OutputTail`]).
//!
//! pasta writes to its log file (here: its own stderr, see `args`) and,
//! until it has finished starting, also to stderr directly: every early
//! message arrives twice, first in the log file's format
//! (`0.0460: info:    DHCP:`), then plain. Plain duplicates are dropped.
//! Without `--log-file`, a pasta with no syslog daemon to talk to adds
//! "Failed to send N bytes to syslog" lines, which are dropped too.

use rk_driver::helper::tail::LineFilter;
use rk_driver::helper::OutputTail;
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;

/// Lines kept from the start (they describe the network).
const HEAD_LINES: usize = 48;
/// Lines kept from the end, for error messages.
const TAIL_LINES: usize = 10;

/// pasta's output pipe, collected with pasta's filter.
pub fn collect(reader: OwnedFd) -> io::Result<OutputTail> {
    Ok(OutputTail::new(reader, "pasta")?
        .keeping(HEAD_LINES, TAIL_LINES)
        .filtered(filter()))
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

/// Keeps a log-file line as `LEVEL: message` (or the message), drops
/// noise and the plain echo that follows a log-file line.
pub fn filter() -> LineFilter {
    let mut last_logged: Option<String> = None;
    Box::new(move |line| match classify(line) {
        Line::Noise => None,
        Line::Logged(level, message) => {
            last_logged = Some(message.to_owned());
            Some(if level.is_empty() {
                message.to_owned()
            } else {
                format!("{level}: {message}")
            })
        }
        Line::Plain(text) => (last_logged.take().as_deref() != Some(text)).then(|| text.to_owned()),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

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

    /// What the collector keeps of `bytes` (head, tail).
    fn kept(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let (r, w) = rk_driver::helper::spawn::pipe().unwrap();
        let tail = collect(r).unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(bytes).unwrap();
        drop(w);
        let last = tail.last_lines(Duration::from_secs(5));
        (tail.head(), last)
    }

    #[test]
    fn log_file_lines_are_kept_once_and_the_header_dropped() {
        let (head, _) = kept(STARTUP.as_bytes());
        assert_eq!(head[0], "Template interface: eth0 (IPv4), eth0 (IPv6)");
        assert_eq!(head[1], "Namespace interface: tap0");
        assert_eq!(head[3], "    assign: 10.0.2.100");
        assert_eq!(head.len(), 9, "{head:#?}");
    }

    #[test]
    fn ipv6_facts_come_from_the_ndp_block_only() {
        let (head, _) = kept(STARTUP.as_bytes());
        let f = Facts::from_lines(&head);
        assert_eq!(f.ipv6_address, Some("fd00::2".parse().unwrap()));
        assert_eq!(f.ipv6_router, Some("fd00::1".parse().unwrap()));
        let (head, _) = kept(b"DHCP:\n    assign: 10.0.2.100\n    router: 10.0.2.2\n");
        assert_eq!(Facts::from_lines(&head), Facts::default());
    }

    #[test]
    fn errors_keep_their_level_and_syslog_complaints_go() {
        let (_, tail) = kept(
            b"Failed to send 54 bytes to syslog\nCouldn't open network namespace /proc/1/ns/net\n\
              3.0001: ERROR:   Namespace x is gone\nlast words",
        );
        assert_eq!(
            tail,
            [
                "Couldn't open network namespace /proc/1/ns/net",
                "ERROR: Namespace x is gone",
                "last words"
            ]
        );
    }

    #[test]
    fn a_plain_line_is_dropped_only_right_after_its_logged_twin() {
        let (_, tail) = kept(b"1.0000: info:    a\nb\na\n");
        assert_eq!(tail, ["a", "b", "a"]);
    }

    #[test]
    fn only_the_last_lines_are_kept_for_errors() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let (head, tail) = kept(text.as_bytes());
        assert_eq!(head.len(), HEAD_LINES);
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 40");
    }
}
