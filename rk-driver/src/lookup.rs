//! Finding programs: the one `$PATH` lookup that the core and every driver
//! use. Like Go's `exec.LookPath` since 1.19, it never returns a program
//! found through an empty or relative `$PATH` entry (which would run
//! whatever sits in the current directory), and it can say when a program
//! is writable by someone other than its owner's user and root.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The search path used when `$PATH` is unset, as glibc's `execvp`.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why a program was not found.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LookupError {
    /// Given as a path (it has a '/') and nothing is there.
    #[error("{} does not exist", .0.display())]
    NoSuchFile(PathBuf),
    /// Given as a path and not an executable regular file.
    #[error("{} is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    /// Not in any absolute directory of the search path.
    #[error("{name} was not found in $PATH ({path})")]
    NotInPath { name: String, path: String },
}

/// The absolute directories of a colon-separated search path, in order;
/// empty and relative entries (which mean "the current directory") are
/// skipped.
pub fn absolute_dirs(var: &OsStr) -> Vec<PathBuf> {
    std::env::split_paths(var)
        .filter(|d| d.is_absolute())
        .collect()
}

/// The directories of `$PATH` (or [`DEFAULT_PATH`]) that are searched.
pub fn path_dirs() -> Vec<PathBuf> {
    match std::env::var_os("PATH") {
        Some(p) => absolute_dirs(&p),
        None => absolute_dirs(OsStr::new(DEFAULT_PATH)),
    }
}

/// Whether `path` is a regular file that someone may execute.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `name` like `execvp` would, but safely: a name with a '/' is
/// taken as a path (made absolute against the current directory, as the
/// user typed it); a bare name is searched in the absolute directories of
/// `$PATH` only.
pub fn find_program(name: &str) -> Result<PathBuf, LookupError> {
    if name.contains('/') {
        let path = Path::new(name);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        return match std::fs::metadata(&path) {
            Err(_) => Err(LookupError::NoSuchFile(path)),
            Ok(_) if is_executable(&path) => Ok(path),
            Ok(_) => Err(LookupError::NotExecutable(path)),
        };
    }
    find_in(&path_dirs(), name).ok_or_else(|| LookupError::NotInPath {
        name: name.to_owned(),
        path: std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned()),
    })
}

/// The first executable `dir/name` among `dirs`, skipping relative ones.
pub fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A warning when the program at `path` or its directory can be changed by
/// a user other than root and the running user (group- or world-writable,
/// or owned by someone else), as a sentence naming the path; `None` when
/// it is safe.
pub fn unsafe_permissions(path: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let check = |p: &Path, what: &str| -> Option<String> {
        let m = std::fs::metadata(p).ok()?;
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        if m.uid() != 0 && m.uid() != me {
            return Some(format!(
                "{what} {} belongs to uid {}, who can replace it",
                p.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 && !sticky_dir {
            return Some(format!(
                "{what} {} is writable by other users (mode {:o}): chmod go-w it",
                p.display(),
                m.mode() & 0o7777
            ));
        }
        None
    };
    check(path, "program").or_else(|| path.parent().and_then(|d| check(d, "the directory of")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rk-lookup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn make_exec(p: &Path) {
        std::fs::write(p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn empty_and_relative_entries_are_skipped() {
        let dirs = absolute_dirs(OsStr::new(":.:bin:/usr/bin::/bin"));
        assert_eq!(dirs, vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin")]);
    }

    #[test]
    fn relative_dirs_never_match_even_when_the_file_is_there() {
        let d = scratch("rel");
        make_exec(&d.join("prog"));
        // A relative entry naming the directory through the current one.
        let rel = PathBuf::from("relative-dir-that-is-skipped");
        assert_eq!(find_in(&[rel], "prog"), None);
        assert_eq!(
            find_in(std::slice::from_ref(&d), "prog"),
            Some(d.join("prog"))
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_path_is_taken_as_given() {
        let d = scratch("path");
        let p = d.join("prog");
        assert_eq!(
            find_program(p.to_str().unwrap()),
            Err(LookupError::NoSuchFile(p.clone()))
        );
        std::fs::write(&p, "x").unwrap();
        assert_eq!(
            find_program(p.to_str().unwrap()),
            Err(LookupError::NotExecutable(p.clone()))
        );
        make_exec(&p);
        assert_eq!(find_program(p.to_str().unwrap()), Ok(p));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn writable_by_others_is_reported() {
        let d = scratch("perm");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = d.join("prog");
        make_exec(&p);
        assert_eq!(unsafe_permissions(&p), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(unsafe_permissions(&p)
            .unwrap()
            .contains("writable by other users"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(unsafe_permissions(&p).unwrap().contains("the directory of"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
