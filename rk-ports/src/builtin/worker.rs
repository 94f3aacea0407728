//! The relay worker process: `rootlesskit` re-executed with
//! [`WORKER_ENV`](super::WORKER_ENV). It joins the child's user and network
//! namespaces, tells the parent how many connections it can hold, and
//! relays until the parent closes the channel (or dies: PDEATHSIG).

use super::relay::Relay;
use super::source::Inside;
use super::wire::FromWorker;
use nix::sched::{setns, CloneFlags};
use rk_driver::Channel;
use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd};

/// Descriptors kept aside for the channel, epoll, pipes and accept().
const RESERVED_FDS: u64 = 128;
/// Connections one worker holds at most, whatever its descriptor limit.
const MAX_CAPACITY: u64 = 32768;
/// Lowers the connections (and UDP flows) one worker holds, e.g. to bound
/// memory: `ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER=1000`.
pub const CAPACITY_ENV: &str = "ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER";

/// Entry point; returns the exit code.
pub fn main(value: &OsStr) -> i32 {
    let fds: Vec<i32> = value
        .to_string_lossy()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let [chan, userns, netns, index] = fds[..] else {
        eprintln!(
            "[rootlesskit:port-worker] error: {} is not CHANNEL,USERNS,NETNS,INDEX",
            super::WORKER_ENV
        );
        return 2;
    };
    // Shown by ps and top instead of "exe".
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rk-port-worker".as_ptr(), 0, 0, 0) };
    std::env::remove_var(super::WORKER_ENV);
    // SAFETY: the parent passed these three descriptors for exactly this
    // purpose; nothing else in this fresh process owns them.
    let (chan, userns, netns) = unsafe {
        (
            OwnedFd::from_raw_fd(chan),
            OwnedFd::from_raw_fd(userns),
            OwnedFd::from_raw_fd(netns),
        )
    };
    for fd in [&chan, &userns, &netns] {
        // SAFETY: F_SETFD on descriptors we own; nothing we start inherits them.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                libc::F_SETFD,
                libc::FD_CLOEXEC,
            )
        };
    }
    // The parent blocks the signals it forwards; a worker takes defaults.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let channel = Channel::from_fd(chan);
    let joined = setns(&userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("joining the child's user namespace: {e}"))
        .and_then(|()| {
            setns(&netns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("joining the child's network namespace: {e}"))
        });
    drop((userns, netns));
    if let Err(message) = joined {
        let _ = channel.send(&FromWorker::Failed { id: 0, message }, &[]);
        return 1;
    }
    // Nothing this process could exec should gain privileges: it relays
    // traffic from outside, so it gets the least it needs.
    let _ = rk_driver::sandbox::no_new_privs();
    let limit = rk_driver::limits::raise_nofile_limit();
    let mut capacity = (limit.saturating_sub(RESERVED_FDS) / 2).clamp(1, MAX_CAPACITY);
    if let Some(n) = std::env::var(CAPACITY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        capacity = capacity.min(n.max(1));
    }
    let capacity = capacity as usize;
    let mut relay = match Relay::new(channel, capacity, Inside::new(index as u32)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[rootlesskit:port-worker] error: {e}");
            return 1;
        }
    };
    if !relay.ready() {
        return 1;
    }
    relay.run();
    0
}
