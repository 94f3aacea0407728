//! Network-namespace work inside the child: the detached namespace of
//! `--detach-netns`, and running code in a namespace on a short-lived thread
//! (a netns switch is per thread).

use nix::sched::{setns, unshare, CloneFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Runs `f` on a thread that joined `netns` (or in place when `None`).
pub fn run_in<T: Send>(
    netns: Option<BorrowedFd<'_>>,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    let Some(ns) = netns else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("joining the network namespace: {e}"))?;
            f()
        })
        .join()
        .map_err(|_| "network namespace thread panicked".to_owned())?
    })
}

/// Creates a new network namespace, bind-mounts it at `path` and returns it.
/// The calling thread stays in its own namespace.
pub fn create_detached(path: &Path) -> Result<OwnedFd, String> {
    std::fs::write(path, b"").map_err(|e| format!("creating {}: {e}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            crate::mounts::bind_file(Path::new("/proc/thread-self/ns/net"), path)
        })
        .join()
        .map_err(|_| "network namespace thread panicked".to_owned())?
    })?;
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

/// Lets every group inside use ICMP echo sockets, as RootlessKit does. The
/// kernel accepts only mapped group ids, so the range ends at the highest one.
pub fn allow_ping(netns: Option<BorrowedFd<'_>>) -> Result<(), String> {
    let map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let highest = highest_mapped_id(&map).unwrap_or(0);
    let range = format!("0 {highest}");
    run_in(netns, move || {
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", &range)
            .map_err(|e| format!("setting net.ipv4.ping_group_range to {range}: {e}"))
    })
}

/// The highest id inside a namespace according to a uid_map/gid_map text.
pub fn highest_mapped_id(map: &str) -> Option<u64> {
    map.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let inside: u64 = f.next()?.parse().ok()?;
            let _outside = f.next()?;
            let count: u64 = f.next()?.parse().ok()?;
            (count > 0).then(|| inside + count - 1)
        })
        .max()
}

/// A descriptor of the calling thread's current network namespace.
pub fn current() -> Result<OwnedFd, String> {
    std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| format!("opening /proc/thread-self/ns/net: {e}"))
}

/// Borrow helper for optional namespaces.
pub fn borrow(fd: &Option<OwnedFd>) -> Option<BorrowedFd<'_>> {
    fd.as_ref().map(|f| f.as_fd())
}

#[cfg(test)]
mod tests {
    #[test]
    fn highest_mapped_id_spans_all_ranges() {
        let map = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(super::highest_mapped_id(map), Some(65536));
        assert_eq!(super::highest_mapped_id(""), None);
    }
}
