//! A thin epoll wrapper: registrations carry a [`Token`] and are
//! edge-triggered for flows (the loop remembers readiness itself, so it
//! never has to re-arm or change interest while data waits).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const ERR: u32 = libc::EPOLLERR as u32;
pub const HUP: u32 = libc::EPOLLHUP as u32;
pub const ET: u32 = libc::EPOLLET as u32;

/// What an event is about: a kind and a slot with its generation, so that a
/// stale event for a slot reused in the same batch is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: u8,
    pub index: u32,
    pub generation: u32,
}

impl Token {
    pub fn new(kind: u8, index: u32, generation: u32) -> Token {
        Token {
            kind,
            index,
            generation: generation & 0x00ff_ffff,
        }
    }

    fn encode(self) -> u64 {
        (u64::from(self.kind) << 56) | (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn decode(v: u64) -> Token {
        Token {
            kind: (v >> 56) as u8,
            generation: ((v >> 32) & 0x00ff_ffff) as u32,
            index: v as u32,
        }
    }
}

pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: a new descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
        })
    }

    pub fn add(&self, fd: RawFd, interest: u32, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: token.encode(),
        };
        // SAFETY: registering a descriptor the caller keeps open.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events; `None` waits for ever.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
    ) -> io::Result<impl Iterator<Item = (Token, u32)> + '_> {
        let ms = match timeout {
            None => -1,
            Some(d) => {
                d.as_millis().min(60_000) as i32 + i32::from(d.subsec_nanos() % 1_000_000 != 0)
            }
        };
        // SAFETY: the buffer holds `len` events and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n]
            .iter()
            .map(|e| (Token::decode(e.u64), e.events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = Token::new(3, 0xdead_beef, 0x12_3456);
        assert_eq!(Token::decode(t.encode()), t);
        let wrapped = Token::new(1, 7, 0x0100_0002);
        assert_eq!(wrapped.generation, 2);
    }
}
