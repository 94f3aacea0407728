//! One direction of a forwarded TCP connection: bytes spliced from one
//! socket through a pipe into the other (they never enter user space), the
//! pipe taken from a small pool only while bytes are in flight, and the
//! EOF passed on as a half-close.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Splice rounds per direction per wake-up before others get a turn.
const BUDGET: usize = 16;
/// Pipe size asked for (the unprivileged maximum).
const PIPE_SIZE: libc::c_int = 1 << 20;
/// Empty pipes kept for reuse.
const IDLE_PIPES: usize = 16;

fn would_block(e: nix::Error) -> bool {
    e == nix::Error::EAGAIN
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// Pipes for splice, reused.
#[derive(Default)]
pub struct Pipes {
    idle: Vec<Pipe>,
    /// Large pipes stopped working (the user's pipe budget is used up).
    small_only: bool,
}

impl Pipes {
    fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            return Some(p);
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let mut capacity = 64 * 1024;
        if !self.small_only {
            match nix::fcntl::fcntl(write.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
                Ok(n) if n > 0 => capacity = n as usize,
                _ => self.small_only = true,
            }
        }
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

/// Bytes taken from one side, not yet given to the other.
enum Stash {
    Empty,
    Pipe(Pipe, usize),
    /// When no pipe could be had: the bytes and how many were sent.
    Bytes(Vec<u8>, usize),
}

/// One direction of a connection.
pub struct Dir {
    stash: Stash,
    eof: bool,
    /// The EOF was passed on: this direction is finished.
    pub shut: bool,
}

pub enum Progress {
    Blocked,
    More,
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

    /// Moves bytes from `src` to `dst` until one side blocks, the budget
    /// runs out or the EOF is passed on; `Err` means a broken connection.
    pub fn pump(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        pipes: &mut Pipes,
    ) -> nix::Result<Progress> {
        use nix::fcntl::{splice, SpliceFFlags};
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        for _ in 0..BUDGET {
            match std::mem::replace(&mut self.stash, Stash::Empty) {
                Stash::Pipe(pipe, pending) => {
                    match splice(&pipe.read, None, dst, None, pending, flags) {
                        Ok(n) if n >= pending => pipes.put(pipe),
                        Ok(n) => self.stash = Stash::Pipe(pipe, pending - n),
                        Err(e) if would_block(e) => {
                            self.stash = Stash::Pipe(pipe, pending);
                            return Ok(Progress::Blocked);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Stash::Bytes(buf, sent) => match nix::unistd::write(dst, &buf[sent..]) {
                    Ok(n) if sent + n >= buf.len() => {}
                    Ok(n) => self.stash = Stash::Bytes(buf, sent + n),
                    Err(e) if would_block(e) => {
                        self.stash = Stash::Bytes(buf, sent);
                        return Ok(Progress::Blocked);
                    }
                    Err(e) => return Err(e),
                },
                Stash::Empty if self.eof => {
                    if !self.shut {
                        let _ = nix::sys::socket::shutdown(
                            dst.as_raw_fd(),
                            nix::sys::socket::Shutdown::Write,
                        );
                        self.shut = true;
                    }
                    return Ok(Progress::Done);
                }
                Stash::Empty => match pipes.get() {
                    Some(pipe) => {
                        match splice(src, None, &pipe.write, None, pipe.capacity, flags) {
                            Ok(0) => {
                                pipes.put(pipe);
                                self.eof = true;
                            }
                            Ok(n) => self.stash = Stash::Pipe(pipe, n),
                            Err(e) => {
                                pipes.put(pipe);
                                return if would_block(e) {
                                    Ok(Progress::Blocked)
                                } else {
                                    Err(e)
                                };
                            }
                        }
                    }
                    None => {
                        let mut buf = vec![0u8; 64 * 1024];
                        match nix::unistd::read(src.as_fd(), &mut buf) {
                            Ok(0) => self.eof = true,
                            Ok(n) => {
                                buf.truncate(n);
                                self.stash = Stash::Bytes(buf, 0);
                            }
                            Err(e) if would_block(e) => return Ok(Progress::Blocked),
                            Err(e) => return Err(e),
                        }
                    }
                },
            }
        }
        Ok(Progress::More)
    }
}
