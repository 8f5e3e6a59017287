//! Counters of the firewall-log pipeline (lines received, parsed, not firewall, unparsed by format,
//! rejected senders, rows and bytes shipped, spool size and drops), rendered in the Prometheus text format
//! beside the agent's own series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::event::Format;

/// Every series of the log pipeline. Plain atomics: updated per line on the receive path, so no lock.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Syslog lines received from allowed senders.
    pub lines_received: AtomicU64,
    /// Lines parsed into a firewall event.
    pub lines_parsed: AtomicU64,
    /// Lines that are not firewall events (other daemons), dropped.
    pub lines_not_firewall: AtomicU64,
    /// Firewall-looking lines that did not parse, by format (index of [`Format::ALL`]).
    pub lines_unparsed: [AtomicU64; 5],
    /// Datagrams or connections from senders outside `allowed_senders`, ignored.
    pub rejected_senders: AtomicU64,
    /// Events without a verdict (unprefixed netfilter / MikroTik lines), not shipped.
    pub events_no_verdict: AtomicU64,
    /// Events whose verdict is not in `actions`, not shipped.
    pub events_filtered: AtomicU64,
    /// Lines whose own time was too far from the receive time (receive time used).
    pub time_fallbacks: AtomicU64,
    /// TCP frames longer than the limit, discarded.
    pub frames_too_long: AtomicU64,
    /// Rows shipped.
    pub rows_shipped: AtomicU64,
    /// Raw (unparsed) lines shipped.
    pub raw_shipped: AtomicU64,
    /// Bytes shipped (compressed message bodies).
    pub bytes_shipped: AtomicU64,
    /// Batches that failed to ship (retried).
    pub ship_failures: AtomicU64,
    /// Bytes in the spool.
    pub spool_bytes: AtomicU64,
    /// Batches in the spool.
    pub spool_batches: AtomicU64,
    /// Batches dropped from the spool (oldest first) to stay under `spool_max_bytes`.
    pub spool_dropped_batches: AtomicU64,
    /// Rows inside those dropped batches.
    pub spool_dropped_rows: AtomicU64,
    /// Datagrams the kernel dropped on the UDP sockets (from `/proc/net/udp`, Linux only).
    pub kernel_drops: AtomicU64,
    /// Receive buffer size the kernel granted for the UDP sockets, bytes.
    pub receive_buffer_bytes: AtomicU64,
}

/// A copy of the counters, for `status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCounts {
    /// See [`LogMetrics::lines_received`].
    pub lines_received: u64,
    /// See [`LogMetrics::lines_parsed`].
    pub lines_parsed: u64,
    /// See [`LogMetrics::lines_not_firewall`].
    pub lines_not_firewall: u64,
    /// Unparsed lines per format name.
    pub lines_unparsed: std::collections::BTreeMap<String, u64>,
    /// See [`LogMetrics::rejected_senders`].
    pub rejected_senders: u64,
    /// See [`LogMetrics::events_no_verdict`].
    pub events_no_verdict: u64,
    /// See [`LogMetrics::events_filtered`].
    pub events_filtered: u64,
    /// See [`LogMetrics::time_fallbacks`].
    pub time_fallbacks: u64,
    /// See [`LogMetrics::rows_shipped`].
    pub rows_shipped: u64,
    /// See [`LogMetrics::raw_shipped`].
    pub raw_shipped: u64,
    /// See [`LogMetrics::bytes_shipped`].
    pub bytes_shipped: u64,
    /// See [`LogMetrics::spool_bytes`].
    pub spool_bytes: u64,
    /// See [`LogMetrics::spool_batches`].
    pub spool_batches: u64,
    /// See [`LogMetrics::spool_dropped_batches`].
    pub spool_dropped_batches: u64,
    /// See [`LogMetrics::spool_dropped_rows`].
    pub spool_dropped_rows: u64,
    /// See [`LogMetrics::kernel_drops`].
    pub kernel_drops: u64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Adds one to a counter.
pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl LogMetrics {
    /// Counts one unparsed line of `format`.
    pub fn unparsed(&self, format: Format) {
        let i = Format::ALL.iter().position(|f| *f == format).unwrap_or(0);
        inc(&self.lines_unparsed[i]);
    }

    /// A copy of the counters.
    pub fn counts(&self) -> LogCounts {
        LogCounts {
            lines_received: get(&self.lines_received),
            lines_parsed: get(&self.lines_parsed),
            lines_not_firewall: get(&self.lines_not_firewall),
            lines_unparsed: Format::ALL
                .iter()
                .zip(&self.lines_unparsed)
                .map(|(f, n)| (f.as_str().to_owned(), get(n)))
                .collect(),
            rejected_senders: get(&self.rejected_senders),
            events_no_verdict: get(&self.events_no_verdict),
            events_filtered: get(&self.events_filtered),
            time_fallbacks: get(&self.time_fallbacks),
            rows_shipped: get(&self.rows_shipped),
            raw_shipped: get(&self.raw_shipped),
            bytes_shipped: get(&self.bytes_shipped),
            spool_bytes: get(&self.spool_bytes),
            spool_batches: get(&self.spool_batches),
            spool_dropped_batches: get(&self.spool_dropped_batches),
            spool_dropped_rows: get(&self.spool_dropped_rows),
            kernel_drops: get(&self.kernel_drops),
        }
    }

    /// Appends the series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let p = "portcullis_agent_logs";
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}\n{p}_{name} {value}"
            );
        };
        one(
            "lines_received_total",
            "counter",
            "Syslog lines received from allowed senders.",
            get(&self.lines_received),
        );
        one(
            "lines_parsed_total",
            "counter",
            "Lines parsed into firewall events.",
            get(&self.lines_parsed),
        );
        one(
            "lines_not_firewall_total",
            "counter",
            "Lines that are not firewall events, dropped.",
            get(&self.lines_not_firewall),
        );
        one(
            "rejected_senders_total",
            "counter",
            "Datagrams or connections from senders outside allowed_senders.",
            get(&self.rejected_senders),
        );
        one(
            "events_no_verdict_total",
            "counter",
            "Firewall events without a verdict, not shipped.",
            get(&self.events_no_verdict),
        );
        one(
            "events_filtered_total",
            "counter",
            "Firewall events whose verdict is not in actions.",
            get(&self.events_filtered),
        );
        one(
            "time_fallbacks_total",
            "counter",
            "Lines whose time was far from the receive time.",
            get(&self.time_fallbacks),
        );
        one(
            "frames_too_long_total",
            "counter",
            "TCP syslog frames over the length limit, discarded.",
            get(&self.frames_too_long),
        );
        one(
            "rows_shipped_total",
            "counter",
            "Summarised rows shipped.",
            get(&self.rows_shipped),
        );
        one(
            "raw_shipped_total",
            "counter",
            "Unparsed lines shipped raw.",
            get(&self.raw_shipped),
        );
        one(
            "bytes_shipped_total",
            "counter",
            "Compressed bytes shipped.",
            get(&self.bytes_shipped),
        );
        one(
            "ship_failures_total",
            "counter",
            "Batch sends that failed and will be retried.",
            get(&self.ship_failures),
        );
        one(
            "spool_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            get(&self.spool_bytes),
        );
        one(
            "spool_batches",
            "gauge",
            "Batches waiting in the spool.",
            get(&self.spool_batches),
        );
        one(
            "spool_dropped_batches_total",
            "counter",
            "Batches dropped from the full spool, oldest first.",
            get(&self.spool_dropped_batches),
        );
        one(
            "spool_dropped_rows_total",
            "counter",
            "Rows in batches dropped from the full spool.",
            get(&self.spool_dropped_rows),
        );
        one(
            "kernel_drops",
            "gauge",
            "Datagrams the kernel dropped on the syslog UDP sockets.",
            get(&self.kernel_drops),
        );
        one(
            "receive_buffer_bytes",
            "gauge",
            "Receive buffer the kernel granted the UDP sockets.",
            get(&self.receive_buffer_bytes),
        );
        let _ = writeln!(out, "# HELP {p}_lines_unparsed Firewall-looking lines that did not parse, by format.\n# TYPE {p}_lines_unparsed counter");
        for (format, n) in Format::ALL.iter().zip(&self.lines_unparsed) {
            let _ = writeln!(
                out,
                "{p}_lines_unparsed_total{{format=\"{format}\"}} {}",
                get(n)
            );
        }
    }
}
