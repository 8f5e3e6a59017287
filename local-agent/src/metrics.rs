//! The series the agent exports, on `prometheus-client` (the Prometheus project's Rust client): counters,
//! gauges, histograms and reason-labelled counters, registered from one table per kind and rendered as
//! OpenMetrics text. Updated once per batch or commit, never per IP in a tight loop.
//!
//! Health (what makes `/healthz` fail) is [`crate::health`]; the HTTP endpoint is [`crate::endpoint`].

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A gauge holding a float (timestamps, counts that go down).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The one label of the reason-counted series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// A counter per reason code (codes come from small fixed sets: refusal, poison and discard reasons).
#[derive(Debug, Clone, Default)]
pub struct ByReason(Family<Reason, Counter>);

impl ByReason {
    /// Adds `n` under `reason`.
    pub fn add(&self, reason: &'static str, n: u64) {
        self.0.get_or_create(&Reason { reason }).inc_by(n);
    }

    /// The count under `reason`.
    pub fn get(&self, reason: &'static str) -> u64 {
        self.0.get_or_create(&Reason { reason }).get()
    }
}

/// Latency buckets, 1 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Every series the agent exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    /// Targets newly blocked.
    pub blocks_applied: Counter,
    /// Blocks extended.
    pub blocks_extended: Counter,
    /// Blocks that ran out.
    pub blocks_expired: Counter,
    /// Blocks lifted on request.
    pub blocks_unblocked: Counter,
    /// Targets refused, by reason (`special-purpose`, `allowlisted`, `too-broad`, `own-service`).
    pub blocks_refused: ByReason,
    /// Verified-or-not messages received.
    pub messages_received: Counter,
    /// Messages sent to the poison queue, by reason.
    pub messages_poisoned: ByReason,
    /// Messages deleted without effect, by reason (`expired`, `redelivered`).
    pub messages_discarded: ByReason,
    /// Messages held back by the rate limit.
    pub messages_deferred: Counter,
    /// Firewall commit durations, in seconds.
    pub commit_duration: Histogram,
    /// Failed firewall commits.
    pub commit_failures: Counter,
    /// Queue receive durations, in seconds.
    pub poll_duration: Histogram,
    /// Failed queue operations.
    pub queue_errors: Counter,
    /// Entries reconcile re-added or removed.
    pub reconcile_repairs: Counter,
    /// Probes of a failing firewall or state database while the consumer receives nothing.
    pub recovery_probes: Counter,
    /// Storage transactions (REST calls) made on the queue and the poison queue: what Azure bills.
    pub queue_transactions: Counter,
    /// Blocks in force.
    pub active_blocks: FloatGauge,
    /// 1 while new blocks are held back by `max_new_blocks_per_hour`.
    pub rate_limited: FloatGauge,
    /// Unix time of the last queue poll.
    pub last_poll: FloatGauge,
    /// Unix time of the last successful commit.
    pub last_commit: FloatGauge,
    /// The firewall-log receiver's counters, when `[logs]` is on (rendered after the registry's).
    pub logs: std::sync::OnceLock<std::sync::Arc<crate::logs::metrics::LogMetrics>>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            blocks_applied: Counter::default(),
            blocks_extended: Counter::default(),
            blocks_expired: Counter::default(),
            blocks_unblocked: Counter::default(),
            blocks_refused: ByReason::default(),
            messages_received: Counter::default(),
            messages_poisoned: ByReason::default(),
            messages_discarded: ByReason::default(),
            messages_deferred: Counter::default(),
            commit_duration: Histogram::new(BUCKETS),
            commit_failures: Counter::default(),
            poll_duration: Histogram::new(BUCKETS),
            queue_errors: Counter::default(),
            reconcile_repairs: Counter::default(),
            recovery_probes: Counter::default(),
            queue_transactions: Counter::default(),
            active_blocks: FloatGauge::default(),
            rate_limited: FloatGauge::default(),
            last_poll: FloatGauge::default(),
            last_commit: FloatGauge::default(),
            logs: std::sync::OnceLock::new(),
            registry: Registry::with_prefix("portcullis_agent"),
        };
        m.register();
        m
    }
}

impl Metrics {
    /// The content type of [`render`](Self::render).
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Registers every series from one table per kind (long only because the tables are) (the metric handles are shared `Arc`s: the registry and the fields see the
    /// same values). Counters get the `_total` suffix from the library.
    fn register(&mut self) {
        let r = &mut self.registry;
        let counters = [
            (
                "blocks_applied",
                "Targets newly blocked",
                &self.blocks_applied,
            ),
            ("blocks_extended", "Blocks extended", &self.blocks_extended),
            (
                "blocks_expired",
                "Blocks that ran out",
                &self.blocks_expired,
            ),
            (
                "blocks_unblocked",
                "Blocks lifted on request",
                &self.blocks_unblocked,
            ),
            (
                "messages_received",
                "Queue messages received",
                &self.messages_received,
            ),
            (
                "messages_deferred",
                "Messages held back by the rate limit",
                &self.messages_deferred,
            ),
            (
                "commit_failures",
                "Failed firewall commits",
                &self.commit_failures,
            ),
            (
                "queue_errors",
                "Failed queue operations",
                &self.queue_errors,
            ),
            (
                "reconcile_repairs",
                "Firewall entries reconcile re-added or removed",
                &self.reconcile_repairs,
            ),
            (
                "recovery_probes",
                "Probes of a failing firewall or state database while nothing is received",
                &self.recovery_probes,
            ),
            (
                "queue_transactions",
                "Storage transactions (REST calls) made on the queue and the poison queue",
                &self.queue_transactions,
            ),
        ];
        for (name, help, metric) in counters {
            r.register(name, help, metric.clone());
        }
        let by_reason = [
            (
                "blocks_refused",
                "Targets refused by the never-block policy",
                &self.blocks_refused,
            ),
            (
                "messages_poisoned",
                "Messages moved to the poison queue",
                &self.messages_poisoned,
            ),
            (
                "messages_discarded",
                "Messages deleted without effect",
                &self.messages_discarded,
            ),
        ];
        for (name, help, metric) in by_reason {
            r.register(name, help, metric.0.clone());
        }
        let histograms = [
            (
                "commit_duration_seconds",
                "Firewall commit duration",
                &self.commit_duration,
            ),
            (
                "queue_poll_duration_seconds",
                "Queue receive latency",
                &self.poll_duration,
            ),
        ];
        for (name, help, metric) in histograms {
            r.register(name, help, metric.clone());
        }
        let gauges = [
            ("active_blocks", "Blocks in force", &self.active_blocks),
            (
                "rate_limited",
                "1 while new blocks are held back by max_new_blocks_per_hour",
                &self.rate_limited,
            ),
            (
                "last_poll_timestamp_seconds",
                "Unix time of the last queue poll",
                &self.last_poll,
            ),
            (
                "last_commit_timestamp_seconds",
                "Unix time of the last successful firewall commit",
                &self.last_commit,
            ),
        ];
        for (name, help, metric) in gauges {
            r.register(name, help, metric.clone());
        }
    }

    /// Sets the queue-transactions counter to `total` (the queue clients count every call; a counter
    /// only goes up, so this adds the difference).
    pub fn set_queue_transactions(&self, total: u64) {
        let seen = self.queue_transactions.get();
        if total > seen {
            self.queue_transactions.inc_by(total - seen);
        }
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail; an encoding error would leave the text short, not panic.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        if let Some(logs) = self.logs.get() {
            // The log series go before the closing `# EOF` of the OpenMetrics text.
            if text.ends_with("# EOF\n") {
                text.truncate(text.len() - "# EOF\n".len());
            }
            logs.render(&mut text);
            text.push_str("# EOF\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::default();
        m.blocks_applied.inc_by(3);
        m.blocks_refused.add("special-purpose", 2);
        m.commit_duration.observe(0.007);
        m.active_blocks.set(3.0);
        m.set_queue_transactions(5);
        m.set_queue_transactions(4);
        let text = m.render();
        for line in [
            "portcullis_agent_blocks_applied_total 3\n",
            "portcullis_agent_blocks_refused_total{reason=\"special-purpose\"} 2\n",
            "portcullis_agent_commit_duration_seconds_bucket{le=\"0.01\"} 1\n",
            "portcullis_agent_commit_duration_seconds_bucket{le=\"0.005\"} 0\n",
            "portcullis_agent_commit_duration_seconds_count 1\n",
            "portcullis_agent_active_blocks 3.0\n",
            "# TYPE portcullis_agent_queue_transactions counter\n",
            "portcullis_agent_queue_transactions_total 5\n",
            "portcullis_agent_recovery_probes_total 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
