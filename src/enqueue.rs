//! Plan → queues: every message goes to every configured queue, and the request succeeds only once all of
//! them are there.
//!
//! [`Enqueue`] is the seam: [`StorageQueues`] writes to Azure Storage Queues (or Azurite) through
//! `queue_message::Queue`, [`MemoryQueues`] keeps messages in memory for tests and benchmarks.
//! Queues are written concurrently; the messages of one request go to one queue in order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use queue_message::{Queue, QueueConnection, QueueError};
use tokio::task::JoinSet;

/// A queue could not be written (after the SDK's retries). The text is redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue `{queue}`: {source}")]
pub struct EnqueueError {
    /// Which queue.
    pub queue: String,
    /// What went wrong.
    #[source]
    pub source: QueueError,
}

/// Somewhere to put encoded messages.
#[async_trait]
pub trait Enqueue: Send + Sync + fmt::Debug {
    /// The queue names, for responses.
    fn queue_names(&self) -> Vec<String>;

    /// Puts every text into every queue, each living `ttl_secs` seconds.
    async fn send(&self, texts: &[String], ttl_secs: i64) -> Result<(), EnqueueError>;
}

/// Azure Storage Queues (or Azurite).
#[derive(Debug)]
pub struct StorageQueues {
    queues: Vec<Arc<Queue>>,
    create: bool,
}

impl StorageQueues {
    /// Handles on `names` of `connection`; with `create`, missing queues are created on demand.
    pub fn new(connection: &Arc<QueueConnection>, names: &[String], create: bool) -> Self {
        Self {
            queues: names
                .iter()
                .map(|n| Arc::new(connection.queue(n)))
                .collect(),
            create,
        }
    }

    /// Creates every queue that does not exist yet.
    pub async fn create_missing(&self) -> Result<(), EnqueueError> {
        for queue in &self.queues {
            queue
                .create_if_missing()
                .await
                .map_err(|source| EnqueueError {
                    queue: queue.name().to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Storage transactions made so far, over all queues.
    pub fn transactions(&self) -> u64 {
        self.queues.iter().map(|q| q.transactions()).sum()
    }
}

async fn send_to(
    queue: Arc<Queue>,
    texts: Arc<[String]>,
    ttl_secs: i64,
    create: bool,
) -> Result<(), EnqueueError> {
    let fail = |source| EnqueueError {
        queue: queue.name().to_owned(),
        source,
    };
    for text in texts.iter() {
        match queue.send(text, ttl_secs).await {
            Ok(()) => {}
            Err(QueueError::NotFound(_)) if create => {
                tracing::info!(queue = queue.name(), "Creating missing queue.");
                queue.create_if_missing().await.map_err(fail)?;
                queue.send(text, ttl_secs).await.map_err(fail)?;
            }
            Err(err) => return Err(fail(err)),
        }
    }
    Ok(())
}

#[async_trait]
impl Enqueue for StorageQueues {
    fn queue_names(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.name().to_owned()).collect()
    }

    async fn send(&self, texts: &[String], ttl_secs: i64) -> Result<(), EnqueueError> {
        let texts: Arc<[String]> = texts.into();
        if let [queue] = self.queues.as_slice() {
            return send_to(Arc::clone(queue), texts, ttl_secs, self.create).await;
        }
        let mut tasks = JoinSet::new();
        for queue in &self.queues {
            tasks.spawn(send_to(
                Arc::clone(queue),
                Arc::clone(&texts),
                ttl_secs,
                self.create,
            ));
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|err| {
                Err(EnqueueError {
                    queue: "?".to_owned(),
                    source: QueueError::Unavailable(format!("send task failed: {err}")),
                })
            });
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One message kept by [`MemoryQueues`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message text.
    pub text: String,
    /// Its time-to-live in seconds.
    pub ttl_secs: i64,
}

/// In-memory queues for tests and benchmarks; can be told to fail like an unreachable service.
#[derive(Debug, Default)]
pub struct MemoryQueues {
    names: Vec<String>,
    messages: Mutex<BTreeMap<String, Vec<StoredMessage>>>,
    failing: AtomicBool,
}

impl MemoryQueues {
    /// Empty queues with these names.
    pub fn new(names: &[&str]) -> Self {
        Self {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Makes every later send fail with `QueueError::Unavailable` (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The messages in one queue, oldest first.
    pub fn messages(&self, queue: &str) -> Vec<StoredMessage> {
        self.lock().get(queue).cloned().unwrap_or_default()
    }

    /// Drops every message (benchmarks call this to bound memory).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<StoredMessage>>> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Enqueue for MemoryQueues {
    fn queue_names(&self) -> Vec<String> {
        self.names.clone()
    }

    async fn send(&self, texts: &[String], ttl_secs: i64) -> Result<(), EnqueueError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(EnqueueError {
                queue: self.names.first().cloned().unwrap_or_default(),
                source: QueueError::Unavailable("in-memory queue set to fail".to_owned()),
            });
        }
        let mut messages = self.lock();
        for name in &self.names {
            let queue = messages.entry(name.clone()).or_default();
            queue.extend(texts.iter().map(|text| StoredMessage {
                text: text.clone(),
                ttl_secs,
            }));
        }
        Ok(())
    }
}
