//! Pipes for splice(2), pooled: a connection holds one only while bytes are
//! in flight, so thousands of idle connections cost no pipes, and the
//! user's pipe budget (`fs.pipe-user-pages-soft`) is not exhausted.

use std::os::fd::{AsFd, OwnedFd};

/// Pipe size asked for; Go (RootlessKit's splice) uses the same.
const WANTED_SIZE: libc::c_int = 1 << 20;
/// Idle pipes kept for reuse.
const MAX_IDLE: usize = 16;

pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// Bytes it holds at most.
    pub capacity: usize,
}

#[derive(Default)]
pub struct PipePool {
    idle: Vec<Pipe>,
    /// Whether asking for large pipes still works (it stops once the
    /// user's pipe budget is used up).
    small_only: bool,
}

impl PipePool {
    /// A pipe, or `None` when none can be made (out of descriptors): the
    /// caller copies through memory instead.
    pub fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            return Some(p);
        }
        let (read, write) = crate::sys::pipe().ok()?;
        let mut capacity = 64 * 1024;
        if !self.small_only {
            // SAFETY: fcntl on a pipe we own.
            let r = unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&write.as_fd()),
                    libc::F_SETPIPE_SZ,
                    WANTED_SIZE,
                )
            };
            if r > 0 {
                capacity = r as usize;
            } else {
                self.small_only = true;
            }
        } else {
            // SAFETY: as above; F_GETPIPE_SZ only reads.
            let r = unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&write.as_fd()),
                    libc::F_GETPIPE_SZ,
                )
            };
            if r > 0 {
                capacity = r as usize;
            }
        }
        Some(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Returns an empty pipe.
    pub fn put(&mut self, p: Pipe) {
        if self.idle.len() < MAX_IDLE {
            self.idle.push(p);
        }
    }
}
