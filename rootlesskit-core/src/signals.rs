//! Signals that rootlesskit forwards, received through a signalfd.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals passed on to the command (everything a user might send, not the
/// ones the kernel uses for job control or faults).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGPWR,
];

extern "C" fn ignore(_: libc::c_int) {}

/// Blocks the forwarded signals and SIGCHLD and returns a signalfd for them.
///
/// A no-op handler is installed too: as PID 1 of a new PID namespace the
/// kernel drops signals whose disposition is the default.
pub fn take_signals() -> Result<SignalFd, String> {
    let mut set = SigSet::empty();
    let handler = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in FORWARDED {
        set.add(*s);
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { sigaction(*s, &handler) }.map_err(|e| format!("sigaction({s}): {e}"))?;
    }
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}
