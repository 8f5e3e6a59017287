//! Firewall backends: one object-safe trait, staged changes committed at once, and the factory that builds a
//! backend from the `[firewall]` configuration.
//!
//! Every backend owns only its own objects (a table, a set, address groups, an alias) and never touches
//! anything else on the firewall. The agent's state database is the source of truth; a backend is told what
//! to add and remove, and reports what it holds so the agent can reconcile drift.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;

/// One target to block until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockEntry {
    /// Address or network.
    pub target: Target,
    /// When the block ends. Backends with native timeouts use it for the kernel/device timeout; the others
    /// rely on the agent to remove the entry.
    pub expires_at: DateTime<Utc>,
}

/// What one commit changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Entries added or refreshed.
    pub added: usize,
    /// Entries removed.
    pub removed: usize,
    /// Write calls made to the firewall (processes spawned, HTTP writes).
    pub writes: usize,
}

/// Why a backend operation failed. All but `Unsupported` and `Config` are retried by the agent with backoff;
/// the queue messages behind a failed commit stay queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The firewall cannot be reached (process missing, connection refused, timeout, 5xx).
    #[error("firewall unreachable: {0}")]
    Unreachable(String),
    /// The firewall refused the change (syntax, limits, permissions, unexpected response).
    #[error("firewall rejected the change: {0}")]
    Rejected(String),
    /// This backend cannot run here (wrong OS, missing feature).
    #[error("backend not supported here: {0}")]
    Unsupported(String),
    /// The configuration cannot work (missing group, bad credentials); needs the operator.
    #[error("backend misconfigured: {0}")]
    Config(String),
}

impl BackendError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Rejected(_))
    }
}

/// A firewall the agent can enforce blocks on.
///
/// Changes are staged with [`stage_add`](Backend::stage_add) and [`stage_remove`](Backend::stage_remove) and
/// applied by one [`commit`](Backend::commit), atomically where the firewall allows it. A failed commit drops
/// the staged changes (the caller stages them again when it retries). Adding a target that is present
/// refreshes its expiry; removing an absent target is not an error.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics (`nftables`, `unifi`, …).
    fn name(&self) -> &'static str;

    /// Creates the backend's own objects if missing (idempotent); called at start and before reconcile.
    async fn init(&mut self) -> Result<(), BackendError>;

    /// Stages a block or an extension of one.
    fn stage_add(&mut self, entry: BlockEntry);

    /// Stages the removal of a target.
    fn stage_remove(&mut self, target: Target);

    /// Applies everything staged; see the trait docs for the failure contract.
    async fn commit(&mut self) -> Result<CommitStats, BackendError>;

    /// The targets the firewall currently holds in the backend's own objects.
    async fn list(&mut self) -> Result<Vec<Target>, BackendError>;

    /// Checks that the firewall is reachable and the backend's objects exist, without changing anything.
    async fn healthcheck(&mut self) -> Result<(), BackendError>;

    /// How long the agent should keep collecting messages before one commit. Zero for local firewalls;
    /// controller-managed appliances debounce bursts into one write.
    fn batch_window(&self) -> Duration {
        Duration::ZERO
    }

    /// Called once when the agent stops. Blocks stay in place.
    async fn shutdown(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}
