//! A relayed TCP connection: each direction spliced from one socket
//! through a pipe into the other (the bytes never enter user space), the
//! pipe taken from a small pool only while bytes are in flight (so that
//! thousands of idle connections hold no pipe and the user's pipe budget,
//! `fs.pipe-user-pages-soft`, lasts), and the EOF passed on as a
//! half-close.

use super::net::{self, would_block};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Splice rounds per direction per wake-up before others get a turn.
const BUDGET: usize = 32;
/// Pipe size asked for (the unprivileged maximum; Go's splice, which
/// RootlessKit uses, asks for the same).
const PIPE_SIZE: libc::c_int = 1 << 20;
/// Empty pipes kept for reuse.
const IDLE_PIPES: usize = 16;
/// What one round copies through memory when no pipe can be had.
const COPY_CHUNK: usize = 64 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes it holds at most.
    capacity: usize,
}

/// Pipes for splice, reused.
#[derive(Default)]
pub(crate) struct Pipes {
    idle: Vec<Pipe>,
    /// Large pipes stopped working (the user's pipe budget is used up).
    small_only: bool,
}

fn pipe_size(fd: BorrowedFd<'_>, wanted: Option<libc::c_int>) -> Option<usize> {
    // SAFETY: fcntl on a pipe the caller owns; F_GETPIPE_SZ only reads.
    let r = unsafe {
        match wanted {
            Some(size) => libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size),
            None => libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ),
        }
    };
    (r > 0).then_some(r as usize)
}

impl Pipes {
    /// A pipe, or `None` when none can be made (out of descriptors): the
    /// caller copies through memory instead.
    fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            return Some(p);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return None;
        }
        // SAFETY: both were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut capacity = None;
        if !self.small_only {
            capacity = pipe_size(write.as_fd(), Some(PIPE_SIZE));
            self.small_only = capacity.is_none();
        }
        let capacity = capacity
            .or_else(|| pipe_size(write.as_fd(), None))
            .unwrap_or(COPY_CHUNK);
        Some(Pipe {
            read,
            write,
            capacity,
        })
    }

    fn put(&mut self, p: Pipe) {
        if self.idle.len() < IDLE_PIPES {
            self.idle.push(p);
        }
    }
}

/// splice(2) between a socket and a pipe, non-blocking.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice between two descriptors the caller keeps open; no
        // offsets (both are sockets or pipes).
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes taken from one side, not yet given to the other.
enum Stash {
    Empty,
    /// In a pipe (the usual case), and how many.
    Pipe(Pipe, usize),
    /// In memory, when no pipe could be had: the bytes and how many were sent.
    Bytes(Vec<u8>, usize),
}

/// What a pump round ended with.
enum Progress {
    /// Waiting for the kernel (EAGAIN on one side).
    Blocked,
    /// The budget ran out with work left: run again soon.
    More,
    /// EOF seen and passed on: this direction is finished.
    Done,
}

/// One direction of a connection.
struct Dir {
    stash: Stash,
    /// The source said EOF.
    eof: bool,
    /// The EOF was passed on (shutdown(SHUT_WR) of the destination).
    shut: bool,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            stash: Stash::Empty,
            eof: false,
            shut: false,
        }
    }

    /// Moves bytes from `src` to `dst` until one side blocks, the budget
    /// runs out or the EOF is passed on; `Err` means a broken connection.
    fn pump(&mut self, src: &OwnedFd, dst: &OwnedFd, pipes: &mut Pipes) -> io::Result<Progress> {
        for _ in 0..BUDGET {
            match std::mem::replace(&mut self.stash, Stash::Empty) {
                Stash::Pipe(pipe, pending) => match splice(pipe.read.as_fd(), dst.as_fd(), pending)
                {
                    Ok(n) if n >= pending => pipes.put(pipe),
                    Ok(n) => self.stash = Stash::Pipe(pipe, pending - n),
                    Err(e) if would_block(&e) => {
                        self.stash = Stash::Pipe(pipe, pending);
                        return Ok(Progress::Blocked);
                    }
                    Err(e) => return Err(e),
                },
                Stash::Bytes(buf, sent) => match net::send_to(dst.as_fd(), &buf[sent..], None) {
                    Ok(n) if sent + n >= buf.len() => {}
                    Ok(n) => self.stash = Stash::Bytes(buf, sent + n),
                    Err(e) if would_block(&e) => {
                        self.stash = Stash::Bytes(buf, sent);
                        return Ok(Progress::Blocked);
                    }
                    Err(e) => return Err(e),
                },
                Stash::Empty if self.eof => {
                    if !self.shut {
                        net::shutdown_write(dst);
                        self.shut = true;
                    }
                    return Ok(Progress::Done);
                }
                Stash::Empty => {
                    let taken = match pipes.get() {
                        Some(pipe) => {
                            match splice(src.as_fd(), pipe.write.as_fd(), pipe.capacity) {
                                Ok(n) => {
                                    if n > 0 {
                                        self.stash = Stash::Pipe(pipe, n);
                                    } else {
                                        pipes.put(pipe);
                                    }
                                    Ok(n)
                                }
                                Err(e) => {
                                    pipes.put(pipe);
                                    Err(e)
                                }
                            }
                        }
                        None => self.read_into_memory(src),
                    };
                    match taken {
                        Ok(0) => self.eof = true,
                        Ok(_) => {}
                        Err(e) if would_block(&e) => return Ok(Progress::Blocked),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(Progress::More)
    }

    /// The fallback when no pipe can be had: the bytes wait in memory.
    fn read_into_memory(&mut self, src: &OwnedFd) -> io::Result<usize> {
        let mut buf = vec![0u8; COPY_CHUNK];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe {
            libc::recv(
                src.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > 0 {
            buf.truncate(n);
            self.stash = Stash::Bytes(buf, 0);
        }
        Ok(n)
    }
}

/// What became of a connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// The budget ran out: pump again without waiting.
    Busy,
    Closed,
}

/// A relayed connection: host socket ⇄ inside socket.
pub(crate) struct Conn {
    pub tag: u64,
    pub host: OwnedFd,
    pub inside: OwnedFd,
    /// The inside connect() is still in progress.
    connecting: bool,
    /// The client address routed back to the inside socket, if any.
    pub routed: Option<IpAddr>,
    up: Dir,
    down: Dir,
}

impl Conn {
    pub fn new(
        tag: u64,
        host: OwnedFd,
        inside: OwnedFd,
        connecting: bool,
        routed: Option<IpAddr>,
    ) -> Conn {
        Conn {
            tag,
            host,
            inside,
            connecting,
            routed,
            up: Dir::new(),
            down: Dir::new(),
        }
    }

    /// Runs the directions an event can have moved: `(up, down)`, up being
    /// host→inside.
    pub fn pump(&mut self, pipes: &mut Pipes, (mut up, mut down): (bool, bool)) -> State {
        if self.connecting {
            match net::connect_finished(self.inside.as_fd()) {
                Ok(true) => {}
                Ok(false) => return State::Open,
                Err(_) => return self.reset(),
            }
            self.connecting = false;
            (up, down) = (true, true);
        }
        let a = if up {
            self.up.pump(&self.host, &self.inside, pipes)
        } else {
            Ok(Progress::Blocked)
        };
        let b = if down {
            self.down.pump(&self.inside, &self.host, pipes)
        } else {
            Ok(Progress::Blocked)
        };
        match (a, b) {
            (Err(_), _) | (_, Err(_)) => self.reset(),
            _ if self.up.shut && self.down.shut => State::Closed,
            (Ok(Progress::More), _) | (_, Ok(Progress::More)) => State::Busy,
            _ => State::Open,
        }
    }

    /// Aborts both sides with a reset, so that neither peer takes a broken
    /// relay for an orderly end.
    fn reset(&mut self) -> State {
        net::reset_on_close(self.host.as_fd());
        net::reset_on_close(self.inside.as_fd());
        State::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of non-blocking TCP sockets on loopback.
    fn pair() -> (OwnedFd, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (OwnedFd::from(b), a)
    }

    #[test]
    fn bytes_and_the_half_close_cross_in_both_directions() {
        let (host, mut client) = pair();
        let (inside, mut server) = pair();
        let mut conn = Conn::new(1, host, inside, false, None);
        let mut pipes = Pipes::default();
        client.write_all(b"ping").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            conn.pump(&mut pipes, (true, true));
            std::thread::sleep(std::time::Duration::from_millis(5));
            if conn.up.shut {
                break;
            }
        }
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        server.write_all(b"pong").unwrap();
        drop(server);
        let mut state = State::Open;
        for _ in 0..200 {
            state = conn.pump(&mut pipes, (true, true));
            if state == State::Closed {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(state, State::Closed);
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pong");
    }
}
