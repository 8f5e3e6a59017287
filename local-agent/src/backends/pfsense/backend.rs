//! The pfSense backend: one network alias changed by at most two PATCHes (append, remove) and one apply
//! per commit.
//!
//! Every change is a config.xml write and a filter reload, so the agent's batch window (5 s by default)
//! collects a burst into one commit. The alias is read before each commit: its `id` is an index that
//! shifts when another alias is deleted, and the read gives the true membership to diff against. An
//! apply that failed is retried at the next commit (and at start) even when nothing else changed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use queue_message::Target;

use super::client::{Alias, RestClient};
use super::config::PfsenseConfig;
use crate::backends::staged::Staged;
use crate::backends::{Backend, BackendError, CommitStats};

/// The one-time manual step.
pub fn manual_step(alias: &str) -> String {
    format!(
        "pfSense blocks nothing by itself: once, add a rule on WAN (Firewall → Rules → WAN, or a floating \
         rule), action Block, address family IPv4+IPv6, source = alias `{alias}`, above the pass rules, \
         and apply."
    )
}

/// Blocks on pfSense in a network alias through the REST API package.
#[derive(Debug)]
pub struct PfsenseBackend {
    config: PfsenseConfig,
    client: RestClient,
    staged: Staged,
    apply_pending: bool,
}

/// The alias's entries by target, with the text as stored (needed to remove it).
fn members(alias: &Alias) -> BTreeMap<Target, String> {
    alias
        .address
        .iter()
        .filter_map(|text| Target::parse(text).ok().map(|t| (t, text.clone())))
        .collect()
}

impl PfsenseBackend {
    /// A backend over `client`; nothing is sent until [`Backend::init`].
    pub fn new(config: PfsenseConfig, client: RestClient) -> Self {
        Self {
            config,
            client,
            staged: Staged::default(),
            apply_pending: false,
        }
    }

    async fn fetch(&self) -> Result<Alias, BackendError> {
        let alias = self.client.alias(&self.config.alias).await?.ok_or_else(|| {
            BackendError::Config(format!(
                "pfSense at {} has no alias {}: create a Network alias of that name under Firewall → \
                 Aliases, or set `create_alias = true`. {}",
                self.client.url(),
                self.config.alias,
                manual_step(&self.config.alias)
            ))
        })?;
        if alias.kind != "network" {
            return Err(BackendError::Config(format!(
                "alias {} is of type {:?}; Portcullis needs a Network alias (it holds addresses and CIDRs)",
                alias.name, alias.kind
            )));
        }
        Ok(alias)
    }

    async fn apply(&mut self, stats: &mut CommitStats) -> Result<(), BackendError> {
        self.apply_pending = true;
        stats.writes += 1;
        self.client.apply().await?;
        self.apply_pending = false;
        Ok(())
    }
}

#[async_trait]
impl Backend for PfsenseBackend {
    fn name(&self) -> &'static str {
        "pfsense"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        let name = self.config.alias.clone();
        if self.client.alias(&name).await?.is_none() && self.config.create_alias {
            self.client.create_alias(&name).await?;
            self.apply_pending = true;
            tracing::warn!(alias = %name, "Created the network alias {name}. {}", manual_step(&name));
        }
        self.fetch().await?;
        if self.apply_pending || self.client.pending().await? {
            self.apply(&mut CommitStats::default()).await?;
        }
        Ok(())
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let batch = self.staged.take();
        if batch.is_empty() && !self.apply_pending {
            return Ok(CommitStats::default());
        }
        let alias = self.fetch().await?;
        let present = members(&alias);
        let to_add: Vec<String> = batch
            .adds
            .keys()
            .filter(|t| !present.contains_key(t))
            .map(|t| t.net().to_string())
            .collect();
        let to_remove: Vec<String> = batch
            .removes
            .iter()
            .filter_map(|t| present.get(t).cloned())
            .collect();
        let mut stats = CommitStats {
            added: batch.adds.len(),
            removed: to_remove.len(),
            writes: 0,
        };
        // A PATCH that failed changed nothing, so only a successful one makes an apply due; an apply that
        // failed stays due until one succeeds.
        if !to_add.is_empty() {
            stats.writes += 1;
            self.client.patch(alias.id, "append", &to_add).await?;
            self.apply_pending = true;
        }
        if !to_remove.is_empty() {
            stats.writes += 1;
            self.client.patch(alias.id, "remove", &to_remove).await?;
            self.apply_pending = true;
        }
        if self.apply_pending {
            self.apply(&mut stats).await?;
        }
        Ok(stats)
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        Ok(members(&self.fetch().await?).into_keys().collect())
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        let alias = self.fetch().await?;
        let pending = self.client.pending().await?;
        tracing::info!(
            alias = %alias.name,
            entries = alias.address.len(),
            pending,
            "pfSense reachable and the alias exists. {}",
            manual_step(&alias.name)
        );
        Ok(())
    }

    fn batch_window(&self) -> Duration {
        self.config.batch_window
    }
}
