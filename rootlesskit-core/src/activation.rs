//! systemd socket activation through rootlesskit (as RootlessKit ≥ 2.1):
//! when `LISTEN_FDS` descriptors were meant for rootlesskit itself
//! (`LISTEN_PID` is our pid), CMD gets them with `LISTEN_PID` naming CMD,
//! so that `sd_listen_fds()` in CMD accepts them. The descriptors 3.. are
//! inherited as they are; only the variable needs rewriting, and only the
//! process that becomes CMD knows its pid: without a PID namespace that is
//! the child (CMD replaces it), with one a small helper (this binary again)
//! sets the variable to its own pid and execs CMD.

use std::os::unix::process::CommandExt;

/// Set for the helper that fixes `LISTEN_PID` and execs CMD.
pub const HELPER_ENV: &str = "_ROOTLESSKIT_SYSTEMD_ACTIVATION_HELPER";

/// Whether `LISTEN_FDS` descriptors are addressed to this process.
pub fn listen_fds_for_us() -> bool {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<i64>().ok());
    let fds = var("LISTEN_FDS").unwrap_or(0);
    fds > 0 && var("LISTEN_PID") == Some(i64::from(std::process::id()))
}

/// The environment entry that makes the descriptors CMD's, for the process
/// that execs CMD directly.
pub fn listen_pid_for_self() -> (String, String) {
    ("LISTEN_PID".to_owned(), std::process::id().to_string())
}

pub fn is_helper() -> bool {
    std::env::var_os(HELPER_ENV).is_some()
}

/// The helper: `rootlesskit CMD ARGS...` with [`HELPER_ENV`] set.
pub fn helper_main() -> i32 {
    std::env::remove_var(HELPER_ENV);
    let mut argv = std::env::args_os().skip(1);
    let Some(program) = argv.next() else {
        log::error!("no command");
        return 1;
    };
    let err = std::process::Command::new(&program)
        .args(argv)
        .env("LISTEN_PID", std::process::id().to_string())
        .exec();
    log::error!("running {program:?}: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
