//! `no_new_privs` on its own, for a process that must set it before its
//! set-up is over (e.g. before it starts threads that must inherit it).
//! Everything else a process gives up is in [`crate::confine`].

use std::io;

/// `PR_SET_NO_NEW_PRIVS`: no program this process (or a thread it starts)
/// could execute gains privileges from set-id bits or file capabilities.
/// Seccomp filters require it.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_new_privs_shows_in_status() {
        let set = std::thread::spawn(|| {
            no_new_privs().unwrap();
            std::fs::read_to_string("/proc/thread-self/status").unwrap()
        })
        .join()
        .unwrap();
        assert!(set.lines().any(|l| l == "NoNewPrivs:\t1"), "{set}");
    }
}
