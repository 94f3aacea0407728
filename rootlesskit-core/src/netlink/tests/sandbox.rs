//! Private namespaces for the tests: a forked child that is root in a new
//! user + network namespace, and tap devices created there.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getgid, getuid, pipe, ForkResult};

/// Runs `body` in a forked child that is root in fresh user and network
/// namespaces, and fails the calling test with the child's panic message if
/// `body` panics.
///
/// The fork comes first because unshare(CLONE_NEWUSER) refuses a
/// multi-threaded process, and the test harness is one.
pub(super) fn in_private_netns(body: impl FnOnce()) {
    let (report_reader, report_writer) = pipe().expect("pipe for the child's report");
    // SAFETY: the child runs only `body` and then leaves with `_exit`, never
    // returning into the harness; glibc makes malloc usable after fork, and
    // the child does not touch locks other harness threads might hold.
    match unsafe { fork() }.expect("fork a test child") {
        ForkResult::Child => {
            drop(report_reader);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                enter_private_namespaces();
                body();
            }));
            let exit_code = match outcome {
                Ok(()) => 0,
                Err(panic) => {
                    let _ = File::from(report_writer).write_all(panic_text(&*panic).as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the child at once, skipping the harness's
            // atexit handlers and destructors that belong to the parent.
            unsafe { libc::_exit(exit_code) }
        }
        ForkResult::Parent { child } => {
            drop(report_writer);
            let mut report = String::new();
            let _ = File::from(report_reader).read_to_string(&mut report);
            let status = waitpid(child, None).expect("wait for the test child");
            assert!(
                status == WaitStatus::Exited(child, 0),
                "test child failed ({status:?}): {report}"
            );
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_owned()
    }
}

/// Becomes root of a new user namespace (mapping only our own ids, which
/// needs no privilege) that owns a new network namespace.
fn enter_private_namespaces() {
    let (uid, gid) = (getuid(), getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        .expect("unshare user and network namespaces");
    fs::write("/proc/self/setgroups", "deny").expect("write setgroups");
    fs::write("/proc/self/uid_map", format!("0 {uid} 1")).expect("write uid_map");
    fs::write("/proc/self/gid_map", format!("0 {gid} 1")).expect("write gid_map");
}

/// Creates tap device `name` in the current network namespace. It exists
/// (with carrier) while the returned fd stays open.
pub(super) fn create_tap(name: &str) -> OwnedFd {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    let mut request = super::inspect::interface_request(name);
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and updates a `struct ifreq`; `request` is a
    // fully initialized one that outlives the call.
    let result = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    assert_eq!(
        result,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    OwnedFd::from(tun)
}

/// The current thread's network namespace, as an fd to hand to the API.
pub(super) fn current_netns() -> OwnedFd {
    File::open("/proc/thread-self/ns/net")
        .expect("open /proc/thread-self/ns/net")
        .into()
}
