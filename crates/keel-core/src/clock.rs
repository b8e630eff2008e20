//! The injected source of time: the only place Keel reads the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

/// Where time comes from. Servers use [`SystemClock`]; tests and the simulator use [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The current time as a UTC timestamp.
    fn now(&self) -> DateTime<Utc> {
        ms_to_datetime(self.now_ms())
    }
}

/// Converts Unix milliseconds into a UTC timestamp (saturating at the epoch for absurd values).
pub fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Formats Unix milliseconds as RFC 3339 with millisecond precision.
pub fn format_ms(ms: i64) -> String {
    ms_to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to: for tests and simulated time.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A manual clock starting at `start_ms` Unix milliseconds.
    pub fn new(start_ms: i64) -> Self {
        Self {
            ms: AtomicI64::new(start_ms),
        }
    }

    /// Moves time forward by `delta_ms` milliseconds.
    pub fn advance_ms(&self, delta_ms: i64) {
        self.ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// Sets the time to `ms` Unix milliseconds.
    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
