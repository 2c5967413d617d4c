//! The circuit breaker in front of an upstream: after a few failures in a row (errors or timeouts) it opens,
//! and while it is open nothing waits on the upstream at all: the namespace runs local-only. A background
//! probe tries the upstream again after a back-off (doubling up to a ceiling); one success closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// First wait before probing an open breaker, and the ceiling it doubles up to.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Use the upstream.
    Pass,
    /// Open: stay local.
    Refuse,
}

/// What changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened(Duration),
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    trips: std::sync::atomic::AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            trips: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests never probe: only [`Breaker::probe_due`]'s caller does, so no request pays for a dead upstream.
    pub fn gate(&self) -> Gate {
        match *self.lock() {
            State::Closed { .. } => Gate::Pass,
            State::Open { .. } => Gate::Refuse,
        }
    }

    pub fn is_open(&self) -> bool {
        self.gate() == Gate::Refuse
    }

    /// Times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn success(&self) -> Transition {
        let mut s = self.lock();
        let was_open = matches!(*s, State::Open { .. });
        *s = State::Closed { failures: 0 };
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    pub fn failure(&self, now: Instant) -> Transition {
        let mut s = self.lock();
        match *s {
            State::Closed { failures } if failures + 1 >= TRIP_AFTER => {
                *s = State::Open {
                    retry_at: now + FIRST_BACKOFF,
                    backoff: FIRST_BACKOFF,
                };
                self.trips
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Transition::Opened(FIRST_BACKOFF)
            }
            State::Closed { failures } => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                Transition::None
            }
            // Only a probe reports a failure while open: back off further.
            State::Open { backoff, .. } => {
                let backoff = (backoff * 2).min(MAX_BACKOFF);
                *s = State::Open {
                    retry_at: now + backoff,
                    backoff,
                };
                Transition::None
            }
        }
    }

    /// When the breaker is open: how long until the next probe is due (zero: now). `None` when closed.
    pub fn probe_due(&self, now: Instant) -> Option<Duration> {
        match *self.lock() {
            State::Closed { .. } => None,
            State::Open { retry_at, .. } => Some(retry_at.saturating_duration_since(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_backs_off_and_closes_on_success() {
        let b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.failure(t), Transition::None);
        assert_eq!(b.success(), Transition::None, "a success resets the count");
        assert_eq!(b.failure(t), Transition::None);
        assert_eq!(b.failure(t), Transition::None);
        assert_eq!(b.gate(), Gate::Pass);
        assert_eq!(b.failure(t), Transition::Opened(FIRST_BACKOFF));
        assert_eq!((b.gate(), b.trips()), (Gate::Refuse, 1));
        assert_eq!(b.probe_due(t), Some(FIRST_BACKOFF));
        assert_eq!(b.probe_due(t + FIRST_BACKOFF), Some(Duration::ZERO));
        // A failed probe doubles the wait, up to the ceiling.
        b.failure(t);
        assert_eq!(b.probe_due(t), Some(FIRST_BACKOFF * 2));
        for _ in 0..20 {
            b.failure(t);
        }
        assert_eq!(b.probe_due(t), Some(MAX_BACKOFF));
        assert_eq!(b.success(), Transition::Closed);
        assert_eq!((b.gate(), b.probe_due(t)), (Gate::Pass, None));
    }
}
