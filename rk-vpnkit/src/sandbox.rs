//! Giving up what the pump does not need.

use std::io;

/// `PR_SET_NO_NEW_PRIVS`: no program this process (or a thread it starts)
/// could execute gains privileges from set-id bits or file capabilities.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
