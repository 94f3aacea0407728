//! Turning how a process ended into rootlesskit's exit code.

use nix::sys::wait::WaitStatus;

/// What RootlessKit (a Go program) exits with when CMD was killed by a
/// signal: Go's `ExitCode()` is -1 then, and `os.Exit(-1)` is 255.
pub const SIGNALED_EXIT_CODE: i32 = 255;

/// Exit code for a wait status, and a message when it was a signal.
/// A command killed by a signal gives 255 and Go's wording of the signal
/// (`signal: user defined signal 1`), as RootlessKit does: its own
/// integration test checks both.
pub fn exit_code(status: WaitStatus) -> Option<(i32, Option<String>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, core) => Some((
            SIGNALED_EXIT_CODE,
            Some(format!(
                "command exited: signal: {}{} ({}, exit status {SIGNALED_EXIT_CODE})",
                go_signal_name(sig as i32),
                if core { " (core dumped)" } else { "" },
                sig.as_str()
            )),
        )),
        _ => None,
    }
}

/// Go's `syscall.Signal.String()` on Linux.
pub fn go_signal_name(signo: i32) -> String {
    const NAMES: [&str; 31] = [
        "hangup",
        "interrupt",
        "quit",
        "illegal instruction",
        "trace/breakpoint trap",
        "aborted",
        "bus error",
        "floating point exception",
        "killed",
        "user defined signal 1",
        "segmentation fault",
        "user defined signal 2",
        "broken pipe",
        "alarm clock",
        "terminated",
        "stack fault",
        "child exited",
        "continued",
        "stopped (signal)",
        "stopped",
        "stopped (tty input)",
        "stopped (tty output)",
        "urgent I/O condition",
        "CPU time limit exceeded",
        "file size limit exceeded",
        "virtual timer expired",
        "profiling timer expired",
        "window changed",
        "I/O possible",
        "power failure",
        "bad system call",
    ];
    match usize::try_from(signo - 1).ok().and_then(|i| NAMES.get(i)) {
        Some(n) => (*n).to_owned(),
        None => format!("signal {signo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn a_signal_is_255_with_gos_words() {
        let (code, note) = exit_code(WaitStatus::Signaled(
            Pid::from_raw(1),
            Signal::SIGUSR1,
            false,
        ))
        .unwrap();
        assert_eq!(code, 255);
        assert!(note.unwrap().contains("signal: user defined signal 1"));
        assert_eq!(go_signal_name(15), "terminated");
        assert_eq!(go_signal_name(64), "signal 64");
    }

    #[test]
    fn an_exit_code_is_kept() {
        assert_eq!(
            exit_code(WaitStatus::Exited(Pid::from_raw(1), 42)),
            Some((42, None))
        );
    }
}
