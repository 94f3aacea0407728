//! vpnkit's stderr: kept out of the user's terminal (as RootlessKit does)
//! unless `--debug`, but its last lines go into error messages.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

const KEPT_LINES: usize = 12;
const MAX_LINE: usize = 400;

/// The read end of vpnkit's stderr pipe and what came out of it lately.
pub struct StderrTail {
    fd: OwnedFd,
    debug: bool,
    state: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    kept: VecDeque<String>,
    partial: Vec<u8>,
    eof: bool,
}

impl StderrTail {
    /// Takes the read end of the pipe (made non-blocking here).
    pub fn new(fd: OwnedFd, debug: bool) -> io::Result<Arc<Self>> {
        set_nonblocking(&fd)?;
        Ok(Arc::new(StderrTail {
            fd,
            debug,
            state: Mutex::new(Lines::default()),
        }))
    }

    /// Reads whatever is available now, without blocking.
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        let mut lines = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !lines.eof {
            // SAFETY: read(2) into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => lines.eof = true,
                n if n > 0 => self.take(&mut lines, &buf[..n as usize]),
                _ => {
                    if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        break;
                    }
                }
            }
        }
    }

    fn take(&self, lines: &mut Lines, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&lines.partial).into_owned();
                lines.partial.clear();
                if self.debug {
                    eprintln!("rk-vpnkit: vpnkit: {line}");
                }
                if lines.kept.len() == KEPT_LINES {
                    lines.kept.pop_front();
                }
                lines.kept.push_back(line);
            } else if lines.partial.len() < MAX_LINE {
                lines.partial.push(b);
            }
        }
    }

    /// Keeps draining on a thread until vpnkit closes its stderr. Start it
    /// only after the last fork (the namespace helper).
    pub fn follow(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("vpnkit-stderr".into())
            .spawn(move || loop {
                let mut pfd = [nix::poll::PollFd::new(
                    me.fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE);
                me.drain();
                if me.state.lock().map(|l| l.eof).unwrap_or(true) {
                    return;
                }
            });
    }

    /// The last lines, for an error message (empty if vpnkit said nothing).
    pub fn text(&self) -> String {
        self.drain();
        let lines = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<String> = lines.kept.iter().cloned().collect();
        if !lines.partial.is_empty() {
            all.push(String::from_utf8_lossy(&lines.partial).into_owned());
        }
        all.join("\n")
    }

    /// `": vpnkit said:\n..."` or nothing, to append to a message.
    pub fn suffix(&self) -> String {
        let t = self.text();
        if t.trim().is_empty() {
            String::new()
        } else {
            format!("; vpnkit said:\n{t}")
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn keeps_the_last_lines_and_the_partial_one() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let tail = StderrTail::new(r, false).unwrap();
        let mut w = std::fs::File::from(w);
        for i in 0..20 {
            writeln!(w, "line {i}").unwrap();
        }
        write!(w, "no newline").unwrap();
        let text = tail.text();
        assert!(!text.contains("line 7\n"), "{text}");
        assert!(text.starts_with("line 8\n"), "{text}");
        assert!(text.ends_with("line 19\nno newline"), "{text}");
        drop(w);
        tail.drain();
        assert!(tail.suffix().starts_with("; vpnkit said:\n"));
    }
}
