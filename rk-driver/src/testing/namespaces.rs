//! The child's namespaces, as a core would make them: a new user namespace
//! (root inside mapped to the owner) and a network namespace it owns, held
//! by a sleeping process.

use super::{RunAs, Violation};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A user and a network namespace held by a process of their own (the
/// "child" of a real core), with open descriptors of both.
#[derive(Debug)]
pub struct Namespaces {
    holder: Child,
    /// The holder's `/proc/PID/ns/user`.
    pub userns: OwnedFd,
    /// The holder's `/proc/PID/ns/net`.
    pub netns: OwnedFd,
}

impl Namespaces {
    /// New namespaces owned by `run_as` (`None`: the calling user). As
    /// root, `run_as` should be an unprivileged user: that is how a core
    /// runs.
    pub fn new(run_as: Option<RunAs>) -> Result<Namespaces, Violation> {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::run_as_user(&mut cmd, run_as);
        crate::process::kill_with_parent(&mut cmd);
        // SAFETY: unshare is async-signal-safe, as required between fork
        // and exec; std has switched to `run_as` before this runs.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let holder = cmd.spawn().map_err(|e| {
            Violation::setup(format!(
                "creating a user and network namespace (unprivileged user namespaces must be allowed): {e}"
            ))
        })?;
        let mut ns = Namespaces {
            userns: open_ns(holder.id(), "user")?,
            netns: open_ns(holder.id(), "net")?,
            holder,
        };
        ns.map_root(run_as)?;
        Ok(ns)
    }

    /// Root inside is the owner outside (one id, like `unshare -r`).
    fn map_root(&mut self, run_as: Option<RunAs>) -> Result<(), Violation> {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = run_as.map_or_else(
            || unsafe { (libc::geteuid(), libc::getegid()) },
            |w| (w.uid, w.gid),
        );
        let pid = self.holder.id();
        for (file, text) in [
            ("uid_map", format!("0 {uid} 1")),
            ("setgroups", "deny".to_owned()),
            ("gid_map", format!("0 {gid} 1")),
        ] {
            std::fs::write(format!("/proc/{pid}/{file}"), text)
                .map_err(|e| Violation::setup(format!("writing /proc/{pid}/{file}: {e}")))?;
        }
        Ok(())
    }

    /// The holder's pid: `configure.child_pid`.
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The names of the interfaces in the network namespace.
    pub fn interfaces(&self) -> Result<Vec<String>, Violation> {
        let path = format!("/proc/{}/net/dev", self.pid());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Violation::setup(format!("reading {path}: {e}")))?;
        Ok(text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|name| name.trim().to_owned())
            .collect())
    }
}

fn open_ns(pid: u32, kind: &str) -> Result<OwnedFd, Violation> {
    let path = format!("/proc/{pid}/ns/{kind}");
    File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Violation::setup(format!("opening {path}: {e}")))
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
