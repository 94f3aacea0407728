//! Opening a directory by path without trusting anything an other user
//! could change: the path is followed one component at a time with
//! `openat(O_NOFOLLOW)` from `/`, and each directory on the way must be
//! one that only the user and root can rename entries in (owned by one of
//! them, not writable by others unless sticky). Missing components can be
//! created (mode 0700) and are remembered, so that they can be removed
//! again.

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A directory this run made, to be removed (if empty) on exit.
#[derive(Debug)]
pub struct Created {
    pub parent: OwnedFd,
    pub name: OsString,
}

/// A directory opened safely, with its parent.
#[derive(Debug)]
pub struct Opened {
    pub dir: OwnedFd,
    pub parent: OwnedFd,
    pub name: OsString,
    /// The path without symbolic links or `..`: what the run uses.
    pub path: PathBuf,
    /// Directories made on the way (outermost first), the last one `dir`
    /// itself when it was missing.
    pub created: Vec<Created>,
}

pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn open_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// The parent of `path` as it really is (symbolic links resolved as far as
/// it exists), plus the components still missing below it.
fn real_parent(parent: &Path) -> Result<(PathBuf, Vec<OsString>), String> {
    let mut missing = Vec::new();
    let mut existing = parent.to_path_buf();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(real) => {
                missing.reverse();
                return Ok((real, missing));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match existing.components().next_back() {
                    Some(Component::Normal(n)) => missing.push(n.to_owned()),
                    _ => {
                        return Err(format!(
                            "{}: a missing directory is followed by '..' or is the root",
                            parent.display()
                        ))
                    }
                }
                if !existing.pop() {
                    return Err(format!("{}: no part of it exists", parent.display()));
                }
            }
            Err(e) => return Err(format!("{}: {e}", existing.display())),
        }
    }
}

/// Whether `gid` is the user's own group in the user-private-group
/// convention (same name as the user, no other member), so that a
/// group-writable directory of that group is as private as its owner.
fn private_group(gid: u32) -> bool {
    let me = nix::unistd::Uid::from_raw(euid());
    let (Ok(Some(user)), Ok(Some(group))) = (
        nix::unistd::User::from_uid(me),
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
    ) else {
        return false;
    };
    user.gid.as_raw() == gid && group.name == user.name && group.mem.iter().all(|m| *m == user.name)
}

/// `dir` (at `dir_path`) may hold `child_path`: nobody but the user and
/// root can rename or replace entries in it.
pub fn check_holder(dir: &FileStat, dir_path: &Path, child_path: &Path) -> Result<(), String> {
    let me = euid();
    if dir.st_uid != 0 && dir.st_uid != me {
        return Err(format!(
            "{} belongs to uid {}, who could replace {} with something of their own: \
             choose a --state-dir in a directory that only you (uid {me}) and root can change",
            dir_path.display(),
            dir.st_uid,
            child_path.display()
        ));
    }
    let mode = dir.st_mode & 0o7777;
    let others_write = mode & 0o002 != 0 || (mode & 0o020 != 0 && !private_group(dir.st_gid));
    if others_write && mode & 0o1000 == 0 {
        return Err(format!(
            "{} is writable by other users and has no sticky bit (mode {mode:04o}), so they \
             could replace {} with something of their own: `chmod go-w {}` (or `chmod +t`), \
             or choose a --state-dir elsewhere",
            dir_path.display(),
            child_path.display(),
            dir_path.display()
        ));
    }
    Ok(())
}

/// Opens (with `create`, making what is missing) `name` in `parent`.
fn open_component(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &OsStr,
    create: bool,
    created: &mut Vec<Created>,
) -> Result<OwnedFd, String> {
    let path = parent_path.join(name);
    match openat(parent.as_fd(), name, open_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) if create => {
            match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    created.push(Created {
                        parent: parent
                            .try_clone()
                            .map_err(|e| format!("dup of {}: {e}", parent_path.display()))?,
                        name: name.to_owned(),
                    });
                }
                // Someone made it meanwhile: judged below like any other.
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
            openat(parent.as_fd(), name, open_flags(), Mode::empty())
                .map_err(|e| opening_error(parent, name, &path, e))
        }
        Err(e) => Err(opening_error(parent, name, &path, e)),
    }
}

fn opening_error(parent: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> String {
    // O_DIRECTORY | O_NOFOLLOW on a symbolic link fails with ENOTDIR.
    let symlink = fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK);
    let e = if symlink { Errno::ELOOP } else { e };
    match e {
        Errno::ELOOP => format!(
            "{} is a symbolic link: give the directory it points to, if that is really yours",
            path.display()
        ),
        Errno::ENOTDIR => format!("{} is not a directory", path.display()),
        Errno::ENOENT => format!("{} does not exist", path.display()),
        e => format!("opening {}: {e}", path.display()),
    }
}

/// Opens the directory `path` (absolute) safely; with `create`, makes it
/// and its missing parents (0700). `path` itself must not be a symbolic
/// link; symbolic links above it are resolved once, and the directories of
/// the resolved path are checked with [`check_holder`].
pub fn open_dir(path: &Path, create: bool) -> Result<Opened, String> {
    if !path.is_absolute() {
        return Err(format!("{}: the path must be absolute", path.display()));
    }
    let (Some(parent), Some(Component::Normal(name))) =
        (path.parent(), path.components().next_back())
    else {
        return Err(format!(
            "{}: name the directory itself (not / or a path ending in ..)",
            path.display()
        ));
    };
    let (real, missing) = real_parent(parent)?;
    let mut created = Vec::new();
    let mut cur_path = PathBuf::from("/");
    let mut cur = nix::fcntl::open("/", open_flags(), Mode::empty())
        .map_err(|e| format!("opening /: {e}"))?;
    let names: Vec<OsString> = real
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .chain(missing)
        .chain(std::iter::once(name.to_owned()))
        .collect();
    let last = names.len() - 1;
    let mut parent_fd = None;
    for (i, n) in names.iter().enumerate() {
        let st = fstat(cur.as_fd()).map_err(|e| format!("{}: {e}", cur_path.display()))?;
        check_holder(&st, &cur_path, &cur_path.join(n))?;
        let next = open_component(&cur, &cur_path, n, create, &mut created)?;
        cur_path.push(n);
        if i == last {
            parent_fd = Some(cur);
            cur = next;
            break;
        }
        cur = next;
    }
    let st = fstat(cur.as_fd()).map_err(|e| format!("{}: {e}", cur_path.display()))?;
    if !is_dir(&st) {
        return Err(format!("{} is not a directory", cur_path.display()));
    }
    Ok(Opened {
        dir: cur,
        parent: parent_fd.ok_or("empty path")?,
        name: name.to_owned(),
        path: cur_path,
        created,
    })
}

/// Removes the directories in `created` (innermost first) that are empty;
/// stops at the first that is not.
pub fn remove_created(created: &[Created]) {
    for c in created.iter().rev() {
        if nix::unistd::unlinkat(
            c.parent.as_fd(),
            c.name.as_os_str(),
            nix::unistd::UnlinkatFlags::RemoveDir,
        )
        .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rk-walk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        crate::statedir::tests::chmod(&d, 0o700);
        d
    }

    #[test]
    fn missing_parents_are_made_and_listed_outermost_first() {
        let base = scratch("mk");
        let target = base.join("a/b/c");
        let o = open_dir(&target, true).unwrap();
        assert_eq!(o.path, target);
        let made: Vec<_> = o.created.iter().map(|c| c.name.clone()).collect();
        assert_eq!(made, ["a", "b", "c"]);
        remove_created(&o.created);
        assert!(!base.join("a").exists());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn symlinks_above_are_resolved_but_the_last_component_must_not_be_one() {
        let base = scratch("ln");
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("up")).unwrap();
        let o = open_dir(&base.join("up/sd"), true).unwrap();
        assert_eq!(o.path, base.join("real/sd"));
        std::os::unix::fs::symlink(base.join("real"), base.join("last")).unwrap();
        let e = open_dir(&base.join("last"), true).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_world_writable_parent_needs_the_sticky_bit() {
        let base = scratch("ww");
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        crate::statedir::tests::chmod(&open, 0o777);
        let e = open_dir(&open.join("sd"), true).unwrap_err();
        assert!(e.contains("no sticky bit"), "{e}");
        assert!(!open.join("sd").exists(), "made inside before refusing");
        crate::statedir::tests::chmod(&open, 0o1777);
        assert!(open_dir(&open.join("sd"), true).is_ok());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn dot_dot_and_relative_paths_are_refused() {
        assert!(open_dir(Path::new("rel/sd"), true).is_err());
        assert!(open_dir(Path::new("/tmp/.."), true).is_err());
        assert!(open_dir(Path::new("/"), true).is_err());
    }
}
