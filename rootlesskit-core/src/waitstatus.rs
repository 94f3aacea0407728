//! Turning how a process ended into rootlesskit's exit code.

use nix::sys::wait::WaitStatus;

/// Exit code for a wait status, and a message when it was a signal.
/// A command killed by signal N gives 128+N, as shells do.
pub fn exit_code(status: WaitStatus) -> Option<(i32, Option<String>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((
            128 + sig as i32,
            Some(format!("command was killed by signal {}", sig.as_str())),
        )),
        _ => None,
    }
}
