//! Running CMD in the child: signals go to it, orphans are reaped (the child
//! is a subreaper, or PID 1 with --pidns), its exit status becomes ours.

use crate::child::CommandToRun;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Runs CMD to completion; returns the exit code for it.
pub fn run_command(run: &CommandToRun) -> i32 {
    match supervise(run) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Replaces this process with CMD; returns only if that fails.
pub fn exec_command(run: &CommandToRun) -> i32 {
    let Some((program, args)) = run.argv.split_first() else {
        return 1;
    };
    let path = match resolve_program(program) {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            return 127;
        }
    };
    let mut cmd = Command::new(path);
    cmd.arg0(program)
        .args(args)
        .envs(run.env.iter().map(|(k, v)| (k, v)));
    // The parent-death signal set at clone survives exec; the signal mask
    // inherited from the parent must not.
    rk_driver::process::reset_signal_mask(&mut cmd);
    let err = cmd.exec();
    log::error!("running {program:?}: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Checks that CMD can be found and executed, as execvp would look for it.
pub fn resolve_program(program: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let found = crate::idmap::which(program).ok_or_else(|| {
        if program.contains('/') {
            format!("command {program:?} not found or not executable")
        } else {
            format!("command {program:?} not found in PATH")
        }
    })?;
    let mode = found
        .metadata()
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o111 == 0 {
        return Err(format!("command {program:?}: permission denied"));
    }
    Ok(found)
}

fn supervise(run: &CommandToRun) -> Result<i32, String> {
    let signals = crate::signals::take_signals()?;
    if !run.pidns {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let (program, args) = run.argv.split_first().ok_or("no command specified")?;
    let mut cmd = if run.socket_activation {
        // Only CMD itself knows its pid: a helper sets LISTEN_PID and execs it.
        let mut c = Command::new("/proc/self/exe");
        c.arg(program).env(crate::activation::HELPER_ENV, "1");
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).envs(run.env.iter().map(|(k, v)| (k, v)));
    rk_driver::process::kill_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("command {program:?} not found"),
        std::io::ErrorKind::PermissionDenied => format!("command {program:?}: permission denied"),
        _ => format!("running {program:?}: {e}"),
    })?;
    let cmd_pid = Pid::from_raw(child.id() as i32);
    // Reaped below with waitpid(-1); the std handle must not wait too.
    std::mem::forget(child);
    loop {
        wait_readable(&signals)?;
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                continue;
            }
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = kill(cmd_pid, sig);
            }
        }
        if let Some(code) = reap(cmd_pid) {
            return Ok(code);
        }
    }
}

/// Reaps every exited child; the exit code once CMD is among them.
fn reap(cmd_pid: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(status) if status.pid() == Some(cmd_pid) => {
                if let Some((code, note)) = crate::waitstatus::exit_code(status) {
                    if let Some(n) = note {
                        log::error!("{n}");
                    }
                    result = Some(code);
                }
            }
            Ok(_) => {}
        }
    }
}

fn wait_readable(fd: &impl std::os::fd::AsFd) -> Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut p, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}
