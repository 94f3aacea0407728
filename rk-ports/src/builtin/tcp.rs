//! One relayed TCP connection: host socket ⇄ inside socket, each direction
//! spliced through a pooled pipe (zero-copy), with half-close passed on.

use super::pipes::{Pipe, PipePool};
use crate::sys::splice;
use socket2::Socket;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

/// How many splice rounds one direction may run per wake-up before others
/// get their turn.
const BUDGET: usize = 32;

/// Bytes taken from one side and not yet given to the other.
enum Stash {
    Empty,
    /// In a pipe (the usual case).
    Pipe(Pipe, usize),
    /// In memory, when no pipe could be had: (bytes, how many were sent).
    Bytes(Vec<u8>, usize),
}

/// One direction of a connection.
pub struct Dir {
    stash: Stash,
    /// The source said EOF.
    eof: bool,
    /// The EOF was passed on (shutdown(SHUT_WR) of the destination).
    shut: bool,
}

/// What a pump round ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Waiting for the kernel (EAGAIN on one side).
    Blocked,
    /// The budget ran out with work left: run again soon.
    More,
    /// EOF seen and passed on; this direction is finished.
    Done,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            stash: Stash::Empty,
            eof: false,
            shut: false,
        }
    }

    pub fn done(&self) -> bool {
        self.shut
    }

    /// Moves bytes from `src` to `dst` until one blocks, the budget runs
    /// out, or EOF is passed on. An error means the connection is broken.
    pub fn pump(&mut self, src: &Socket, dst: &Socket, pool: &mut PipePool) -> io::Result<Flow> {
        for _ in 0..BUDGET {
            match std::mem::replace(&mut self.stash, Stash::Empty) {
                Stash::Pipe(pipe, pending) => match splice(pipe.read.as_fd(), dst.as_fd(), pending)
                {
                    Ok(n) if n >= pending => pool.put(pipe),
                    Ok(n) => self.stash = Stash::Pipe(pipe, pending - n),
                    Err(e) if would_block(&e) => {
                        self.stash = Stash::Pipe(pipe, pending);
                        return Ok(Flow::Blocked);
                    }
                    Err(e) => return Err(e),
                },
                Stash::Bytes(buf, sent) => match (&*dst).write(&buf[sent..]) {
                    Ok(n) if sent + n >= buf.len() => {}
                    Ok(n) => self.stash = Stash::Bytes(buf, sent + n),
                    Err(e) if would_block(&e) => {
                        self.stash = Stash::Bytes(buf, sent);
                        return Ok(Flow::Blocked);
                    }
                    Err(e) => return Err(e),
                },
                Stash::Empty if self.eof => {
                    if !self.shut {
                        // The peer may already be gone; that is no error here.
                        let _ = dst.shutdown(std::net::Shutdown::Write);
                        self.shut = true;
                    }
                    return Ok(Flow::Done);
                }
                Stash::Empty => match pool.get() {
                    Some(pipe) => match splice(src.as_fd(), pipe.write.as_fd(), pipe.capacity) {
                        Ok(0) => {
                            pool.put(pipe);
                            self.eof = true;
                        }
                        Ok(n) => self.stash = Stash::Pipe(pipe, n),
                        Err(e) if would_block(&e) => {
                            pool.put(pipe);
                            return Ok(Flow::Blocked);
                        }
                        Err(e) => {
                            pool.put(pipe);
                            return Err(e);
                        }
                    },
                    None => {
                        if !self.copy_through_memory(src, dst)? {
                            return Ok(Flow::Blocked);
                        }
                    }
                },
            }
        }
        Ok(Flow::More)
    }

    /// The fallback when no pipe can be had: read, write, keep the rest.
    /// `false` when the source had nothing.
    fn copy_through_memory(&mut self, src: &Socket, dst: &Socket) -> io::Result<bool> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = match (&*src).read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        buf.truncate(n);
        let sent = match (&*dst).write(&buf) {
            Ok(k) => k,
            Err(e) if would_block(&e) => 0,
            Err(e) => return Err(e),
        };
        if sent < n {
            self.stash = Stash::Bytes(buf, sent);
        }
        Ok(true)
    }
}

pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A relayed connection.
pub struct Conn {
    pub port: i64,
    pub host: Socket,
    pub inside: Socket,
    /// The inside connect() is still in progress.
    pub connecting: bool,
    /// The client address routed back to the inside socket, if any.
    pub routed: Option<std::net::IpAddr>,
    /// The connect just completed: run both directions once.
    connecting_done_now: bool,
    up: Dir,
    down: Dir,
}

/// What became of a connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    Open,
    /// Budget exhausted: call [`Conn::pump`] again without waiting.
    Busy,
    Closed,
}

impl Conn {
    pub fn new(port: i64, host: Socket, inside: Socket, connecting: bool) -> Conn {
        Conn {
            port,
            host,
            inside,
            connecting,
            connecting_done_now: false,
            routed: None,
            up: Dir::new(),
            down: Dir::new(),
        }
    }

    /// Runs the directions an event can have moved: `(up, down)` with up
    /// host→inside.
    pub fn pump(&mut self, pool: &mut PipePool, (run_up, run_down): (bool, bool)) -> State {
        if self.connecting {
            match self.inside.take_error() {
                Ok(None) => {}
                _ => return self.reset(),
            }
            // Still connecting: peer_addr fails with ENOTCONN.
            if self.inside.peer_addr().is_err() {
                return State::Open;
            }
            self.connecting = false;
            self.connecting_done_now = true;
        }
        let (run_up, run_down) = if self.connecting_done_now {
            (true, true)
        } else {
            (run_up, run_down)
        };
        self.connecting_done_now = false;
        let idle = || Ok(Flow::Blocked);
        let up = if run_up {
            self.up.pump(&self.host, &self.inside, pool)
        } else {
            idle()
        };
        let down = if run_down {
            self.down.pump(&self.inside, &self.host, pool)
        } else {
            idle()
        };
        match (up, down) {
            (Err(e), _) | (_, Err(e)) if !would_block(&e) => self.reset(),
            _ if self.up.done() && self.down.done() => State::Closed,
            (Ok(Flow::More), _) | (_, Ok(Flow::More)) => State::Busy,
            _ => State::Open,
        }
    }

    /// Aborts both sides with a reset, so neither peer mistakes a broken
    /// relay for an orderly end.
    pub fn reset(&mut self) -> State {
        let _ = self.host.set_linger(Some(std::time::Duration::ZERO));
        let _ = self.inside.set_linger(Some(std::time::Duration::ZERO));
        State::Closed
    }
}
