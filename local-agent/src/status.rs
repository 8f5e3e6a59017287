//! The one place a status report is built: `status` on the command line (from the daemon over the control
//! socket, or from the state database when no daemon runs), the control socket's `status` answer and
//! `/healthz` all come from here.
//!
//! A [`StatusReport`] is assembled in parts: what the configuration says ([`StatusReport::configured`]),
//! what the running daemon knows of itself ([`StatusReport::add_live`], from [`Health`]), what the state
//! database holds ([`StatusReport::add_stored`]) and the queue's depth ([`StatusReport::add_queue_depth`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::health::{Health, LiveStatus};
use crate::store::{Store, StoreError};

/// `status` as reported by a running daemon or read offline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// Whether a daemon answered.
    pub running: bool,
    /// The backend in use.
    pub backend: String,
    /// The queue consumed.
    pub queue: String,
    /// Approximate number of messages waiting.
    pub queue_depth: Option<i64>,
    /// Why the depth is unknown.
    pub queue_depth_error: Option<String>,
    /// Blocks in force.
    pub active_blocks: u64,
    /// The earliest expiry.
    pub next_expiry: Option<DateTime<Utc>>,
    /// New blocks in the last hour, and the hourly limit.
    pub new_blocks_last_hour: u64,
    /// `max_new_blocks_per_hour`.
    pub max_new_blocks_per_hour: u32,
    /// New blocks held back until then.
    pub rate_limited_until: Option<DateTime<Utc>>,
    /// Daemon start.
    pub started_at: Option<DateTime<Utc>>,
    /// Last queue poll.
    pub last_poll: Option<DateTime<Utc>>,
    /// Last successful firewall commit.
    pub last_commit: Option<DateTime<Utc>>,
    /// Last error and when.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// Health problems (as `/healthz` reports them).
    pub problems: Vec<String>,
    /// Reports waiting in the outbox for the reports queue (`None`: a database from before the outbox,
    /// read-only).
    pub outbox_depth: Option<u64>,
    /// The firewall-log receiver's counters, when `[logs]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<crate::logs::metrics::LogCounts>,
}

impl StatusReport {
    /// The configured part: backend, queue, hourly limit.
    pub fn configured(config: &Config) -> Self {
        Self {
            backend: config.firewall.backend.kind().to_string(),
            queue: config.queue.name.clone(),
            max_new_blocks_per_hour: config.policy.max_new_blocks_per_hour,
            ..Self::default()
        }
    }

    /// What the running daemon knows of itself.
    pub fn add_live(&mut self, health: &Health, unhealthy_after: Duration) {
        let live = health.snapshot();
        self.running = true;
        self.rate_limited_until = live.rate_limited_until;
        self.started_at = live.started_at;
        self.last_poll = live.last_poll;
        self.last_commit = live.last_commit;
        self.last_error = live.last_error;
        self.problems = health.problems(unhealthy_after);
    }

    /// What the state database holds (the last commit and error only where the daemon did not say).
    pub fn add_stored(&mut self, store: &Store, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.active_blocks = store.active_count(now)?;
        self.next_expiry = store.next_expiry()?;
        self.new_blocks_last_hour = store.new_blocks_since(now - chrono::Duration::hours(1))?.0;
        // A read-only open of a database an older agent wrote has no outbox table yet: no depth, no error.
        self.outbox_depth = crate::reports::outbox::depth(store.connection()).ok();
        if self.last_commit.is_none() {
            self.last_commit = store
                .meta("last_commit_at")?
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
        }
        if self.last_error.is_none() {
            self.last_error = store.meta("last_error")?.and_then(|t| {
                let (at, text) = t.split_once(' ')?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
                Some((at, text.to_owned()))
            });
        }
        Ok(())
    }

    /// The queue's approximate depth, or why it is unknown (the Processor role cannot read queue
    /// metadata).
    pub async fn add_queue_depth(&mut self, queue: &queue_message::Queue) {
        let (depth, error) =
            match tokio::time::timeout(Duration::from_secs(10), queue.approximate_count()).await {
                Ok(Ok(n)) => (Some(n), None),
                Ok(Err(queue_message::QueueError::Denied(_))) => (
                    None,
                    Some("not permitted (reading queue metadata needs the Storage Queue Data Reader role or SAS `r`)".to_owned()),
                ),
                Ok(Err(e)) => (None, Some(e.to_string())),
                Err(_) => (None, Some("timed out".to_owned())),
            };
        self.queue_depth = depth;
        self.queue_depth_error = error;
    }
}

/// The `/healthz` answer.
#[derive(Debug, Serialize)]
pub struct Healthz {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// What is wrong (empty when healthy).
    pub problems: Vec<String>,
    /// The daemon's live status.
    pub live: LiveStatus,
}

impl Healthz {
    /// The daemon's health now: unhealthy when any problem lasted `unhealthy_after`.
    pub fn of(health: &Health, unhealthy_after: Duration) -> Self {
        let problems = health.problems(unhealthy_after);
        Self {
            status: if problems.is_empty() {
                "ok"
            } else {
                "unhealthy"
            },
            problems,
            live: health.snapshot(),
        }
    }

    /// Healthy.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}
