//! Which program a driver runs, and finding it: the driver names the
//! program, the flag that overrides it and how to install it; errors come
//! before anything is started and say all three.

use crate::lookup::{find_program, unsafe_permissions, LookupError};
use std::fmt;
use std::path::PathBuf;

/// A program a driver runs, as the user knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// What it is called in messages (`slirp4netns`).
    pub name: &'static str,
    /// The rootlesskit flag that names another binary, without dashes
    /// (`slirp4netns-binary`).
    pub flag: &'static str,
    /// How to get it, as the start of a sentence (`install slirp4netns ≥ 0.4`).
    pub install: &'static str,
    /// The environment it runs with.
    pub env: Env,
}

/// The environment a helper program gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// The driver's, without the protocol's variables (`RK_DRIVER_FD`
    /// names the driver's socket, which the program must not find).
    Inherit,
    /// Only `PATH`, `LANG`, `LANGUAGE`, `TZ`, `LC_*` and these names.
    Only(&'static [&'static str]),
}

impl Env {
    /// Whether the variable `key` reaches the program.
    pub fn passes(&self, key: &str) -> bool {
        if key.starts_with("RK_DRIVER_") {
            return false;
        }
        match self {
            Env::Inherit => true,
            Env::Only(extra) => {
                matches!(key, "PATH" | "LANG" | "LANGUAGE" | "TZ")
                    || key.starts_with("LC_")
                    || extra.contains(&key)
            }
        }
    }

    /// Sets `cmd`'s environment.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        cmd.env_clear();
        for (key, value) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| self.passes(k)) {
                cmd.env(key, value);
            }
        }
    }
}

/// A program that was not found, with what was looked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FindError {
    pub program: Program,
    pub cause: LookupError,
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Program {
            name,
            flag,
            install,
            ..
        } = self.program;
        match &self.cause {
            LookupError::NotInPath { name: given, .. } => write!(
                f,
                "{name} not found (looked for {given:?} in the absolute directories of \
                 $PATH): {install} or pass --{flag}=PATH"
            ),
            LookupError::NoSuchFile(path) => write!(
                f,
                "{name} not found at {}: {install} or fix --{flag}",
                path.display()
            ),
            LookupError::NotExecutable(path) => write!(
                f,
                "{} is not an executable file: fix --{flag}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FindError {}

impl Program {
    /// Resolves `given` (a path as it is, a bare name in the absolute
    /// directories of `$PATH` only: never the current directory). A
    /// program that someone other than root and this user could replace
    /// is used, with a warning.
    pub fn find(&self, given: &str) -> Result<PathBuf, FindError> {
        let path = find_program(given).map_err(|cause| FindError {
            program: *self,
            cause,
        })?;
        if let Some(why) = unsafe_permissions(&path) {
            log::warn!("{why}");
        }
        Ok(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const SH: Program = Program {
        name: "sh",
        flag: "sh-binary",
        install: "install a shell",
        env: Env::Inherit,
    };

    #[test]
    fn errors_name_what_was_looked_for_and_the_fix() {
        let e = SH.find("no-such-program-anywhere").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sh not found (looked for \"no-such-program-anywhere\" in the absolute directories \
             of $PATH): install a shell or pass --sh-binary=PATH"
        );
        let e = SH.find("/nonexistent/sh").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sh not found at /nonexistent/sh: install a shell or fix --sh-binary"
        );
        let e = SH.find("/etc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc is not an executable file: fix --sh-binary"
        );
        assert_eq!(SH.find("sh").unwrap().file_name().unwrap(), "sh");
    }

    #[test]
    fn the_environment_keeps_only_what_is_asked_for() {
        let only = Env::Only(&["SLIRP_DEBUG"]);
        for kept in ["PATH", "LANG", "LC_ALL", "TZ", "SLIRP_DEBUG"] {
            assert!(only.passes(kept), "{kept}");
        }
        for dropped in ["RK_DRIVER_FD", "HOME", "LD_PRELOAD", "G_MESSAGES_DEBUG"] {
            assert!(!only.passes(dropped), "{dropped}");
        }
        assert!(Env::Inherit.passes("HOME"));
        assert!(!Env::Inherit.passes("RK_DRIVER_FD"));
        assert!(!Env::Inherit.passes("RK_DRIVER_DEBUG"));
    }
}
