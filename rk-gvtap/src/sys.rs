//! Process-wide settings the driver makes once, and eventfds.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

// Raising the open-file limit (every flow holds a host socket) and
// `no_new_privs` (the driver never needs to gain privileges: nothing it
// might execute could) come from the SDK.
pub use rk_driver::limits::raise_nofile_limit;
pub use rk_driver::sandbox::no_new_privs as set_no_new_privs;

/// Keeps glibc's malloc from raising its mmap threshold when the large
/// socket buffers are freed: they then always come from mmap and go back to
/// the kernel when a flow ends, so memory does not stay high after a burst.
/// (glibc only; other C libraries' allocators keep their own policy).
#[cfg(target_env = "gnu")]
pub fn keep_large_buffers_mmapped() {
    const M_MMAP_THRESHOLD: libc::c_int = -3;
    // SAFETY: mallopt with integer arguments; glibc only.
    unsafe { libc::mallopt(M_MMAP_THRESHOLD, 128 * 1024) };
}

#[cfg(not(target_env = "gnu"))]
pub fn keep_large_buffers_mmapped() {}

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

/// A non-blocking, close-on-exec eventfd (`rk_driver::fdio`).
pub fn eventfd() -> io::Result<OwnedFd> {
    rk_driver::fdio::EventFd::new().map(rk_driver::fdio::EventFd::into_fd)
}

pub fn signal(fd: &OwnedFd) {
    rk_driver::fdio::signal(fd.as_fd());
}
