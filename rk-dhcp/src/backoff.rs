//! Retransmission back-off while no server answers: the first retry comes
//! quickly (a local DHCP server answers within milliseconds, so a lost or
//! ignored first DISCOVER should not cost seconds), then the wait doubles up
//! to a cap so that a missing server is not flooded.

use std::time::Duration;

/// A doubling delay: `first`, `2*first`, `4*first`, ... up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Backoff {
            first,
            next: first,
            cap: cap.max(first),
        }
    }

    /// The wait before the next retransmission; doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    /// Starts again from the first delay.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Raises the cap (used once the first attempt has given up, so that a
    /// client that keeps trying does so slowly).
    pub fn raise_cap(&mut self, cap: Duration) {
        self.cap = self.cap.max(cap);
    }
}

/// When to retransmit a renewing or rebinding REQUEST (RFC 2131 4.4.5):
/// after half of the time left until `remaining` runs out, but no sooner
/// than 60 s, unless the phase ends sooner than that.
pub fn halfway_retry(remaining: Duration) -> Duration {
    (remaining / 2).max(remaining.min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let got: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
        b.raise_cap(Duration::from_secs(64));
        let later: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(later.last(), Some(&64_000));
    }

    #[test]
    fn halfway_retry_follows_rfc_2131() {
        assert_eq!(
            halfway_retry(Duration::from_secs(1000)),
            Duration::from_secs(500)
        );
        assert_eq!(
            halfway_retry(Duration::from_secs(100)),
            Duration::from_secs(60)
        );
        assert_eq!(
            halfway_retry(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
