//! Every name rootlesskit, its drivers and RootlessKit (Go) put in a state
//! directory, with the kind of file each is. Only entries that match this
//! list by name, kind and owner are ever removed; anything else in a state
//! directory is someone else's.

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    File,
    Socket,
    Fifo,
    /// A directory that may hold only these entries.
    Dir(&'static [Entry]),
}

#[derive(Debug, PartialEq)]
pub struct Entry {
    pub name: &'static str,
    pub kind: Kind,
    /// Who makes it (for the documentation and error messages).
    pub by: &'static str,
}

const fn e(name: &'static str, kind: Kind, by: &'static str) -> Entry {
    Entry { name, kind, by }
}

/// The lock held for the run's lifetime.
pub const LOCK: &str = "lock";

/// Everything that may be found in a state directory.
pub const KNOWN: &[Entry] = &[
    e(LOCK, Kind::File, "rootlesskit"),
    e("child_pid", Kind::File, "rootlesskit"),
    e("api.sock", Kind::Socket, "rootlesskit (REST API)"),
    // With --detach-netns: a bind mount in the child's mount namespace,
    // an empty file in the parent's (where it is removed).
    e("netns", Kind::File, "rootlesskit (--detach-netns)"),
    e("resolv.conf", Kind::File, "rootlesskit's child"),
    e("hosts", Kind::File, "rootlesskit's child"),
    e(
        ".s4nn.sock",
        Kind::Socket,
        "slirp4netns (--port-driver=slirp4netns)",
    ),
    e("vpnkit-ethernet.sock", Kind::Socket, "vpnkit (rk-vpnkit)"),
    // Left by RootlessKit (Go) runs that were killed, so that a state dir
    // shared with it (dockerd-rootless.sh's) keeps working.
    e(
        ".bp.sock",
        Kind::Socket,
        "RootlessKit's builtin port driver",
    ),
    e(
        ".bp-ready.pipe",
        Kind::Fifo,
        "RootlessKit's builtin port driver",
    ),
    e(
        "gvisortapvsock",
        Kind::Dir(&[e(
            "tap.sock",
            Kind::Socket,
            "RootlessKit's gvisor-tap-vsock",
        )]),
        "RootlessKit's gvisor-tap-vsock",
    ),
];

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFREG => "a file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFIFO => "a named pipe",
        _ => "a device",
    }
}

fn matches(kind: Kind, st: &FileStat) -> bool {
    let k = kind_of(st);
    match kind {
        Kind::File => k == SFlag::S_IFREG,
        Kind::Socket => k == SFlag::S_IFSOCK,
        Kind::Fifo => k == SFlag::S_IFIFO,
        Kind::Dir(_) => k == SFlag::S_IFDIR,
    }
}

/// Names in `dir`, without `.` and `..`. Read through the descriptor's
/// `/proc/self/fd` link, which names the open directory itself, never a
/// path that could have been swapped.
pub fn names(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(link).map_err(io)? {
        out.push(entry.map_err(io)?.file_name());
    }
    drop(fd);
    Ok(out)
}

/// Why the entry `name` of `dir` (at `path`) is not one of ours; `None`
/// when it is.
fn judge(dir: BorrowedFd<'_>, path: &Path, name: &OsStr, known: &[Entry]) -> Option<String> {
    let me = super::walk::euid();
    let shown = path.join(name);
    let st = match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return None,
        Err(e) => return Some(format!("{} ({e})", shown.display())),
    };
    let Some(entry) = known.iter().find(|k| OsStr::new(k.name) == name) else {
        return Some(format!("{} (not made by rootlesskit)", shown.display()));
    };
    if !matches(entry.kind, &st) {
        return Some(format!(
            "{} ({}, where {} makes {})",
            shown.display(),
            kind_name(kind_of(&st)),
            entry.by,
            match entry.kind {
                Kind::File => "a file",
                Kind::Socket => "a socket",
                Kind::Fifo => "a named pipe",
                Kind::Dir(_) => "a directory",
            }
        ));
    }
    if st.st_uid != me {
        return Some(format!(
            "{} (belongs to uid {}, not you)",
            shown.display(),
            st.st_uid
        ));
    }
    if let Kind::Dir(inner) = entry.kind {
        let sub = match open_subdir(dir, name) {
            Ok(fd) => fd,
            Err(e) => return Some(format!("{} ({e})", shown.display())),
        };
        let inside = match names(sub.as_fd()) {
            Ok(n) => n,
            Err(e) => return Some(format!("{} ({e})", shown.display())),
        };
        return inside
            .iter()
            .find_map(|n| judge(sub.as_fd(), &shown, n, inner));
    }
    None
}

fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The entries of `dir` (at `path`) that are not ours, each as
/// "PATH (why)".
pub fn foreign(dir: BorrowedFd<'_>, path: &Path) -> Result<Vec<String>, String> {
    let all = names(dir).map_err(|e| format!("listing {}: {e}", path.display()))?;
    let mut out: Vec<String> = all
        .iter()
        .filter_map(|n| judge(dir, path, n, KNOWN))
        .collect();
    out.sort();
    Ok(out)
}

/// Removes the entries of `dir` that are ours (all but `keep`); leaves
/// everything else. Returns what it could not remove, as "PATH (why)".
pub fn remove_ours(dir: BorrowedFd<'_>, path: &Path, keep: &[&str]) -> Vec<String> {
    remove_in(dir, path, KNOWN, keep)
}

fn remove_in(dir: BorrowedFd<'_>, path: &Path, known: &[Entry], keep: &[&str]) -> Vec<String> {
    let mut left = Vec::new();
    let all = match names(dir) {
        Ok(n) => n,
        Err(e) => return vec![format!("{} ({e})", path.display())],
    };
    for name in all {
        if keep.iter().any(|k| OsStr::new(k) == name) {
            continue;
        }
        let shown: PathBuf = path.join(&name);
        let entry = known.iter().find(|k| OsStr::new(k.name) == name);
        let Some(entry) = entry.filter(|_| judge_self(dir, &name, known)) else {
            left.push(format!("{} (not made by rootlesskit)", shown.display()));
            continue;
        };
        let result = match entry.kind {
            Kind::Dir(inner) => match open_subdir(dir, &name) {
                Ok(sub) => {
                    left.extend(remove_in(sub.as_fd(), &shown, inner, &[]));
                    unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir)
                }
                Err(e) => Err(e),
            },
            _ => unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir),
        };
        match result {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::ENOTEMPTY) => {}
            Err(e) => left.push(format!("{} ({e})", shown.display())),
        }
    }
    left
}

/// Whether `name` itself is ours by kind and owner (a directory's contents
/// are judged one by one while removing).
fn judge_self(dir: BorrowedFd<'_>, name: &OsStr, known: &[Entry]) -> bool {
    let Some(entry) = known.iter().find(|k| OsStr::new(k.name) == name) else {
        return false;
    };
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => matches(entry.kind, &st) && st.st_uid == super::walk::euid(),
        Err(_) => false,
    }
}

/// Removes everything under `dir` (our own private temporary directory),
/// never following a symbolic link; gives up below `depth` levels.
pub fn remove_tree(dir: BorrowedFd<'_>, depth: u32) {
    let Ok(all) = names(dir) else { return };
    for name in all {
        let is_dir = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map(|st| kind_of(&st) == SFlag::S_IFDIR)
        .unwrap_or(false);
        if is_dir {
            if depth > 0 {
                if let Ok(sub) = open_subdir(dir, &name) {
                    remove_tree(sub.as_fd(), depth - 1);
                }
            }
            let _ = unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir);
        } else {
            let _ = unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_plain() {
        for (i, a) in KNOWN.iter().enumerate() {
            assert!(!a.name.contains('/') && !a.name.is_empty(), "{a:?}");
            assert!(KNOWN[i + 1..].iter().all(|b| b.name != a.name), "{a:?}");
        }
    }

    #[test]
    fn names_used_elsewhere_are_known() {
        let known = |n: &str| KNOWN.iter().any(|k| k.name == n);
        assert!(known(rk_ports::api::SOCKET_NAME));
        assert!(known(crate::statedir::CHILD_PID));
        assert!(known(crate::statedir::NETNS));
        assert!(known(crate::statedir::LOCK));
    }
}
