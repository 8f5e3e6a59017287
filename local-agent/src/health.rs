//! The daemon's health state machine: what it knows about itself right now (last poll, last commit, last
//! error) and which failures have lasted long enough to make it unhealthy. `/healthz`, the control
//! socket's `status` and the CLI read it through [`crate::status`].
//!
//! Each failing part keeps its own "failing since" and only the evidence that it works clears it: a
//! successful commit for commits, a successful send for the poison queue, a receive for the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What the daemon knows about itself right now (not persisted except where noted).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveStatus {
    /// When the daemon started.
    pub started_at: Option<DateTime<Utc>>,
    /// Last queue poll (successful or not).
    pub last_poll: Option<DateTime<Utc>>,
    /// Last successful firewall commit.
    pub last_commit: Option<DateTime<Utc>>,
    /// Last error and when.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// The firewall backend has been initialised.
    pub backend_ready: bool,
    /// New blocks are held back until then.
    pub rate_limited_until: Option<DateTime<Utc>>,
    #[serde(skip)]
    queue_failing_since: Option<Instant>,
    #[serde(skip)]
    backend_failing_since: Option<Instant>,
    /// Commits failing since then; only a successful commit clears it (a reconcile that finds nothing to
    /// change, or a passing healthcheck, is no evidence the firewall accepts writes).
    #[serde(skip)]
    commit_failing_since: Option<Instant>,
    /// Poison-queue sends failing since then; only a successful send clears it (receives from the main
    /// queue say nothing about the poison queue).
    #[serde(skip)]
    poison_failing_since: Option<Instant>,
    /// Operator actions the backend needs ([`crate::backends::Backend::notices`]).
    pub notices: Vec<String>,
}

/// The daemon's health, shared between tasks.
#[derive(Debug, Default)]
pub struct Health {
    live: Mutex<LiveStatus>,
    stopping: AtomicBool,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut LiveStatus) -> R) -> R {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut live)
    }

    /// Marks the start.
    pub fn started(&self) {
        self.with(|l| l.started_at = Some(Utc::now()));
    }

    /// A poll succeeded.
    pub fn queue_ok(&self) {
        self.with(|l| {
            l.last_poll = Some(Utc::now());
            l.queue_failing_since = None;
        });
    }

    /// A queue operation failed.
    pub fn queue_failed(&self, error: &str) {
        self.with(|l| {
            let now = Utc::now();
            l.last_poll = Some(now);
            l.last_error = Some((now, format!("queue: {error}")));
            l.queue_failing_since.get_or_insert_with(Instant::now);
        });
    }

    /// The backend came up or answered without a write: clears reachability problems, not a failing
    /// commit (a reachable firewall may still refuse writes).
    pub fn backend_reachable(&self) {
        self.with(|l| {
            l.backend_ready = true;
            l.backend_failing_since = None;
        });
    }

    /// A firewall commit succeeded: clears reachability and commit problems.
    pub fn commit_succeeded(&self) {
        self.with(|l| {
            l.last_commit = Some(Utc::now());
            l.commit_failing_since = None;
        });
        self.backend_reachable();
    }

    /// A firewall commit failed; stays reported until a commit succeeds.
    pub fn commit_failed(&self, error: &str) {
        self.with(|l| {
            l.last_error = Some((Utc::now(), format!("firewall commit: {error}")));
            l.commit_failing_since.get_or_insert_with(Instant::now);
        });
    }

    /// The failed commit was rejected for one message's content while the firewall is otherwise healthy
    /// (that message goes its own way); the firewall is not failing.
    pub fn commit_rejected_for_content(&self) {
        self.with(|l| l.commit_failing_since = None);
    }

    /// Replaces the backend's notices (reported as problems at once: they do not heal by waiting).
    pub fn set_notices(&self, notices: Vec<String>) {
        self.with(|l| l.notices = notices);
    }

    /// Sending to the poison queue failed; stays reported until a poison send succeeds.
    pub fn poison_failed(&self, error: &str) {
        self.with(|l| {
            l.last_error = Some((Utc::now(), format!("poison queue: {error}")));
            l.poison_failing_since.get_or_insert_with(Instant::now);
        });
    }

    /// A message was sent to the poison queue.
    pub fn poison_ok(&self) {
        self.with(|l| l.poison_failing_since = None);
    }

    /// A backend operation failed.
    pub fn backend_failed(&self, error: &str) {
        self.with(|l| {
            l.last_error = Some((Utc::now(), format!("firewall: {error}")));
            l.backend_failing_since.get_or_insert_with(Instant::now);
        });
    }

    /// Records the rate-limit state.
    pub fn set_rate_limited(&self, until: Option<DateTime<Utc>>) {
        self.with(|l| l.rate_limited_until = until);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> LiveStatus {
        self.with(|l| l.clone())
    }

    /// Marks the daemon as shutting down.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Problems that make the agent unhealthy: a queue or firewall failing for longer than `after`, or a
    /// backend never initialised within `after` of the start.
    pub fn problems(&self, after: Duration) -> Vec<String> {
        self.with(|l| {
            let mut problems = Vec::new();
            let error = l.last_error.as_ref().map(|(_, e)| e.as_str()).unwrap_or("");
            if let Some(since) = l.queue_failing_since {
                if since.elapsed() >= after {
                    problems.push(format!(
                        "queue failing for {}s: {error}",
                        since.elapsed().as_secs()
                    ));
                }
            }
            if let Some(since) = l.backend_failing_since {
                if since.elapsed() >= after {
                    problems.push(format!(
                        "firewall failing for {}s: {error}",
                        since.elapsed().as_secs()
                    ));
                }
            }
            if let Some(since) = l.commit_failing_since {
                if since.elapsed() >= after {
                    problems.push(format!(
                        "firewall commits failing for {}s: {error}",
                        since.elapsed().as_secs()
                    ));
                }
            }
            if let Some(since) = l.poison_failing_since {
                if since.elapsed() >= after {
                    problems.push(format!(
                        "poison queue failing for {}s: {error}",
                        since.elapsed().as_secs()
                    ));
                }
            }
            problems.extend(l.notices.iter().cloned());
            if self.stopping.load(Ordering::Relaxed) {
                problems.push("shutting down".to_owned());
            }
            problems
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_wait_for_the_threshold() {
        let health = Health::default();
        health.commit_failed("boom");
        health.poison_failed("gone");
        assert!(health.problems(Duration::from_secs(3600)).is_empty());
        assert_eq!(health.problems(Duration::ZERO).len(), 2);
    }
}
