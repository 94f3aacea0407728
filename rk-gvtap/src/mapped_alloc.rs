//! The driver's global allocator: the system allocator for ordinary
//! blocks, and an anonymous mapping of its own for every block of
//! [`LARGE`] bytes or more — above all the socket buffers of TCP and UDP
//! flows (128 KiB to 2 MiB each), which the smoltcp sockets own as plain
//! `Vec<u8>`s.
//!
//! A flow's buffers are large so that one connection can go fast, but most
//! flows move a few KiB. Pages of an anonymous mapping cost memory only
//! once touched (the kernel's zero pages back `vec![0; n]` until written),
//! and `munmap` hands them back the moment the socket, and with it the
//! buffer, is dropped. Through malloc, each buffer would touch a header
//! page (8 KiB per idle flow, 8 MiB for 1000 flows) and freed memory would
//! stay with malloc's thresholds. Owning the buffers through the
//! allocator, rather than lending the sockets slices of a mapping kept
//! elsewhere, leaves nothing for the code around the sockets to get right.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks at least this large get a mapping of their own.
pub const LARGE: usize = 64 * 1024;
/// Mappings are page-aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

pub struct MappedAlloc;

fn mapped(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

/// A fresh zeroed mapping of `size` bytes, or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks;
    // the result is checked.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block is either the system allocator's (and goes back to
// it: `mapped` depends only on the layout, which the caller passes
// unchanged to `dealloc`/`realloc`) or a whole mapping of at least
// `layout.size()` bytes, page-aligned (so any alignment up to PAGE holds),
// zeroed, and unmapped exactly once, in `dealloc` or after a `realloc`
// copied it.
unsafe impl GlobalAlloc for MappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's layout has a non-zero size.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            // Fresh anonymous mappings are zeroed by the kernel, and
            // untouched pages cost nothing.
            map(layout.size())
        } else {
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(&layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by
            // `map` (same layout, so same branch), not used after this.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from the system allocator with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` rounded to the alignment
        // fits isize, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(&layout) && !mapped(&new_layout) {
            // SAFETY: a system block, resized by the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_layout` has a non-zero size (`new_size` > 0 by the
        // caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and
            // distinct; the old one is freed with its own layout.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// `vec![0u8; size]`, or `None` when there is no memory for it (instead
/// of aborting): a flow that cannot get its buffers is refused, the driver
/// goes on. The pages are not touched.
pub fn zeroed_buffer(size: usize) -> Option<Vec<u8>> {
    let layout = Layout::array::<u8>(size).ok()?;
    if layout.size() == 0 {
        return Some(Vec::new());
    }
    // SAFETY: a non-zero layout; the result is checked.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was allocated by the global allocator with the layout of
    // `[u8; size]`, which is what a Vec<u8> of capacity `size` has, and all
    // `size` bytes are initialised (zeroed).
    Some(unsafe { Vec::from_raw_parts(p, size, size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_zeroed_mappings_that_resize_and_free() {
        let mut v = vec![0u8; 3 * LARGE];
        assert!(v.iter().all(|&b| b == 0));
        assert_eq!(v.as_ptr() as usize % PAGE, 0, "page-aligned: a mapping");
        v[3 * LARGE - 1] = 7;
        v.resize(4 * LARGE, 1);
        assert_eq!(v[3 * LARGE - 1], 7);
        assert_eq!(v[4 * LARGE - 1], 1);
        v.truncate(100);
        v.shrink_to_fit();
        assert_eq!(v[99], 0);
        let b = zeroed_buffer(LARGE).unwrap();
        assert_eq!((b.len(), b.capacity()), (LARGE, LARGE));
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(zeroed_buffer(0), Some(Vec::new()));
        let small: Vec<u64> = (0..100).collect();
        assert_eq!(small.iter().sum::<u64>(), 4950);
    }
}
