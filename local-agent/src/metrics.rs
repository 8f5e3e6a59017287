//! Observability: Prometheus counters, the live health the daemon keeps, and the optional HTTP endpoint
//! (`/metrics`, `/healthz`).
//!
//! Hand-rolled atomics instead of a metrics crate: a dozen series with small, fixed label sets (refusal and
//! poison reasons) do not justify a registry, and the agent must stay small. Metrics are updated once per
//! batch or commit, never per IP in a tight loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Counts per label value; label values come from small fixed sets (reason codes).
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabeledCounter {
    /// Adds `n` under `label`.
    pub fn add(&self, label: &'static str, n: u64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(label).or_default() += n;
    }
    /// The value under `label`.
    pub fn get(&self, label: &str) -> u64 {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(label).copied().unwrap_or(0)
    }
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with fixed buckets (1 ms – 10 s).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every series the agent exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Targets newly blocked.
    pub blocks_applied: Counter,
    /// Blocks extended.
    pub blocks_extended: Counter,
    /// Blocks that ran out.
    pub blocks_expired: Counter,
    /// Blocks lifted on request.
    pub blocks_unblocked: Counter,
    /// Targets refused, by reason (`special-purpose`, `allowlisted`, `too-broad`).
    pub blocks_refused: LabeledCounter,
    /// Verified-or-not messages received.
    pub messages_received: Counter,
    /// Messages sent to the poison queue, by reason.
    pub messages_poisoned: LabeledCounter,
    /// Messages deleted without effect, by reason (`expired`, `redelivered`).
    pub messages_discarded: LabeledCounter,
    /// Messages held back by the rate limit.
    pub messages_deferred: Counter,
    /// Firewall commit durations.
    pub commit_duration: Histogram,
    /// Failed firewall commits.
    pub commit_failures: Counter,
    /// Queue receive durations.
    pub poll_duration: Histogram,
    /// Failed queue operations.
    pub queue_errors: Counter,
    /// Entries reconcile re-added or removed.
    pub reconcile_repairs: Counter,
    /// Storage transactions (REST calls) made on the queue and the poison queue: what Azure bills.
    pub queue_transactions: Gauge,
    /// Blocks in force.
    pub active_blocks: Gauge,
    /// 1 while new blocks are held back by `max_new_blocks_per_hour`.
    pub rate_limited: Gauge,
    /// Unix time of the last queue poll.
    pub last_poll: Gauge,
    /// Unix time of the last successful commit.
    pub last_commit: Gauge,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn labeled(out: &mut String, name: &str, help: &str, label: &str, c: &LabeledCounter) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in c.snapshot() {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, bound) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{bound}\"}} {}",
            h.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "{name}_sum {}",
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count {count}");
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let p = "portcullis_agent";
        counter(
            &mut o,
            &format!("{p}_blocks_applied_total"),
            "Targets newly blocked.",
            self.blocks_applied.get(),
        );
        counter(
            &mut o,
            &format!("{p}_blocks_extended_total"),
            "Blocks extended.",
            self.blocks_extended.get(),
        );
        counter(
            &mut o,
            &format!("{p}_blocks_expired_total"),
            "Blocks that ran out.",
            self.blocks_expired.get(),
        );
        counter(
            &mut o,
            &format!("{p}_blocks_unblocked_total"),
            "Blocks lifted on request.",
            self.blocks_unblocked.get(),
        );
        labeled(
            &mut o,
            &format!("{p}_blocks_refused_total"),
            "Targets refused by the never-block policy.",
            "reason",
            &self.blocks_refused,
        );
        counter(
            &mut o,
            &format!("{p}_messages_received_total"),
            "Queue messages received.",
            self.messages_received.get(),
        );
        labeled(
            &mut o,
            &format!("{p}_messages_poisoned_total"),
            "Messages moved to the poison queue.",
            "reason",
            &self.messages_poisoned,
        );
        labeled(
            &mut o,
            &format!("{p}_messages_discarded_total"),
            "Messages deleted without effect.",
            "reason",
            &self.messages_discarded,
        );
        counter(
            &mut o,
            &format!("{p}_messages_deferred_total"),
            "Messages held back by the rate limit.",
            self.messages_deferred.get(),
        );
        histogram(
            &mut o,
            &format!("{p}_commit_duration_seconds"),
            "Firewall commit duration.",
            &self.commit_duration,
        );
        counter(
            &mut o,
            &format!("{p}_commit_failures_total"),
            "Failed firewall commits.",
            self.commit_failures.get(),
        );
        histogram(
            &mut o,
            &format!("{p}_queue_poll_duration_seconds"),
            "Queue receive latency.",
            &self.poll_duration,
        );
        counter(
            &mut o,
            &format!("{p}_queue_errors_total"),
            "Failed queue operations.",
            self.queue_errors.get(),
        );
        counter(
            &mut o,
            &format!("{p}_reconcile_repairs_total"),
            "Firewall entries reconcile re-added or removed.",
            self.reconcile_repairs.get(),
        );
        counter(
            &mut o,
            &format!("{p}_queue_transactions_total"),
            "Storage transactions (REST calls) made on the queue and the poison queue.",
            self.queue_transactions.get() as u64,
        );
        gauge(
            &mut o,
            &format!("{p}_active_blocks"),
            "Blocks in force.",
            self.active_blocks.get(),
        );
        gauge(
            &mut o,
            &format!("{p}_rate_limited"),
            "1 while new blocks are held back by max_new_blocks_per_hour.",
            self.rate_limited.get(),
        );
        gauge(
            &mut o,
            &format!("{p}_last_poll_timestamp_seconds"),
            "Unix time of the last queue poll.",
            self.last_poll.get(),
        );
        gauge(
            &mut o,
            &format!("{p}_last_commit_timestamp_seconds"),
            "Unix time of the last successful firewall commit.",
            self.last_commit.get(),
        );
        o
    }
}

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

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    unhealthy_after: Duration,
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz_handler(State(s): State<HttpState>) -> impl IntoResponse {
    let body = crate::status::Healthz::of(&s.health, s.unhealthy_after);
    let status = if body.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The `/metrics` and `/healthz` router.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>, unhealthy_after: Duration) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(HttpState {
            metrics,
            health,
            unhealthy_after,
        })
}

/// Serves the router on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Metrics endpoint listening.");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.blocks_applied.add(3);
        m.blocks_refused.add("special-purpose", 2);
        m.commit_duration.observe(Duration::from_millis(7));
        m.active_blocks.set(3.0);
        let text = m.render();
        assert!(text.contains("portcullis_agent_blocks_applied_total 3\n"));
        assert!(
            text.contains("portcullis_agent_blocks_refused_total{reason=\"special-purpose\"} 2\n")
        );
        assert!(text.contains("portcullis_agent_commit_duration_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("portcullis_agent_commit_duration_seconds_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("portcullis_agent_commit_duration_seconds_count 1\n"));
        assert!(text.contains("portcullis_agent_active_blocks 3\n"));
    }

    #[tokio::test]
    async fn healthz_turns_unhealthy_after_the_threshold() {
        let health = Arc::new(Health::default());
        let app = router(
            Arc::new(Metrics::default()),
            Arc::clone(&health),
            Duration::ZERO,
        );
        let status = |app: Router| async move {
            app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(status(app.clone()).await, StatusCode::OK);
        health.queue_failed("denied");
        assert_eq!(status(app.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
        health.queue_ok();
        assert_eq!(status(app.clone()).await, StatusCode::OK);
        let metrics = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    fn healthz(health: &Arc<Health>) -> impl std::future::Future<Output = StatusCode> {
        let app = router(
            Arc::new(Metrics::default()),
            Arc::clone(health),
            Duration::ZERO,
        );
        async move {
            app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    }

    #[tokio::test]
    async fn failing_commits_stay_unhealthy_until_a_commit_succeeds() {
        let health = Arc::new(Health::default());
        health.backend_reachable();
        assert_eq!(healthz(&health).await, StatusCode::OK);
        health.commit_failed("nft: Operation not permitted");
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        // A reconcile that finds no drift (no write) proves nothing about commits.
        health.backend_reachable();
        let problems = health.problems(Duration::ZERO);
        assert!(
            problems.iter().any(|p| p.contains("commits failing")),
            "{problems:?}"
        );
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        health.commit_succeeded();
        assert_eq!(healthz(&health).await, StatusCode::OK);
        // A rejection pinned on one message does not make the firewall unhealthy.
        health.commit_failed("bad element");
        health.commit_rejected_for_content();
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_failing_poison_queue_stays_reported_until_a_send_succeeds() {
        let health = Arc::new(Health::default());
        health.poison_failed("QueueNotFound");
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        // Receiving from the main queue says nothing about the poison queue.
        health.queue_ok();
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        health.poison_ok();
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn backend_notices_are_problems_at_once() {
        let health = Arc::new(Health::default());
        health.set_notices(vec!["add portcullis-v4-1 to the drop rule".to_owned()]);
        assert_eq!(healthz(&health).await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            health.problems(Duration::from_secs(3600)),
            ["add portcullis-v4-1 to the drop rule"]
        );
        health.set_notices(Vec::new());
        assert_eq!(healthz(&health).await, StatusCode::OK);
    }

    #[test]
    fn problems_wait_for_the_threshold() {
        let health = Health::default();
        health.commit_failed("boom");
        health.poison_failed("gone");
        assert!(health.problems(Duration::from_secs(3600)).is_empty());
        assert_eq!(health.problems(Duration::ZERO).len(), 2);
    }
}
