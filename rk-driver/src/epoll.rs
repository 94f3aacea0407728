//! A thin epoll wrapper: one instance, registrations that carry a `u64`
//! the caller chooses, and a wait that fills the caller's event buffer.
//! Drivers that pump frames or relay connections build their loops on it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub use libc::epoll_event as Event;

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const ERR: u32 = libc::EPOLLERR as u32;
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// Edge-triggered: the caller remembers readiness until it hits EAGAIN.
pub const ET: u32 = libc::EPOLLET as u32;

/// An epoll instance (close-on-exec).
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; on success the descriptor is new and ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for `events`; each event for it carries `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what `fd` is watched for, and its token.
    pub fn modify(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd`; one that is not watched is not an error.
    pub fn delete(&self, fd: BorrowedFd<'_>) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: epoll_ctl reads the event we pass; both descriptors are
        // open for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fills `out` with up to `out.len()` events, waiting at most
    /// `timeout_ms` (-1: for ever). An interrupted wait returns 0 events.
    pub fn wait(&self, out: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let len = out.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: the kernel writes at most `len` entries into `out`, which
        // outlives the call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), out.as_mut_ptr(), len, timeout_ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            e => Err(e),
        }
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// An empty event buffer of `capacity` entries for [`Epoll::wait`].
pub fn events(capacity: usize) -> Vec<Event> {
    vec![Event { events: 0, u64: 0 }; capacity]
}

/// `timeout` as epoll's milliseconds: `None` waits for ever, a fraction of
/// a millisecond is rounded up (so the time has passed when the wait
/// ends), and very long waits are capped at a minute.
pub fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(60_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdio::EventFd;

    #[test]
    fn events_carry_their_token_until_deleted() {
        let ep = Epoll::new().unwrap();
        let a = EventFd::new().unwrap();
        let b = EventFd::new().unwrap();
        ep.add(a.as_fd(), IN, 7).unwrap();
        ep.add(b.as_fd(), IN, 9).unwrap();
        let mut buf = events(4);
        assert_eq!(ep.wait(&mut buf, 0).unwrap(), 0);
        b.signal();
        assert_eq!(ep.wait(&mut buf, 1000).unwrap(), 1);
        let (token, ev) = (buf[0].u64, buf[0].events);
        assert_eq!((token, ev & IN), (9, IN));
        ep.modify(b.as_fd(), IN, 11).unwrap();
        assert_eq!(ep.wait(&mut buf, 1000).unwrap(), 1);
        let token = buf[0].u64;
        assert_eq!(token, 11);
        ep.delete(b.as_fd());
        ep.delete(b.as_fd());
        assert_eq!(ep.wait(&mut buf, 0).unwrap(), 0);
        assert!(ep.add(a.as_fd(), IN, 1).is_err(), "added twice");
    }

    #[test]
    fn timeouts_round_up_and_cap() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(5))), 5);
        assert_eq!(timeout_ms(Some(Duration::from_secs(3600))), 60_000);
    }
}
