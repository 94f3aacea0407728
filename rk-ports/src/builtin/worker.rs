//! The relay worker process, the executable `rootlesskit-port-builtin`
//! (docs/driver-protocol.md §18). rootlesskit starts it with the channel's
//! descriptor in `RK_DRIVER_FD`; the first message brings the child's user
//! and network namespaces. It joins them, confines its whole process
//! ([`policy`]), tells the parent how many connections it can hold, and
//! relays until the parent closes the channel (or dies: PDEATHSIG).

use super::relay::Worker;
use super::source::Inside;
use super::wire::{FromWorker, ToWorker, RELAY_BINARY};
use rk_driver::confine::Confinement;
use rk_driver::nsexec::Namespaces;
use rk_driver::Channel;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// Descriptors kept aside for the channel, epoll, pipes and accept().
const RESERVED_FDS: u64 = 128;
/// Connections one worker holds at most, whatever its descriptor limit.
const MAX_CAPACITY: u64 = 32768;
/// How long the worker waits for `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Lowers the connections (and UDP flows) one worker holds, e.g. to bound
/// memory: `ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER=1000`.
pub const CAPACITY_ENV: &str = "ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER";

/// What a relay worker may do once it has joined the namespaces: relay
/// with sockets it holds and make new TCP and UDP sockets inside (IPv4 and
/// IPv6); no files (Landlock with no path at all), no exec, no
/// namespaces, no other socket family (its netlink socket, for keeping
/// client addresses, is made before). A refused call fails with EPERM:
/// the relay never parses what it carries (splice moves the bytes), and a
/// clean "operation not permitted" on one connection is worth more than a
/// killed worker and every connection it held.
pub fn policy() -> Confinement {
    Confinement::new().socket_families(&[libc::AF_INET, libc::AF_INET6])
}

/// Entry point of `rootlesskit-port-builtin`; returns the exit code.
pub fn main() -> i32 {
    let channel = match Channel::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "[rootlesskit:port-worker] error: {e}. {RELAY_BINARY} is the relay of rootlesskit's builtin port driver (--port-driver=builtin); rootlesskit starts it"
            );
            return 2;
        }
    };
    // The parent blocks the signals it forwards; a worker takes defaults.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // SAFETY: prctl with integer arguments; the parent set it before exec
    // too, this holds even if a wrapper ran us as its child.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Shown by ps and top: the executable's name is longer than 15 bytes.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rk-port-worker".as_ptr(), 0, 0, 0) };
    let fail = |channel: &Channel, message: String| {
        let _ = channel.send(&FromWorker::Failed { id: 0, message }, &[]);
        1
    };
    let (index, preserve_source, userns, netns) =
        match channel.recv::<ToWorker>(Some(START_TIMEOUT)) {
            Ok((
                ToWorker::Start {
                    index,
                    preserve_source,
                },
                fds,
            )) => match <[OwnedFd; 2]>::try_from(fds) {
                Ok([userns, netns]) => (index, preserve_source, userns, netns),
                Err(fds) => {
                    return fail(
                        &channel,
                        format!(
                        "start came with {} descriptors, expected 2 (user and network namespace)",
                        fds.len()
                    ),
                    )
                }
            },
            Ok((other, _)) => return fail(&channel, format!("expected start, got {other:?}")),
            Err(e) => {
                eprintln!("[rootlesskit:port-worker] error: waiting for start: {e}");
                return 1;
            }
        };
    let joined = Namespaces {
        userns: Some(userns.as_fd()),
        netns: netns.as_fd(),
    }
    .join();
    drop((userns, netns));
    if let Err(message) = joined {
        return fail(&channel, message);
    }
    let limit = rk_driver::limits::raise_nofile_limit();
    let mut capacity = (limit.saturating_sub(RESERVED_FDS) / 2).clamp(1, MAX_CAPACITY);
    if let Some(n) = std::env::var(CAPACITY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        capacity = capacity.min(n.max(1));
    }
    let capacity = capacity as usize;
    let mut inside = Inside::new(index);
    if preserve_source {
        inside.prepare_routing();
    }
    let mut relay = match Worker::new(channel, capacity, inside) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[rootlesskit:port-worker] error: {e}");
            return 1;
        }
    };
    // Set-up is over: from here on the worker only relays.
    match policy().apply() {
        Ok(report) if std::env::args().any(|a| a == "--debug") => {
            eprintln!(
                "[rootlesskit:port-worker] debug: worker {index} ({capacity} connections): sandbox: {report}"
            )
        }
        Ok(_) => {}
        Err(e) => eprintln!("[rootlesskit:port-worker] warning: running without a sandbox: {e}"),
    }
    if !relay.ready() {
        return 1;
    }
    relay.run();
    0
}

#[cfg(test)]
mod tests {
    use super::policy;
    use rk_driver::confine::probe::*;

    #[test]
    fn a_confined_relay_makes_tcp_and_udp_sockets() {
        let allowed = [TCP_SOCKET, TCP6_SOCKET, UDP_SOCKET];
        expect_all(&policy(), 0, &allowed).unwrap();
    }

    #[test]
    fn a_confined_relay_may_do_nothing_else() {
        let refused = [UNIX_SOCKET, NETLINK_SOCKET, PACKET_SOCKET, OPEN_A_FILE];
        expect_all(&policy(), libc::EPERM, &refused).unwrap();
        expect_all(&policy(), libc::EPERM, NEVER).unwrap();
    }
}
