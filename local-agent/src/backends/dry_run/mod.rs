//! The `dry-run` backend: logs what it would do, changes nothing on the host.
//!
//! It keeps an in-memory set of what it "holds" so that [`Backend::list`] is truthful and reconcile, status
//! and the contract tests behave exactly as with a real firewall. Everything else in the agent (state,
//! audit, metrics) works normally. It is the reference implementation of the [`Backend`] contract: adding
//! a present target refreshes its expiry, removing an absent one is a no-op, a commit applies everything
//! staged at once.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;
use serde::Deserialize;

use super::staged::Staged;
use super::{parse_table, Backend, BackendError, CommitStats};
use crate::config::ConfigError;

fn default_log_limit() -> usize {
    20
}

/// `[firewall.dry-run]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunConfig {
    /// How many targets one commit's log line lists by name before summarising (default 20).
    #[serde(default = "default_log_limit")]
    pub log_limit: usize,
    /// Pretend to be a controller that wants bursts debounced: the agent collects messages this long
    /// before one commit (default 0). For trying out and testing batch windows.
    #[serde(default)]
    pub batch_window: crate::span::Span,
}

impl Default for DryRunConfig {
    fn default() -> Self {
        Self {
            log_limit: default_log_limit(),
            batch_window: crate::span::Span::default(),
        }
    }
}

/// Parses `[firewall.dry-run]`.
pub fn validate(table: Option<toml::Value>) -> Result<DryRunConfig, ConfigError> {
    parse_table("firewall.dry-run", table)
}

/// Builds the backend (no I/O).
pub async fn build(config: DryRunConfig) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(DryRun::new(config)))
}

/// The dry-run backend.
#[derive(Debug, Default)]
pub struct DryRun {
    config: DryRunConfig,
    held: HashMap<Target, DateTime<Utc>>,
    staged: Staged,
}

impl DryRun {
    /// A dry-run backend holding nothing.
    pub fn new(config: DryRunConfig) -> Self {
        Self {
            config,
            held: HashMap::new(),
            staged: Staged::default(),
        }
    }

    /// What it holds, with expiries (for tests).
    pub fn held(&self) -> &HashMap<Target, DateTime<Utc>> {
        &self.held
    }

    fn names(&self, targets: &[Target]) -> String {
        let mut text: Vec<String> = targets
            .iter()
            .take(self.config.log_limit)
            .map(ToString::to_string)
            .collect();
        if targets.len() > self.config.log_limit {
            text.push(format!(
                "… and {} more",
                targets.len() - self.config.log_limit
            ));
        }
        text.join(", ")
    }
}

#[async_trait]
impl Backend for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        tracing::info!("Dry run: no firewall will be changed.");
        Ok(())
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let batch = self.staged.take();
        if batch.is_empty() {
            return Ok(CommitStats::default());
        }
        let mut removed: Vec<Target> = batch.removes.into_iter().collect();
        for target in &removed {
            self.held.remove(target);
        }
        let mut added = Vec::with_capacity(batch.adds.len());
        for (target, expires_at) in batch.adds {
            self.held.insert(target, expires_at);
            added.push(target);
        }
        added.sort_unstable();
        removed.sort_unstable();
        if !added.is_empty() {
            tracing::info!(count = added.len(), targets = %self.names(&added), "Dry run: would block.");
        }
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), targets = %self.names(&removed), "Dry run: would unblock.");
        }
        Ok(CommitStats {
            added: added.len(),
            removed: removed.len(),
            writes: 0,
        })
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        let now = Utc::now();
        // Like a kernel set with timeouts, expired entries are gone.
        self.held.retain(|_, expires_at| *expires_at > now);
        Ok(self.held.keys().copied().collect())
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn batch_window(&self) -> std::time::Duration {
        self.config.batch_window.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::BlockEntry;
    use chrono::Duration;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[tokio::test]
    async fn follows_the_backend_contract() {
        let mut b = DryRun::new(DryRunConfig::default());
        b.init().await.unwrap();
        let later = Utc::now() + Duration::hours(1);
        b.stage_add(BlockEntry {
            target: t("198.51.100.7"),
            expires_at: later,
        });
        b.stage_add(BlockEntry {
            target: t("2001:db8::/48"),
            expires_at: later,
        });
        b.stage_remove(t("203.0.113.9"));
        let stats = b.commit().await.unwrap();
        assert_eq!((stats.added, stats.removed), (2, 1));
        let mut held = b.list().await.unwrap();
        held.sort();
        assert_eq!(held, [t("198.51.100.7"), t("2001:db8::/48")]);

        // Re-adding refreshes the expiry; removing an absent target is fine.
        let much_later = later + Duration::hours(5);
        b.stage_add(BlockEntry {
            target: t("198.51.100.7"),
            expires_at: much_later,
        });
        b.stage_remove(t("2001:db8::/48"));
        b.stage_remove(t("2001:db8::/48"));
        b.commit().await.unwrap();
        assert_eq!(b.held()[&t("198.51.100.7")], much_later);
        assert_eq!(b.list().await.unwrap(), [t("198.51.100.7")]);
        assert_eq!(b.commit().await.unwrap(), CommitStats::default());
    }

    #[tokio::test]
    async fn expired_entries_are_not_listed() {
        let mut b = DryRun::new(DryRunConfig::default());
        b.stage_add(BlockEntry {
            target: t("198.51.100.7"),
            expires_at: Utc::now() - Duration::seconds(1),
        });
        b.commit().await.unwrap();
        assert!(b.list().await.unwrap().is_empty());
    }
}
