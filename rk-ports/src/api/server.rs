//! The API's unix socket server, driven by the parent's poll loop: no thread
//! of its own, every socket non-blocking.
//!
//! The socket is the owner's (0600), but every process of the owner can
//! reach it, the command inside included, so the server must keep serving
//! the owner's real requests whatever other clients do:
//!
//! - Each request has a deadline fixed when the server starts waiting for
//!   it (at accept, or when the previous response was written): bytes that
//!   trickle in never extend it. Only the server's own progress (a
//!   complete request, a written response) starts a new one.
//! - At most [`MAX_CONNECTIONS`] are held. A new connection is never turned
//!   away: when all slots are taken, the one that has shown least is closed
//!   to make room: idle keep-alive connections first, then connections that
//!   sent nothing, then the oldest unfinished request.
//! - A new connection is served as soon as it is accepted, so a client that
//!   writes its request right after connecting (every real client) is
//!   answered before any flood can push it out.
//! - One response at a time per connection: a client that pipelines
//!   requests and never reads gets no more than one answer buffered; its
//!   further bytes wait in its own socket.
//! - Buffered input is bounded per connection ([`MAX_INPUT`]), so memory is
//!   bounded by `MAX_CONNECTIONS * MAX_INPUT` whatever the clients send.

use super::router::route;
use super::Backend;
use crate::http::{parse_request, reason, response, HttpError, Parsed, MAX_HEAD};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connections held at once; beyond it the least useful one is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// From the start of the wait for a request to the request complete.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// From a response queued to it taken by the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes buffered for one connection: a request head and a body far
/// larger than any port spec.
pub const MAX_INPUT: usize = MAX_HEAD + 16 * 1024;
/// Connections accepted in one round, so that a flood of connects cannot
/// keep the loop from the rest of its work.
const ACCEPTS_PER_ROUND: usize = 4 * MAX_CONNECTIONS;
/// Pipelined requests answered on one connection in one round.
const REQUESTS_PER_ROUND: usize = 16;

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
    /// When the current wait (for a request, or for the client to take a
    /// response) ends. Set only by the server's own progress.
    deadline: Instant,
    /// When the current wait began, to find the longest-waiting one.
    since: Instant,
    /// Requests answered on this connection.
    served: u64,
    /// `output` holds a response (not only `100 Continue`).
    responding: bool,
    /// Complete requests may be left in `input`.
    more: bool,
    /// The peer has shut down its side: answer what is complete, then close.
    eof: bool,
}

/// Which connection to close first when every slot is taken (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Keep-alive between requests: its client has what it asked for.
    Idle,
    /// Connected and sent nothing yet.
    Silent,
    /// Part of a request.
    Partial,
    /// A response waiting to be taken.
    Answering,
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

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Descriptors to poll for reading, and whether each also wants POLLOUT.
    /// A connection with a response pending is not polled for reading: its
    /// next request waits until the answer is taken.
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
            .map(|c| match c.more {
                true => Duration::ZERO,
                false => c.deadline.saturating_duration_since(now),
            })
            .min()
    }

    /// Accepts, reads, answers and writes whatever is ready; closes what
    /// is done, broken or out of time.
    pub fn serve(&mut self, backend: &mut dyn Backend) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].step(backend, now) {
                i += 1;
            } else {
                self.conns.swap_remove(i);
            }
        }
        self.accept(backend);
    }

    fn accept(&mut self, backend: &mut dyn Backend) {
        let mut evicted_for_fds = false;
        for _ in 0..ACCEPTS_PER_ROUND {
            match rk_driver::relay::accept(self.listener.as_fd()) {
                Ok((fd, _)) => {
                    let stream = UnixStream::from(fd);
                    if self.conns.len() >= MAX_CONNECTIONS {
                        self.evict_one();
                    }
                    let now = Instant::now();
                    let mut c = Conn::new(stream, now);
                    // Most clients have written their request already.
                    if c.step(backend, now) {
                        self.conns.push(c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Out of descriptors: make room once, else wait for the
                // next round (the owner's connection stays in the backlog).
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && !evicted_for_fds
                        && !self.conns.is_empty() =>
                {
                    evicted_for_fds = true;
                    self.evict_one();
                }
                Err(_) => return,
            }
        }
    }

    /// Closes the connection that has shown least: the lowest [`Standing`],
    /// and of those the one waiting longest.
    fn evict_one(&mut self) {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (c.standing(), c.since))
            .map(|(i, _)| i);
        if let Some(i) = victim {
            let mut c = self.conns.swap_remove(i);
            if c.standing() == Standing::Partial {
                c.say(408, "too many API connections: this request took too long");
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
    fn new(stream: UnixStream, now: Instant) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            continue_sent: false,
            closing: false,
            deadline: now + REQUEST_TIMEOUT,
            since: now,
            served: 0,
            responding: false,
            more: false,
            eof: false,
        }
    }

    fn standing(&self) -> Standing {
        if !self.output.is_empty() || self.closing {
            Standing::Answering
        } else if !self.input.is_empty() {
            Standing::Partial
        } else if self.served > 0 {
            Standing::Idle
        } else {
            Standing::Silent
        }
    }

    /// A last word before closing, if the socket takes it at once.
    fn say(&mut self, status: u16, text: &str) {
        let _ = self.stream.write(&error_text(status, text));
    }

    /// One round of work; `false` when the connection is finished.
    fn step(&mut self, backend: &mut dyn Backend, now: Instant) -> bool {
        self.more = false;
        let mut answered = 0;
        loop {
            if !self.flush(now) {
                return false;
            }
            // One response at a time: read on only once it is taken.
            if !self.output.is_empty() {
                break;
            }
            if self.closing {
                return false;
            }
            if answered == REQUESTS_PER_ROUND {
                // Pipelined requests left: come back without waiting for
                // the socket, which may have nothing new.
                self.more = true;
                break;
            }
            if !self.eof {
                match self.read() {
                    Ok(eof) => self.eof = eof,
                    Err(()) => return false,
                }
            }
            if self.answer(backend, now) {
                answered += 1;
            } else if self.eof {
                // The peer sent all it ever will, and what is left is no
                // complete request.
                return false;
            } else {
                break;
            }
        }
        if now >= self.deadline {
            if self.standing() == Standing::Partial {
                self.say(408, "request not completed in time");
            }
            return false;
        }
        true
    }

    /// Reads what is there, up to [`MAX_INPUT`] buffered. `Ok(true)` at
    /// end of stream, `Err` when the connection is broken.
    fn read(&mut self) -> Result<bool, ()> {
        let mut buf = [0u8; 4096];
        while self.input.len() <= MAX_INPUT {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            }
        }
        Ok(false)
    }

    /// Answers the first complete request in the input, if any; `true`
    /// when something was queued to be written.
    fn answer(&mut self, backend: &mut dyn Backend, now: Instant) -> bool {
        if self.input.is_empty() {
            return false;
        }
        match parse_request(&self.input) {
            Ok(Parsed::Complete(req, used)) => {
                self.input.drain(..used);
                self.continue_sent = false;
                self.output.extend(route(&req, backend));
                self.served += 1;
                self.responding = true;
                self.deadline = now + WRITE_TIMEOUT;
                self.since = now;
                if !req.keep_alive {
                    self.closing = true;
                }
            }
            Ok(Parsed::Partial { .. }) if self.input.len() > MAX_INPUT => {
                self.output.extend(error_text(
                    413,
                    &format!("request larger than {MAX_INPUT} bytes"),
                ));
                self.closing = true;
            }
            Ok(Parsed::Partial { expect_continue }) => {
                if expect_continue && !self.continue_sent {
                    self.output
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.continue_sent = true;
                } else {
                    return false;
                }
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
        true
    }

    /// Writes what it can; `false` if the peer is gone. A response written
    /// in full starts the wait for the next request.
    fn flush(&mut self, now: Instant) -> bool {
        if self.output.is_empty() {
            return true;
        }
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
        if std::mem::take(&mut self.responding) && !self.closing {
            self.deadline = now + REQUEST_TIMEOUT;
            self.since = now;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiError, Info};
    use crate::spec::{PortSpec, PortStatus};

    struct Nothing;

    impl Backend for Nothing {
        fn info(&mut self) -> Info {
            Info::default()
        }
        fn list_ports(&mut self) -> Result<Vec<PortStatus>, ApiError> {
            Ok(Vec::new())
        }
        fn add_port(&mut self, _: PortSpec) -> Result<PortStatus, ApiError> {
            Err(ApiError::bad_request("no"))
        }
        fn remove_port(&mut self, _: i64) -> Result<(), ApiError> {
            Err(ApiError::bad_request("no"))
        }
    }

    fn server() -> (ApiServer, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "rk-ports-server-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("api.sock");
        (ApiServer::bind(&path).unwrap(), path, dir)
    }

    fn ask(path: &Path) -> UnixStream {
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c
    }

    fn answered(c: &mut UnixStream) -> bool {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        matches!(c.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200 "))
    }

    #[test]
    fn a_full_house_of_idle_and_silent_clients_still_lets_the_owner_in() {
        let (mut s, path, dir) = server();
        // Keep-alive clients that got their answer and stay.
        let mut idle: Vec<UnixStream> = (0..MAX_CONNECTIONS / 2).map(|_| ask(&path)).collect();
        s.serve(&mut Nothing);
        assert!(idle.iter_mut().all(answered));
        // Clients that never say anything.
        let silent: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        s.serve(&mut Nothing);
        assert_eq!(s.connections(), MAX_CONNECTIONS);
        // The owner's request is answered in the same round it arrives.
        let mut owner = ask(&path);
        s.serve(&mut Nothing);
        assert!(answered(&mut owner));
        assert_eq!(s.connections(), MAX_CONNECTIONS);
        drop((idle, silent));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn idle_ones_go_before_silent_ones_and_partial_ones_last() {
        let (mut s, path, dir) = server();
        let mut partial = UnixStream::connect(&path).unwrap();
        partial.write_all(b"GET /v1/in").unwrap();
        s.serve(&mut Nothing);
        let _silent: Vec<UnixStream> = (0..MAX_CONNECTIONS / 2)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        s.serve(&mut Nothing);
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| ask(&path)).collect();
        s.serve(&mut Nothing);
        assert_eq!(s.connections(), MAX_CONNECTIONS);
        let standings: Vec<Standing> = s.conns.iter().map(Conn::standing).collect();
        assert!(standings.contains(&Standing::Partial), "{standings:?}");
        assert_eq!(
            standings.iter().filter(|x| **x == Standing::Silent).count(),
            MAX_CONNECTIONS / 2
        );
        drop(idle);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_pipelining_client_that_never_reads_gets_one_answer_buffered() {
        let (mut s, path, dir) = server();
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_nonblocking(true).unwrap();
        let req = b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut sent = 0;
        for _ in 0..200 {
            while c.write(req).is_ok() {
                sent += 1;
                if sent > 100_000 {
                    break;
                }
            }
            s.serve(&mut Nothing);
        }
        let held: usize = s.conns.iter().map(|c| c.output.len() + c.input.len()).sum();
        assert!(held <= MAX_INPUT + 4096, "{held} bytes held");
        assert!(sent < 100_000, "the server kept reading");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn oversized_requests_are_refused() {
        let (mut s, path, dir) = server();
        let mut c = UnixStream::connect(&path).unwrap();
        let head = format!(
            "POST /v1/ports HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_INPUT * 2
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&vec![b' '; MAX_INPUT + 1]).unwrap();
        for _ in 0..10 {
            s.serve(&mut Nothing);
        }
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut r = String::new();
        let _ = c.read_to_string(&mut r);
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        assert_eq!(s.connections(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
