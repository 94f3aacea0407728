//! The API's unix socket server, driven by the parent's poll loop: no thread
//! of its own, every socket non-blocking, so a slow or malicious client can
//! hold at most one connection slot and never the loop.

use super::router::route;
use super::Backend;
use crate::http::{parse_request, reason, response, HttpError, Parsed};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connections served at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 32;
/// A connection that completes no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<Conn>,
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    continue_sent: bool,
    /// Close once `output` is written.
    closing: bool,
    deadline: Instant,
}

impl ApiServer {
    /// Listens on `path` (a stale socket there is replaced), readable and
    /// writable by the owner only.
    pub fn bind(path: &Path) -> io::Result<ApiServer> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The socket is created with the umask applied; make it 0600 from
        // the start instead of chmod-ing it after a window.
        // SAFETY: umask only changes this process's mask; the parent is
        // single-threaded here.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener = bound?;
        listener.set_nonblocking(true)?;
        Ok(ApiServer {
            listener,
            path: path.to_path_buf(),
            conns: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Descriptors to poll for reading, and whether each also wants POLLOUT.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = vec![(self.listener.as_fd(), false)];
        v.extend(
            self.conns
                .iter()
                .map(|c| (c.stream.as_fd(), !c.output.is_empty())),
        );
        v
    }

    /// How long the poll may sleep before a connection times out.
    pub fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        self.conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
    }

    /// Accepts, reads, answers and writes whatever is ready; closes what
    /// is done, broken or idle.
    pub fn serve(&mut self, backend: &mut dyn Backend) {
        self.accept();
        let now = Instant::now();
        let mut i = 0;
        while i < self.conns.len() {
            let keep = self.conns[i].step(backend, now);
            if keep {
                i += 1;
            } else {
                self.conns.swap_remove(i);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.conns.len() >= MAX_CONNECTIONS {
                        let mut s = stream;
                        let _ = s.write_all(&error_text(503, "too many API connections"));
                        continue;
                    }
                    self.conns.push(Conn {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        continue_sent: false,
                        closing: false,
                        deadline: Instant::now() + IDLE_TIMEOUT,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and the like: try again on the next wake-up.
                Err(_) => return,
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn error_text(status: u16, text: &str) -> Vec<u8> {
    let body = format!("{status} {}: {text}\n", reason(status));
    response(status, "text/plain; charset=utf-8", body.as_bytes(), false)
}

impl Conn {
    /// One round of work; `false` when the connection is finished.
    fn step(&mut self, backend: &mut dyn Backend, now: Instant) -> bool {
        if !self.flush() {
            return false;
        }
        if self.closing {
            return !self.output.is_empty() && now < self.deadline;
        }
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > crate::http::MAX_HEAD + crate::http::MAX_BODY {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        while !self.closing {
            match parse_request(&self.input) {
                Ok(Parsed::Complete(req, used)) => {
                    self.input.drain(..used);
                    self.continue_sent = false;
                    self.output.extend(route(&req, backend));
                    self.deadline = now + IDLE_TIMEOUT;
                    if !req.keep_alive {
                        self.closing = true;
                    }
                }
                Ok(Parsed::Partial { expect_continue }) => {
                    if expect_continue && !self.continue_sent {
                        self.output
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.continue_sent = true;
                    }
                    break;
                }
                Err(e) => {
                    let status = match e {
                        HttpError::HeadTooLarge => 431,
                        HttpError::BodyTooLarge => 413,
                        HttpError::Malformed(_) => 400,
                    };
                    self.output.extend(error_text(status, &e.to_string()));
                    self.closing = true;
                }
            }
        }
        if eof {
            // The peer sent all it ever will: answer what was complete, then close.
            self.closing = true;
        }
        if now >= self.deadline {
            if self.output.is_empty() && !self.input.is_empty() {
                let _ = self
                    .stream
                    .write_all(&error_text(408, "request not completed in time"));
            }
            return false;
        }
        self.flush() && !(self.closing && self.output.is_empty())
    }

    /// Writes what it can; `false` if the peer is gone.
    fn flush(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}
