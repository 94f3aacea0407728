//! Log lines that a flood could repeat thousands of times a second (flow
//! limits, host errors) are printed at most every ten seconds, with a count
//! of the ones left out.

use std::fmt;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(10);

pub struct RateLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    pub fn new() -> RateLog {
        RateLog {
            last: None,
            suppressed: 0,
        }
    }

    pub fn log(&mut self, what: fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{what} (and {} more like it in the last {}s)",
                self.suppressed,
                INTERVAL.as_secs()
            );
        } else {
            log::warn!("{what}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}
