//! Doing work inside the child's namespaces from a driver.
//!
//! Joining a user namespace needs a single-threaded process, and whatever a
//! driver must create *inside* the child's network namespace (a tap device,
//! a DHCP socket) is created by a short-lived forked helper that joins the
//! user and network namespaces, runs a closure and sends the descriptors it
//! returns back over a socket. Sockets and taps keep the namespace they were
//! made in wherever their descriptor goes.

use crate::channel::Channel;
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NsExecError {
    #[error("fork: {0}")]
    Fork(nix::Error),
    #[error("in the child's namespaces: {0}")]
    Helper(String),
    #[error("namespace helper: {0}")]
    Channel(#[from] crate::ChannelError),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Outcome {
    error: Option<String>,
}

/// Forks a helper that joins `userns` (if given) and `netns`, runs `work`
/// there, and returns the descriptors `work` produced.
///
/// The calling process should be single-threaded or at least not hold locks
/// the closure needs: only the calling thread survives the fork.
pub fn run_in_namespaces<F>(
    userns: Option<BorrowedFd<'_>>,
    netns: BorrowedFd<'_>,
    work: F,
) -> Result<Vec<OwnedFd>, NsExecError>
where
    F: FnOnce() -> Result<Vec<OwnedFd>, String>,
{
    let (ours, theirs) = Channel::pair()?;
    // SAFETY: the child only joins namespaces, runs `work`, sends the result
    // and calls _exit; see the function's documentation about threads.
    match unsafe { fork() }.map_err(NsExecError::Fork)? {
        ForkResult::Child => {
            drop(ours);
            let result = join(userns, netns).and_then(|()| work());
            let (outcome, fds) = match result {
                Ok(fds) => (Outcome { error: None }, fds),
                Err(e) => (Outcome { error: Some(e) }, Vec::new()),
            };
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            let code = i32::from(theirs.send(&outcome, &borrowed).is_err());
            // SAFETY: _exit skips destructors and atexit handlers that belong
            // to the parent's copy of the process state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let got = ours.recv::<Outcome>(Some(Duration::from_secs(30)));
            let _ = waitpid(child, None).map(|s| matches!(s, WaitStatus::Exited(..)));
            let (outcome, fds) = got?;
            match outcome.error {
                Some(e) => Err(NsExecError::Helper(e)),
                None => Ok(fds),
            }
        }
    }
}

fn join(userns: Option<BorrowedFd<'_>>, netns: BorrowedFd<'_>) -> Result<(), String> {
    if let Some(u) = userns {
        setns(u, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("joining user namespace: {e}"))?;
    }
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining network namespace: {e}"))
}
