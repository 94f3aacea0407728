//! Process-wide settings the driver makes once, and eventfds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Raises the soft open-file limit to the hard one (every flow holds a host
/// socket) and returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The driver never needs to gain privileges (it has none): make sure
/// nothing it might execute could.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps glibc's malloc from raising its mmap threshold when the large
/// socket buffers are freed: they then always come from mmap and go back to
/// the kernel when a flow ends, so memory does not stay high after a burst.
pub fn keep_large_buffers_mmapped() {
    const M_MMAP_THRESHOLD: libc::c_int = -3;
    // SAFETY: mallopt with integer arguments; glibc only.
    unsafe { libc::mallopt(M_MMAP_THRESHOLD, 128 * 1024) };
}

/// 16 random bytes from the kernel (for TCP initial sequence numbers).
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: filling a u64 we own.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        v = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
    }
    v
}

pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to an eventfd we own.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}
