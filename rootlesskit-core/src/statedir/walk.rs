//! Opening a directory by path without trusting anything another user
//! could change: the path is followed one component at a time with
//! `openat(O_NOFOLLOW)` from `/`, symbolic links read and followed by
//! hand, and each directory on the way must be one that only the user and
//! root can rename entries in (owned by one of them, not writable by
//! others unless sticky). Missing components can be created (mode 0700)
//! and are remembered, so that they can be removed again.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A directory this run made, to be removed (if empty) on exit.
#[derive(Debug)]
pub struct Created {
    pub parent: OwnedFd,
    pub name: OsString,
    /// Where `parent` is.
    pub parent_path: PathBuf,
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

/// Whether files owned by `uid` are root's as far as we can tell: uid 0,
/// or, inside a user namespace that does not map the real root (running
/// within another rootless container), the overflow uid that every
/// unmapped owner shows as — there `/` and `/tmp` have it.
fn root_like(uid: u32) -> bool {
    static OVERFLOW: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    uid == 0
        || *OVERFLOW.get_or_init(|| {
            let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
            let initial = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
            if initial {
                return None;
            }
            std::fs::read_to_string("/proc/sys/kernel/overflowuid")
                .ok()?
                .trim()
                .parse()
                .ok()
        }) == Some(uid)
}

/// `dir` (at `dir_path`) may hold `child_path`: nobody but the user and
/// root can rename or replace entries in it.
pub fn check_holder(dir: &FileStat, dir_path: &Path, child_path: &Path) -> Result<(), String> {
    let me = euid();
    if !root_like(dir.st_uid) && dir.st_uid != me {
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

/// How many symbolic links one path may go through (as the kernel's
/// MAXSYMLINKS).
const MAX_LINKS: u32 = 40;

fn fmt_mode(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Opens the directory `path` (absolute) safely; with `create`, makes it
/// and its missing parents (0700).
///
/// The path is followed one component at a time from `/` with
/// `openat(O_NOFOLLOW)`. Each directory must pass [`check_holder`] for the
/// entry looked up in it; a symbolic link on the way is read and followed
/// by hand, and in a directory others may write to (sticky) it must be
/// the user's or root's, like any other entry there. The last component
/// must not be a symbolic link.
pub fn open_dir(path: &Path, create: bool) -> Result<Opened, String> {
    walk(path, create, false)
}

/// Like [`open_dir`] without creating anything, following a symbolic link
/// in the last component too (for `$XDG_RUNTIME_DIR` and `$TMPDIR`, which
/// only hold the directory rootlesskit makes).
pub fn open_base(path: &Path) -> Result<Opened, String> {
    walk(path, false, true)
}

fn walk(path: &Path, create: bool, follow_last: bool) -> Result<Opened, String> {
    let mut created = Vec::new();
    let result = walk_making(path, create, follow_last, &mut created);
    match result {
        Ok((dir, parent, name, path)) => Ok(Opened {
            dir,
            parent,
            name,
            path,
            created,
        }),
        Err(e) => {
            remove_created(&created);
            Err(e)
        }
    }
}

type Found = (OwnedFd, OwnedFd, OsString, PathBuf);

fn walk_making(
    path: &Path,
    create: bool,
    follow_last: bool,
    created: &mut Vec<Created>,
) -> Result<Found, String> {
    if !path.is_absolute() {
        return Err(format!("{}: the path must be absolute", path.display()));
    }
    if !follow_last && !matches!(path.components().next_back(), Some(Component::Normal(_))) {
        return Err(format!(
            "{}: name the directory itself (not / or a path ending in ..)",
            path.display()
        ));
    }
    let mut todo: VecDeque<OsString> = components(path);
    let root = nix::fcntl::open("/", open_flags(), Mode::empty())
        .map_err(|e| format!("opening /: {e}"))?;
    // The directories from / down to the current one, with their names.
    let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut links = 0;
    let here = |stack: &Vec<(OwnedFd, OsString)>| -> PathBuf {
        let mut p = PathBuf::from("/");
        p.extend(stack.iter().map(|(_, n)| n));
        p
    };
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let last = todo.is_empty();
        let dir = stack.last().map(|(fd, _)| fd).unwrap_or(&root);
        let dir_path = here(&stack);
        let entry_path = dir_path.join(&name);
        let st = fstat(dir.as_fd()).map_err(|e| format!("{}: {e}", dir_path.display()))?;
        check_holder(&st, &dir_path, &entry_path)?;
        let entry = match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(e) => Some(e),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(format!("{}: {e}", entry_path.display())),
        };
        if let Some(e) = entry.filter(|e| fmt_mode(e) == SFlag::S_IFLNK) {
            if last && !follow_last {
                return Err(format!(
                    "{} is a symbolic link: give the directory it points to, if that is really yours",
                    entry_path.display()
                ));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(format!("{}: too many symbolic links", path.display()));
            }
            let me = euid();
            if !root_like(e.st_uid) && e.st_uid != me && st.st_mode & 0o022 != 0 {
                return Err(format!(
                    "{} is a symbolic link of uid {} in a directory others can write to: \
                     give the real path",
                    entry_path.display(),
                    e.st_uid
                ));
            }
            let target = readlinkat(dir.as_fd(), name.as_os_str())
                .map_err(|e| format!("reading the link {}: {e}", entry_path.display()))?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                stack.clear();
            }
            for c in components(&target).into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        let fd = match entry {
            Some(_) => openat(dir.as_fd(), name.as_os_str(), open_flags(), Mode::empty())
                .map_err(|e| opening_error(&entry_path, e))?,
            None if create && !todo.iter().any(|c| c == "..") => {
                make_dir(dir, &name, &entry_path, created)?
            }
            None => return Err(format!("{} does not exist", entry_path.display())),
        };
        stack.push((fd, name));
    }
    let (dir, name) = stack.pop().ok_or("empty path")?;
    let path = {
        let mut p = here(&stack);
        p.push(&name);
        p
    };
    let parent = match stack.pop() {
        Some((fd, _)) => fd,
        None => root,
    };
    let st = fstat(dir.as_fd()).map_err(|e| format!("{}: {e}", path.display()))?;
    if fmt_mode(&st) != SFlag::S_IFDIR {
        return Err(format!("{} is not a directory", path.display()));
    }
    Ok((dir, parent, name, path))
}

/// The names of `path`'s components (`..` kept, `/` and `.` dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Makes `name` (0700) in `dir` and opens it.
fn make_dir(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    created: &mut Vec<Created>,
) -> Result<OwnedFd, String> {
    match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => created.push(Created {
            parent: dir.try_clone().map_err(|e| format!("dup: {e}"))?,
            name: name.to_owned(),
            parent_path: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        }),
        // Made by someone else meanwhile: opened and judged like any other.
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("creating {}: {e}", path.display())),
    }
    openat(dir.as_fd(), name, open_flags(), Mode::empty()).map_err(|e| opening_error(path, e))
}

fn opening_error(path: &Path, e: Errno) -> String {
    match e {
        // O_DIRECTORY | O_NOFOLLOW on what became a symbolic link.
        Errno::ELOOP | Errno::ENOTDIR => format!(
            "{} is not a directory (or was just replaced by something else)",
            path.display()
        ),
        e => format!("opening {}: {e}", path.display()),
    }
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
    fn what_was_made_before_a_failure_is_removed() {
        let base = scratch("fail");
        let long = "n".repeat(300);
        let e = open_dir(&base.join("a").join(&long).join("sd"), true).unwrap_err();
        assert!(e.contains("File name too long"), "{e}");
        assert!(!base.join("a").exists(), "a was made and left");
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
        // $TMPDIR or $XDG_RUNTIME_DIR may be a link: only the base.
        assert_eq!(
            open_base(&base.join("last")).unwrap().path,
            base.join("real")
        );
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn relative_links_and_dot_dot_resolve_like_the_kernel() {
        let base = scratch("rel");
        std::fs::create_dir_all(base.join("x/y")).unwrap();
        std::os::unix::fs::symlink("x/y/..", base.join("rel")).unwrap();
        let o = open_dir(&base.join("rel/../x/sd"), true).unwrap();
        assert_eq!(o.path, base.join("x/sd"));
        // Nothing is made below a missing component followed by '..'.
        assert!(open_dir(&base.join("new/../sd"), true).is_err());
        assert!(!base.join("new").exists());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn another_users_link_in_a_sticky_dir_is_not_followed() {
        if euid() != 0 {
            eprintln!("skipped: needs root to make a link of another user");
            return;
        }
        let base = scratch("sticky");
        crate::statedir::tests::chmod(&base, 0o1777);
        std::fs::create_dir(base.join("target")).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(base.join("target"), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let e = open_dir(&link.join("sd"), true).unwrap_err();
        assert!(e.contains("symbolic link of uid 65534"), "{e}");
        std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
        assert!(open_dir(&link.join("sd"), true).is_ok());
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
