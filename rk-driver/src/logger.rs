//! The one logging facade of the drivers: the `log` crate's macros, written
//! to stderr as `rk-NAME: LEVEL: message` (stdout is free, and the core
//! passes stderr through). Debug messages appear with `RK_DRIVER_DEBUG=1`
//! (the core sets it for `--debug`); the variable is read once, at
//! [`init`]. [`serve`](crate::serve) calls `init` with the driver's name.

use std::io::Write;
use std::sync::OnceLock;

struct StderrLogger {
    name: String,
    level: log::LevelFilter,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
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
        // One write per line, so that lines of threads do not interleave;
        // a closed stderr is not worth a panic.
        let line = format!("{}: {level}: {}\n", self.name, record.args());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the stderr logger for `rk-NAME` (once; later calls do nothing).
pub fn init(name: &str) {
    let level = if crate::debug_enabled() {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = LOGGER.get_or_init(|| StderrLogger {
        name: format!("rk-{name}"),
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.level);
    }
}
