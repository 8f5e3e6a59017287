//! The sender task: drains the reports [`outbox`] oldest-first to the reports queue.
//!
//! A message leaves the outbox only after the queue accepted it, so an outage, a crash or a restart loses
//! nothing (a crash between the send and the delete sends that one message twice; the handler dedups by
//! report id). On failure the task backs off exponentially up to a ceiling and keeps everything. It shares
//! nothing with enforcement but the state database, which it touches in short calls on the blocking pool:
//! a slow or absent reports queue never delays a firewall commit.

use std::sync::Arc;
use std::time::Duration;

use queue_message::{Queue, QueueError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox;
use crate::db::Db;
use crate::store::StoreError;

/// How long a report waits in the reports queue for the handler: the service's maximum (7 days).
pub const REPORT_TTL_SECS: i64 = 7 * 24 * 3600;

/// Messages read from the outbox per database call.
const BATCH: usize = 32;

/// Why a drain stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The reports queue refused or could not be reached; the message stays in the outbox.
    #[error("reports queue: {0}")]
    Queue(#[from] QueueError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sends every message now in the outbox, oldest first, removing each once the queue accepted it.
/// Returns how many were sent; stops at the first failure (later messages keep their order).
pub async fn drain(db: &Db, queue: &Queue) -> Result<usize, DrainError> {
    let mut sent = 0;
    loop {
        let batch = db.call(|s| outbox::oldest(s.connection(), BATCH)).await?;
        if batch.is_empty() {
            return Ok(sent);
        }
        for entry in batch {
            queue.send(&entry.body, REPORT_TTL_SECS).await?;
            let id = entry.id;
            db.call(move |s| outbox::remove(s.connection(), id)).await?;
            sent += 1;
        }
    }
}

/// Backoff bounds of [`run`].
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait after a failure.
    pub min: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// Drains the outbox whenever `wake` is notified (after a push) and at least every `backoff.max`;
/// after a failure waits `backoff.min`, doubling up to `backoff.max`. Runs until `stop` is cancelled.
pub async fn run(
    db: Db,
    queue: Queue,
    wake: Arc<Notify>,
    backoff: Backoff,
    stop: CancellationToken,
) {
    let mut wait = backoff.min;
    while !stop.is_cancelled() {
        match drain(&db, &queue).await {
            Ok(sent) => {
                if sent > 0 {
                    tracing::debug!(sent, "Reports sent.");
                }
                wait = backoff.min;
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(backoff.max) => {}
                    () = stop.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = wait.as_secs(), "Reports not sent; they stay in the outbox.");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => {}
                }
                wait = (wait * 2).min(backoff.max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use queue_message::testing::Azurite;
    use queue_message::QueueConnection;

    use super::*;
    use crate::reports::outbox::Kind;
    use crate::store::Store;

    async fn depth(db: &Db) -> u64 {
        db.call(|s| outbox::depth(s.connection())).await.unwrap()
    }

    async fn queued(queue: &Queue) -> Vec<String> {
        let mut texts = Vec::new();
        loop {
            let got = queue.receive(32, 60).await.unwrap();
            if got.is_empty() {
                return texts;
            }
            texts.extend(got.into_iter().map(|r| r.text));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_outage_loses_nothing_and_order_is_kept_once_the_queue_is_back() {
        queue_message::require!(queue_message::testing::azurite_available());
        let azurite = Azurite::start();
        let conn = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
        let queue = conn.queue("portcullis-reports");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::new(Store::open(&path).unwrap());
        let bodies: Vec<String> = (1..=40).map(|i| format!("report {i}")).collect();
        db.call({
            let bodies = bodies.clone();
            move |s| outbox::push(s.connection(), Kind::Report, &bodies, Utc::now(), 100)
        })
        .await
        .unwrap();

        // The reports queue is missing: nothing is sent, nothing is removed.
        let err = drain(&db, &queue).await.unwrap_err();
        assert!(
            matches!(err, DrainError::Queue(QueueError::NotFound(_))),
            "{err}"
        );
        assert_eq!(depth(&db).await, 40);

        // A restart keeps the unsent reports.
        drop(db);
        let db = Db::new(Store::open(&path).unwrap());
        assert_eq!(depth(&db).await, 40);

        // The queue is back: everything arrives, oldest first, and the outbox is empty.
        queue.create_if_missing().await.unwrap();
        assert_eq!(drain(&db, &queue).await.unwrap(), 40);
        assert_eq!(depth(&db).await, 0);
        assert_eq!(queued(&queue).await, bodies);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_task_sends_what_is_pushed_and_keeps_it_while_the_service_is_down() {
        queue_message::require!(queue_message::testing::azurite_available());
        let azurite = Azurite::start();
        // Nothing listens on this port: every send fails as a network outage would.
        let port = queue_message::testing::free_port();
        let down = Arc::new(
            QueueConnection::parse(
                &azurite
                    .connection_string()
                    .replace(&format!(":{}/", azurite.port()), &format!(":{port}/")),
            )
            .unwrap()
            .with_retry(0, Duration::from_secs(1)),
        );
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Store::open(&dir.path().join("state.db")).unwrap());
        let wake = Arc::new(Notify::new());
        let backoff = Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
        db.call(|s| {
            outbox::push(
                s.connection(),
                Kind::Heartbeat,
                &["hb".to_owned()],
                Utc::now(),
                10,
            )
        })
        .await
        .unwrap();
        let task = tokio::spawn(run(
            db.clone(),
            down.queue("portcullis-reports"),
            Arc::clone(&wake),
            backoff,
            CancellationToken::new(),
        ));
        // Several attempts fail (backoff 50–200 ms); the message stays.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(depth(&db).await, 1);
        task.abort();

        let up = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
        let queue = up.queue("portcullis-reports");
        queue.create_if_missing().await.unwrap();
        let task = tokio::spawn(run(
            db.clone(),
            up.queue("portcullis-reports"),
            Arc::clone(&wake),
            backoff,
            CancellationToken::new(),
        ));
        let mut got = Vec::new();
        for _ in 0..100 {
            got.extend(queued(&queue).await);
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(got, ["hb"]);
        task.abort();
        assert_eq!(depth(&db).await, 0);
    }
}
