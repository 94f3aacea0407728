//! The state directory: `lock`, `child_pid`, `netns` (with --detach-netns),
//! `api.sock`, and files drivers and the child keep there.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LOCK: &str = "lock";
pub const CHILD_PID: &str = "child_pid";
pub const NETNS: &str = "netns";

#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// A directory we made ourselves and remove whole on exit.
    temporary: bool,
    /// Held for the lifetime of the run; the kernel drops it if we die.
    _lock: Flock<File>,
}

impl StateDir {
    /// Opens (creating it if needed) and locks `explicit`, or makes a private
    /// temporary directory under `$XDG_RUNTIME_DIR` (else the temp dir).
    pub fn open(explicit: Option<&Path>) -> Result<Self, String> {
        let (path, temporary) = match explicit {
            Some(p) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(p)
                    .map_err(|e| format!("creating state dir {}: {e}", p.display()))?;
                (p.to_path_buf(), false)
            }
            None => (make_temp_dir()?, true),
        };
        let lock_path = path.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::Error::EWOULDBLOCK {
                format!(
                    "state dir {} is in use by another running rootlesskit: stop it or choose another --state-dir",
                    path.display()
                )
            } else {
                format!("locking {}: {e}", lock_path.display())
            }
        })?;
        let dir = StateDir {
            path,
            temporary,
            _lock: lock,
        };
        // A killed run may have left files behind; the lock proves it is gone.
        dir.remove_files();
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_child_pid(&self, pid: i32) -> Result<(), String> {
        let p = self.file(CHILD_PID);
        std::fs::write(&p, pid.to_string()).map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// Removes every plain file except the lock (what RootlessKit does too).
    fn remove_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for e in entries.flatten() {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir || e.file_name() == LOCK {
                continue;
            }
            let _ = std::fs::remove_file(e.path());
        }
    }

    /// Called on exit: removes what the run made.
    pub fn cleanup(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            self.remove_files();
        }
    }
}

fn make_temp_dir() -> Result<PathBuf, String> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| {
            p.is_dir() && nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::W_OK).is_ok()
        })
        .unwrap_or_else(std::env::temp_dir);
    let template = base.join("rootlesskitXXXXXX");
    nix::unistd::mkdtemp(&template)
        .map_err(|e| format!("creating a state directory in {}: {e}", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_dir_is_refused_and_stale_files_go() {
        let base = std::env::temp_dir().join(format!("rk-sd-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join(CHILD_PID), "123").unwrap();
        let first = StateDir::open(Some(&base)).unwrap();
        assert!(
            !base.join(CHILD_PID).exists(),
            "stale child_pid was not removed"
        );
        // flock locks belong to the open file description, so a second open
        // in the same process conflicts like another process would.
        let err = StateDir::open(Some(&base)).unwrap_err();
        assert!(err.contains("in use"), "{err}");
        first.cleanup();
        drop(first);
        assert!(StateDir::open(Some(&base)).is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }
}
