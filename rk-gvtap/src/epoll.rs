//! A thin epoll wrapper: registrations carry a [`Token`] and are
//! edge-triggered for flows (the loop remembers readiness itself, so it
//! never has to re-arm or change interest while data waits).

use rk_driver::epoll::{self as sdk, Event};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

pub use rk_driver::epoll::{ERR, ET, HUP, IN, OUT, RDHUP};

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

/// rk-driver's epoll with its own event buffer, and [`Token`]s.
pub struct Epoll {
    epoll: sdk::Epoll,
    events: Vec<Event>,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        Ok(Epoll {
            epoll: sdk::Epoll::new()?,
            events: sdk::events(capacity),
        })
    }

    pub fn add(&self, fd: RawFd, interest: u32, token: Token) -> io::Result<()> {
        // SAFETY: the caller keeps `fd` open for the call (and until it
        // closes the descriptor, which unregisters it).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.epoll.add(fd, interest, token.encode())
    }

    /// Waits for events; `None` waits for ever.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
    ) -> io::Result<impl Iterator<Item = (Token, u32)> + '_> {
        let n = self
            .epoll
            .wait(&mut self.events, sdk::timeout_ms(timeout))?;
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
