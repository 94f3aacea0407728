//! The one logging facade of the drivers and the core: the `log` crate's
//! macros, written to stderr as `PREFIX LEVEL: message` (stdout is free,
//! and the core passes stderr through): `rk-NAME: warning: ...` in a
//! driver, `[rootlesskit:parent] warning: ...` in the core. Debug messages
//! appear with `RK_DRIVER_DEBUG=1` (the core sets it for `--debug`); the
//! variable is read once, at [`init`]. [`serve`](crate::serve) calls `init`
//! with the driver's name.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

struct StderrLogger {
    prefix: String,
    /// Debug lines carry the time since then (`+12.3ms`), to see where
    /// start-up time goes.
    start: Option<Instant>,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let since = match (record.level(), self.start) {
            (log::Level::Debug | log::Level::Trace, Some(t)) => {
                format!("+{:.1}ms ", t.elapsed().as_secs_f64() * 1e3)
            }
            _ => String::new(),
        };
        // One write per line, so that lines of threads do not interleave;
        // a closed stderr is not worth a panic.
        let line = format!("{} {level}: {since}{}\n", self.prefix, record.args());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the stderr logger for `rk-NAME` (once; later calls do nothing).
pub fn init(name: &str) {
    init_with_prefix(&format!("rk-{name}:"), crate::debug_enabled(), None);
}

/// Installs the stderr logger with `prefix` before each line (once; later
/// calls only change the level), debug lines included when `debug`, with
/// the time since `start` when given.
pub fn init_with_prefix(prefix: &str, debug: bool, start: Option<Instant>) {
    let logger = LOGGER.get_or_init(|| StderrLogger {
        prefix: prefix.to_owned(),
        start,
    });
    let _ = log::set_logger(logger);
    set_debug(debug);
}

/// Turns debug lines on or off.
pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
}
