//! The shipping boundary: a [`Ship`] sends one spooled batch, and [`ship_loop`] drains the spool into it
//! oldest first, keeping a batch until it was sent and backing off while the queue or Azure is
//! unreachable. [`QueueShipper`] sends them as signed log-batch reports on the reports queue.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use flate2::write::GzEncoder;
use flate2::Compression;
use queue_message::{LogBatch, Queue, Report, ReportBody, SigningKey};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::metrics::LogMetrics;
use super::spool::{Batch, Spool};

/// A send that failed; the batch stays in the spool and is retried.
#[derive(Debug, thiserror::Error)]
#[error("shipping a log batch failed: {0}")]
pub struct ShipError(pub String);

/// Sends one batch of rows.
#[async_trait]
pub trait Ship: Send + Sync + fmt::Debug {
    /// Sends `batch`; returns the bytes that went over the wire.
    async fn ship(&self, batch: &Batch) -> Result<u64, ShipError>;
}

/// The gzip'd JSON size of a batch: what a compressed report body of it weighs, near enough.
pub fn compressed_size(batch: &Batch) -> u64 {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let ok = serde_json::to_writer(&mut encoder, batch).is_ok() && encoder.flush().is_ok();
    if ok {
        encoder.finish().map_or(0, |b| b.len() as u64)
    } else {
        0
    }
}

/// A shipper that keeps what it is given in memory and can be told to fail: the end of the line in tests
/// and benchmarks, reporting the gzip'd JSON size as bytes sent (see [`compressed_size`]).
#[derive(Debug, Default)]
pub struct MemoryShipper {
    batches: Mutex<Vec<Batch>>,
    failing: AtomicBool,
    attempts: AtomicU64,
}

impl MemoryShipper {
    /// Makes every send fail (an outage) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Batches received so far.
    pub fn batches(&self) -> Vec<Batch> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Send attempts, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Ship for MemoryShipper {
    async fn ship(&self, batch: &Batch) -> Result<u64, ShipError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(ShipError("the queue is unreachable (simulated)".to_owned()));
        }
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(batch.clone());
        Ok(compressed_size(batch))
    }
}

/// Time to live of a log report on the reports queue: a week, the storage default. The agent's spool
/// covers the agent's side of an outage; this covers the function's.
pub const REPORT_TTL_SECS: i64 = 7 * 24 * 3600;

/// Ships batches as signed, gzip'd log-batch reports (the shared format of `queue_message::report`) on
/// the reports queue, packed so every message stays under the queue's size limit.
pub struct QueueShipper {
    queue: Queue,
    key: SigningKey,
    site: String,
}

impl fmt::Debug for QueueShipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueShipper")
            .field("queue", &self.queue.name())
            .field("key", &self.key)
            .field("site", &self.site)
            .finish()
    }
}

impl QueueShipper {
    /// A shipper writing to `queue`, signing with `key`, as `site`.
    pub fn new(queue: Queue, key: SigningKey, site: String) -> Self {
        Self { queue, key, site }
    }

    /// The signed message texts for one batch.
    pub fn messages(&self, batch: &Batch) -> Vec<String> {
        report_messages(batch, &self.key, &self.site)
    }
}

/// The signed message texts (one or more log-batch reports) that carry `batch` for `site`.
pub fn report_messages(batch: &Batch, key: &SigningKey, site: &str) -> Vec<String> {
    let template = Report {
        id: Uuid::new_v4(),
        site: site.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: Utc::now(),
        body: ReportBody::Logs(LogBatch::default()),
    };
    Report::pack_logs(&template, &batch.rows, key)
        .iter()
        .map(|r| r.encode(key))
        .collect()
}

#[async_trait]
impl Ship for QueueShipper {
    async fn ship(&self, batch: &Batch) -> Result<u64, ShipError> {
        // A batch that fails half-way is sent again whole: its first reports arrive twice. Batches of
        // MAX_BATCH_ROWS rows are normally one message, so this is rare, and rows carry their counts and
        // times, so a duplicate is visible rather than silent.
        let mut bytes = 0;
        for text in self.messages(batch) {
            self.queue
                .send(&text, REPORT_TTL_SECS)
                .await
                .map_err(|e| ShipError(e.to_string()))?;
            bytes += text.len() as u64;
        }
        Ok(bytes)
    }
}

/// First retry delay after a failed send; doubled up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Drains the spool into `shipper`, oldest batch first, until `shutdown`. `wake` is notified when a batch
/// was spooled.
pub async fn ship_loop(
    spool: Arc<Mutex<Spool>>,
    shipper: Arc<dyn Ship>,
    metrics: Arc<LogMetrics>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let spool_for_read = spool.clone();
        let next = tokio::task::spawn_blocking(move || {
            spool_for_read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .oldest()
        })
        .await;
        let next = match next {
            Ok(Ok(next)) => next,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the log spool");
                None
            }
            Err(_) => None,
        };
        let Some((seq, batch)) = next else {
            tokio::select! {
                () = wake.notified() => continue,
                () = shutdown.cancelled() => return,
            }
        };
        let sent = tokio::select! {
            sent = shipper.ship(&batch) => sent,
            () = shutdown.cancelled() => return,
        };
        match sent {
            Ok(bytes) => {
                backoff = FIRST_BACKOFF;
                let raw = batch.rows.iter().filter(|r| r.raw.is_some()).count() as u64;
                let rows = batch.rows.len() as u64 - raw;
                metrics.rows_shipped.fetch_add(rows, Ordering::Relaxed);
                metrics.raw_shipped.fetch_add(raw, Ordering::Relaxed);
                metrics.bytes_shipped.fetch_add(bytes, Ordering::Relaxed);
                let spool = spool.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    spool
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(seq)
                })
                .await;
                if let Ok(Err(error)) = removed {
                    tracing::warn!(%error, "cannot remove a shipped batch from the log spool");
                }
            }
            Err(error) => {
                metrics.ship_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, retry_in = ?backoff, "log batch kept in the spool");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
