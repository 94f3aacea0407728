//! Creating the child in its new namespaces: clone(2) with the namespace
//! flags, then exec of our own binary, which finds its socket through
//! [`CHILD_FD_ENV`].

use crate::settings::Settings;
use crate::sync::CHILD_FD_ENV;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// The namespaces the child gets.
pub fn clone_flags(s: &Settings) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS;
    if s.net.new_netns() && !s.detach_netns {
        f |= CloneFlags::CLONE_NEWNET;
    }
    for (on, flag) in [
        (s.pidns, CloneFlags::CLONE_NEWPID),
        (s.cgroupns, CloneFlags::CLONE_NEWCGROUP),
        (s.utsns, CloneFlags::CLONE_NEWUTS),
        (s.ipcns, CloneFlags::CLONE_NEWIPC),
    ] {
        if on {
            f |= flag;
        }
    }
    f
}

/// Starts the child. `socket` is its end of the sync channel; it stays open
/// across exec in the child only. The child execs after one byte arrives on
/// the socket: send it with [`release_child`] once the id maps are written.
///
/// Must be called while the process has a single thread.
pub fn spawn_child(flags: CloneFlags, socket: &OwnedFd) -> Result<Pid, String> {
    let fd = socket.as_raw_fd();
    let exe = CString::new("/proc/self/exe").expect("no NUL");
    let argv = [CString::new("rootlesskit").expect("no NUL")];
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != CHILD_FD_ENV)
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    envp.push(CString::new(format!("{CHILD_FD_ENV}={fd}")).expect("no NUL"));
    let parent = nix::unistd::getpid().as_raw();
    let in_new_pidns = flags.contains(CloneFlags::CLONE_NEWPID);
    let mut stack = vec![0u8; 256 * 1024];
    let child = Box::new(move || -> isize {
        // SAFETY: runs in the freshly cloned child of a single-threaded
        // process; it only makes raw syscalls and then execs or exits.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            let ppid = libc::getppid();
            // In a new PID namespace getppid() is 0; elsewhere a different
            // parent means ours died before prctl took effect.
            if !(ppid == parent || (in_new_pidns && ppid == 0)) {
                libc::_exit(1);
            }
            // Exec only once the id maps are written: execve keeps the
            // namespace's capabilities only for a process that is root
            // inside by then.
            let mut byte = 0u8;
            if libc::read(fd, (&mut byte as *mut u8).cast(), 1) != 1 {
                libc::_exit(1);
            }
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        let _ = nix::unistd::execve(&exe, &argv, &envp);
        // SAFETY: exec failed; leave without running the parent's destructors.
        unsafe { libc::_exit(127) }
    });
    // SAFETY: the callback above only execs; the stack outlives the call
    // because clone without CLONE_VM copies the address space.
    unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(|e| {
        match e {
            nix::Error::EPERM | nix::Error::ENOSPC | nix::Error::EUSERS => format!(
                "creating the user namespace failed ({e}): unprivileged user namespaces may be disabled \
                 (check sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)"
            ),
            _ => format!("clone: {e}"),
        }
    })
}

/// Lets the child exec (see [`spawn_child`]).
pub fn release_child(channel: &rk_driver::Channel) -> Result<(), String> {
    channel
        .send_raw(b"m", &[])
        .map_err(|e| format!("the child process died before exec: {e}"))
}
