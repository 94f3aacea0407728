//! Small descriptor primitives every driver needs: non-blocking mode, an
//! eventfd that one thread signals and another polls, and waiting (bounded)
//! until a descriptor is readable.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Sets `O_NONBLOCK` on `fd` (keeping its other status flags).
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: fcntl(F_GETFL) on a descriptor the caller keeps open.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above, F_SETFL with an integer argument.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A one-way signal between threads that `poll`/`epoll` can wait for: a
/// non-blocking, close-on-exec eventfd. Once signalled it stays readable
/// until [`EventFd::drain`].
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall with integer arguments; checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Makes the descriptor readable (and keeps it so).
    pub fn signal(&self) {
        signal(self.0.as_fd());
    }

    /// Resets the counter; `true` if it had been signalled.
    pub fn drain(&self) -> bool {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a u64 we own.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        n == 8 && count > 0
    }

    pub fn into_fd(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Adds one to the counter of the eventfd `fd`. It can only fail if the
/// counter would overflow, which a handful of signals cannot cause.
pub fn signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a u64 we own to a descriptor the caller
    // keeps open.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Waits until `fd` is readable (or at EOF or in error), at most `timeout`;
/// `Ok(false)` when the time ran out. Interrupted waits go on with the
/// time that is left.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // Rounded up, so that the time has passed when poll returns 0.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut pfd,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return Ok(n > 0),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn an_eventfd_is_readable_once_signalled_until_drained() {
        let e = EventFd::new().unwrap();
        assert!(!wait_readable(e.as_fd(), Duration::from_millis(10)).unwrap());
        assert!(!e.drain());
        e.signal();
        e.signal();
        assert!(wait_readable(e.as_fd(), Duration::ZERO).unwrap());
        assert!(e.drain());
        assert!(!wait_readable(e.as_fd(), Duration::from_millis(10)).unwrap());
    }

    #[test]
    fn nonblocking_reads_return_would_block() {
        use std::io::Read;
        let (mut a, _b) = UnixStream::pair().unwrap();
        set_nonblocking(&a).unwrap();
        set_nonblocking(&a).unwrap();
        let err = a.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn waiting_for_a_quiet_descriptor_times_out_in_time() {
        let (a, _b) = UnixStream::pair().unwrap();
        let started = std::time::Instant::now();
        assert!(!wait_readable(a.as_fd(), Duration::from_millis(50)).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
