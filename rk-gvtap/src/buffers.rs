//! Socket buffers of a TCP flow straight from `mmap`.
//!
//! A flow's receive and send buffers are large (256 KiB or more each) so
//! that one connection can go fast, but most flows move a few KiB. Pages of
//! an anonymous mapping cost memory only once touched, and `munmap` hands
//! them back at once when the flow ends. Going through malloc instead would
//! touch a header page per buffer (8 KiB per idle flow, 8 MiB for 1000
//! flows) and leave freed memory to malloc's thresholds.

use std::io;
use std::ptr::NonNull;

/// One mapping holding a flow's two buffers.
pub struct FlowBuffers {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing about it
// is tied to the thread that made it.
unsafe impl Send for FlowBuffers {}

impl FlowBuffers {
    /// Maps `2 * size` bytes of zeroed memory and returns the mapping with
    /// its two halves.
    ///
    /// # Safety
    ///
    /// The slices point into the mapping, which `drop` unmaps: every user of
    /// them (the smoltcp socket) must be dropped before this value is.
    #[allow(clippy::type_complexity)]
    pub unsafe fn new(
        size: usize,
    ) -> io::Result<(FlowBuffers, &'static mut [u8], &'static mut [u8])> {
        let len = size * 2;
        // SAFETY: an anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: the mapping is `len` bytes, readable and writable, zeroed
        // by the kernel, and nothing else refers to it; the caller keeps the
        // slices from outliving it (see above).
        let all = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
        let (rx, tx) = all.split_at_mut(size);
        Ok((FlowBuffers { ptr, len }, rx, tx))
    }
}

impl Drop for FlowBuffers {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; its users are
        // gone by the contract of `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_are_separate_zeroed_and_writable() {
        // SAFETY: the slices are dropped before the mapping.
        let (map, rx, tx) = unsafe { FlowBuffers::new(8192) }.unwrap();
        assert_eq!((rx.len(), tx.len()), (8192, 8192));
        assert!(rx.iter().chain(tx.iter()).all(|&b| b == 0));
        rx[8191] = 1;
        tx[0] = 2;
        assert_eq!(rx[8191], 1);
        drop(map);
    }
}
