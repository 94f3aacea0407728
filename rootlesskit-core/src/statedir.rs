//! The state directory: `lock`, `child_pid`, `netns` (with --detach-netns),
//! `api.sock`, and files drivers and the child keep there.
//!
//! Rules (docs/security.md): rootlesskit never removes a file it did not
//! make. A `--state-dir` that is missing is made (with its missing
//! parents, 0700) and removed on exit; one that exists must be the user's,
//! not writable by others, not a symbolic link, in directories only the
//! user and root can change, and hold nothing but what a run of
//! rootlesskit (or RootlessKit) leaves there (`entries::KNOWN`). Everything
//! is opened relative to a descriptor of the directory, never following a
//! symbolic link.

mod entries;
mod walk;

use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use entries::LOCK;
pub const CHILD_PID: &str = "child_pid";
pub const NETNS: &str = "netns";

#[derive(Debug)]
pub struct StateDir {
    /// The directory's real path (no symbolic link, no `..`).
    path: PathBuf,
    dir: OwnedFd,
    parent: OwnedFd,
    name: OsString,
    /// A private directory we made under the temporary directory: all of
    /// it goes on exit.
    temporary: bool,
    /// Directories this run made (outermost first; the state directory
    /// itself last when it was missing): removed on exit when empty.
    created: Vec<walk::Created>,
    /// Held for the lifetime of the run; the kernel drops it if we die.
    lock: Flock<File>,
}

impl StateDir {
    /// Opens (creating it if needed) and locks `explicit`, or makes a private
    /// temporary directory under `$XDG_RUNTIME_DIR` (else the temp dir).
    pub fn open(explicit: Option<&Path>) -> Result<Self, String> {
        let (opened, temporary) = match explicit {
            Some(p) if p.as_os_str().is_empty() => {
                return Err("--state-dir is empty: give a directory, or leave the flag out for a private temporary one".into())
            }
            Some(p) => (walk::open_dir(p, true)?, false),
            None => (make_temp_dir()?, true),
        };
        let created = opened.created;
        let undo = |lock_made: bool, dir: &OwnedFd| {
            if lock_made {
                let _ = unlinkat(dir.as_fd(), LOCK, UnlinkatFlags::NoRemoveDir);
            }
            walk::remove_created(&created);
        };
        if let Err(e) = check_own(&opened.dir, &opened.path) {
            undo(false, &opened.dir);
            return Err(e);
        }
        let (lock, lock_made) = match take_lock(&opened.dir, &opened.path) {
            Ok(l) => l,
            Err(e) => {
                undo(false, &opened.dir);
                return Err(e);
            }
        };
        // Only now, under the lock, is the content stable enough to judge.
        if !temporary {
            let foreign = match entries::foreign(opened.dir.as_fd(), &opened.path) {
                Ok(f) => f,
                Err(e) => {
                    // Unlinked while still held: see take_lock.
                    undo(lock_made, &opened.dir);
                    drop(lock);
                    return Err(e);
                }
            };
            if !foreign.is_empty() {
                undo(lock_made, &opened.dir);
                drop(lock);
                return Err(foreign_error(&opened.path, &foreign));
            }
        }
        let dir = StateDir {
            path: opened.path,
            dir: opened.dir,
            parent: opened.parent,
            name: opened.name,
            temporary,
            created,
            lock,
        };
        // A killed run may have left its files; the lock proves it is gone.
        let left = entries::remove_ours(dir.dir.as_fd(), &dir.path, &[LOCK]);
        if !left.is_empty() {
            dir.cleanup();
            return Err(format!(
                "state dir {}: cannot remove what an earlier run left: {}",
                dir.path.display(),
                left.join(", ")
            ));
        }
        Ok(dir)
    }

    /// The directory's real path (symbolic links above it resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A descriptor of the directory, for `*at` calls.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The directories in which [`cleanup`](Self::cleanup) removes a
    /// directory (the state directory's parent when this run made it, and
    /// the parent of each missing parent it made): a confined process
    /// needs the right to remove directories there, and only that.
    pub fn removal_parents(&self) -> Vec<PathBuf> {
        if self.temporary {
            return self
                .path
                .parent()
                .map(Path::to_path_buf)
                .into_iter()
                .collect();
        }
        self.created.iter().map(|c| c.parent_path.clone()).collect()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `child_pid` so that a reader sees either no file or the whole
    /// number (scripts poll for it): written unnamed (`O_TMPFILE`), then
    /// linked in.
    pub fn write_child_pid(&self, pid: i32) -> Result<(), String> {
        let p = self.file(CHILD_PID);
        let err = |e: &dyn std::fmt::Display| format!("writing {}: {e}", p.display());
        let content = pid.to_string();
        let unnamed = openat(
            self.dir.as_fd(),
            ".",
            OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        );
        let fd = match unnamed {
            Ok(fd) => fd,
            // A filesystem without O_TMPFILE: the plain way.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                let fd = openat(
                    self.dir.as_fd(),
                    CHILD_PID,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_TRUNC
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map_err(|e| err(&e))?;
                return File::from(fd)
                    .write_all(content.as_bytes())
                    .map_err(|e| err(&e));
            }
            Err(e) => return Err(err(&e)),
        };
        let mut file = File::from(fd);
        file.write_all(content.as_bytes()).map_err(|e| err(&e))?;
        let _ = unlinkat(self.dir.as_fd(), CHILD_PID, UnlinkatFlags::NoRemoveDir);
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(),
            self.dir.as_fd(),
            CHILD_PID,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(|e| err(&e))
    }

    /// Called on exit: removes what the run made, and nothing else.
    pub fn cleanup(&self) {
        if self.temporary {
            // Private (0700, random name, made by us): CMD's files in it
            // are the run's too.
            entries::remove_tree(self.dir.as_fd(), 16);
        } else {
            let left = entries::remove_ours(self.dir.as_fd(), &self.path, &[LOCK]);
            if !left.is_empty() && self.made_by_us() {
                log::warn!(
                    "leaving {}: it holds what rootlesskit did not make: {}",
                    self.path.display(),
                    left.join(", ")
                );
            }
        }
        self.remove_lock();
        if self.temporary {
            let _ = unlinkat(
                self.parent.as_fd(),
                self.name.as_os_str(),
                UnlinkatFlags::RemoveDir,
            );
        } else {
            walk::remove_created(&self.created);
        }
    }

    fn made_by_us(&self) -> bool {
        self.created.last().is_some_and(|c| c.name == self.name)
    }

    /// Unlinks `lock` if it is still the file we hold.
    fn remove_lock(&self) {
        let (Ok(held), Ok(named)) = (
            fstat(self.lock.as_fd()),
            fstatat(
                self.dir.as_fd(),
                LOCK,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
        ) else {
            return;
        };
        if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino) {
            let _ = unlinkat(self.dir.as_fd(), LOCK, UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The state directory itself must be the user's and writable by nobody
/// else.
fn check_own(dir: &OwnedFd, path: &Path) -> Result<(), String> {
    let st = fstat(dir.as_fd()).map_err(|e| format!("{}: {e}", path.display()))?;
    let me = walk::euid();
    if st.st_uid != me {
        return Err(format!(
            "state dir {} belongs to uid {}, not to you (uid {me}): another user may have \
             prepared it; choose a --state-dir of your own (a missing one is created)",
            path.display(),
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "state dir {} is writable by other users (mode {mode:04o}): `chmod 700 {}` \
             after checking that it holds nothing of theirs, or choose another --state-dir",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Opens and locks `lock`; says whether this run made the file.
fn take_lock(dir: &OwnedFd, path: &Path) -> Result<(Flock<File>, bool), String> {
    let lock_path = path.join(LOCK);
    let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // Bounded: each retry means another run removed the lock meanwhile.
    for _ in 0..8 {
        let (fd, made) = match openat(
            dir.as_fd(),
            LOCK,
            flags | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => (fd, true),
            Err(Errno::EEXIST) => match openat(dir.as_fd(), LOCK, flags, Mode::empty()) {
                Ok(fd) => (fd, false),
                Err(Errno::ENOENT) => continue,
                Err(Errno::ELOOP) => {
                    return Err(format!(
                        "{} is a symbolic link, not rootlesskit's lock: remove it",
                        lock_path.display()
                    ))
                }
                Err(e) => return Err(format!("opening {}: {e}", lock_path.display())),
            },
            Err(e) => return Err(format!("creating {}: {e}", lock_path.display())),
        };
        let st = fstat(fd.as_fd()).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let me = walk::euid();
        if st.st_uid != me || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(format!(
                "{} is not a file of yours (uid {}), so not rootlesskit's lock: remove it",
                lock_path.display(),
                st.st_uid
            ));
        }
        let lock = lock_patiently(File::from(fd)).map_err(|e| {
            if e == Errno::EWOULDBLOCK {
                format!(
                    "state dir {} is in use by another running rootlesskit: stop it or choose another --state-dir",
                    path.display()
                )
            } else {
                format!("locking {}: {e}", lock_path.display())
            }
        })?;
        // The holder before us may have unlinked the file we locked.
        match fstatat(dir.as_fd(), LOCK, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(named) if (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino) => {
                return Ok((lock, made))
            }
            _ => continue,
        }
    }
    Err(format!(
        "state dir {}: {} keeps changing: is another rootlesskit starting there?",
        path.display(),
        lock_path.display()
    ))
}

fn foreign_error(path: &Path, foreign: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut list = foreign[..foreign.len().min(SHOWN)].join(", ");
    if foreign.len() > SHOWN {
        list.push_str(&format!(" and {} more", foreign.len() - SHOWN));
    }
    format!(
        "state dir {} holds what rootlesskit did not make: {list}; rootlesskit removes only its \
         own files, so give a --state-dir that is empty or missing (it is created), or move \
         these away",
        path.display()
    )
}

/// A private directory `rootlesskitXXXXXX` under `$XDG_RUNTIME_DIR` (when
/// it is set to a safe directory) or the temporary directory.
fn make_temp_dir() -> Result<walk::Opened, String> {
    let mut candidates = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        candidates.push(PathBuf::from(x));
    }
    candidates.push(std::env::temp_dir());
    let mut why = Vec::new();
    for base in candidates {
        let opened = match walk::open_base(&base) {
            Ok(o) => o,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        let st = fstat(opened.dir.as_fd()).map_err(|e| format!("{}: {e}", base.display()))?;
        // The base holds the new directory: judged like any directory on
        // the way.
        let template = opened.path.join("rootlesskitXXXXXX");
        if let Err(e) = walk::check_holder(&st, &opened.path, &template) {
            why.push(e);
            continue;
        }
        if nix::unistd::access(&opened.path, nix::unistd::AccessFlags::W_OK).is_err() {
            why.push(format!("{} is not writable", opened.path.display()));
            continue;
        }
        let made = nix::unistd::mkdtemp(&template)
            .map_err(|e| format!("creating a state directory in {}: {e}", base.display()))?;
        let name = made
            .file_name()
            .ok_or("mkdtemp returned no name")?
            .to_owned();
        let dir = openat(
            opened.dir.as_fd(),
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("opening {}: {e}", made.display()))?;
        return Ok(walk::Opened {
            dir,
            parent: opened.dir,
            name,
            path: made,
            created: Vec::new(),
        });
    }
    Err(format!(
        "no safe place for a temporary state directory: {}; give --state-dir",
        why.join("; ")
    ))
}

#[cfg(test)]
pub(crate) mod tests;

/// How long a held lock is waited for: a rootlesskit just killed with
/// `kill -9` holds it until the kernel has finished its exit (its driver's
/// tap device going away can take a moment), and a restart right after the
/// kill (RootlessKit's own integration-restart.sh does that) must not be
/// told the directory is in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// The exclusive lock, waiting up to [`LOCK_PATIENCE`] for a holder that is
/// going away; EWOULDBLOCK if it is still held then.
fn lock_patiently(file: File) -> Result<Flock<File>, Errno> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err((_, e)) => return Err(e),
        }
    }
}
