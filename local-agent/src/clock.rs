//! The one clock of the agent: every wall-clock reading (block expiries, rate-limit windows, audit times,
//! backoffs measured against expiries) goes through [`Clock`], which the engine owns and hands to the
//! consumer, the expiry task and the store's writers.
//!
//! In production it is the system clock. Tests use [`Clock::following_tokio`]: wall time that moves with
//! tokio's clock, so a test that pauses tokio time (`tokio::time::pause`, `advance`) moves expiries, rate
//! limits and backoffs together without sleeping.

use chrono::{DateTime, Utc};

/// Where the agent reads the time.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// `Utc::now()`.
    #[default]
    System,
    /// `start` plus the tokio time elapsed since `at` (paused time in tests).
    FollowingTokio {
        /// The wall time at `at`.
        start: DateTime<Utc>,
        /// The tokio instant that corresponds to `start`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock at `start` now, moving with tokio's clock (call inside a runtime).
    pub fn following_tokio(start: DateTime<Utc>) -> Self {
        Self::FollowingTokio {
            start,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::FollowingTokio { start, at } => {
                let elapsed =
                    chrono::Duration::from_std(at.elapsed()).unwrap_or(chrono::Duration::MAX);
                *start + elapsed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = Clock::following_tokio(start);
        assert_eq!(clock.now(), start);
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
    }
}
