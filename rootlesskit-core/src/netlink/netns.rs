//! Running work inside another network namespace without moving the caller.

use std::os::fd::BorrowedFd;
use std::thread;

use nix::sched::{setns, CloneFlags};

use super::NetlinkError;

/// Runs `work` on a fresh thread that first joins the network namespace
/// `netns`, and returns its result.
///
/// setns(CLONE_NEWNET) only moves the calling thread, so the caller stays
/// where it is, and the thread (with its namespace) is gone when this
/// returns. Sockets `work` opens belong to `netns` for their whole life.
pub(super) fn run_in<T: Send>(
    netns: BorrowedFd<'_>,
    work: impl FnOnce() -> Result<T, NetlinkError> + Send,
) -> Result<T, NetlinkError> {
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("rk-netlink".to_owned())
            .spawn_scoped(scope, move || {
                setns(netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| NetlinkError::EnterNetns(errno.into()))?;
                work()
            })
            .map_err(NetlinkError::EnterNetns)?;
        // A panic in `work` is a bug: let it continue on the caller's thread.
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
