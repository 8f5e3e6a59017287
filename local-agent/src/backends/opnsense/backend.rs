//! The OPNsense backend: one "External (advanced)" alias, changed one address per call.
//!
//! An external alias is only a pf table: changing it costs no config write, and its content is not kept
//! across a reboot or a filter reload, which the agent's reconcile repairs (`list` reads the live table).
//! OPNsense has no per-entry timeout, so expiry is the agent's removal. A cache of the table avoids calls
//! for targets already present; it is refreshed on every `list` and after any failure.

use std::collections::HashSet;

use async_trait::async_trait;
use queue_message::Target;

use super::client::{ApiClient, Change};
use super::config::OpnsenseConfig;
use crate::backends::staged::Staged;
use crate::backends::{Backend, BackendError, CommitStats};

/// The one-time manual step.
pub fn manual_step(alias: &str) -> String {
    format!(
        "OPNsense blocks nothing by itself: once, add a rule on the WAN interface (Firewall → Rules → WAN; \
         or a floating rule for every interface), action Block, direction in, TCP/IP version IPv4+IPv6, \
         source = alias `{alias}`, placed above the pass rules, and apply."
    )
}

/// Blocks on OPNsense in an external alias.
#[derive(Debug)]
pub struct OpnsenseBackend {
    config: OpnsenseConfig,
    client: ApiClient,
    present: HashSet<Target>,
    fresh: bool,
    staged: Staged,
}

impl OpnsenseBackend {
    /// A backend over `client`; nothing is sent until [`Backend::init`].
    pub fn new(config: OpnsenseConfig, client: ApiClient) -> Self {
        Self {
            config,
            client,
            present: HashSet::new(),
            fresh: false,
            staged: Staged::default(),
        }
    }

    async fn reload(&mut self) -> Result<(), BackendError> {
        self.fresh = false;
        let mut present = HashSet::new();
        for text in self.client.list(&self.config.alias).await? {
            match Target::parse(&text) {
                Ok(target) => {
                    present.insert(target);
                }
                Err(_) => tracing::debug!(entry = %text, "Unreadable alias entry ignored."),
            }
        }
        self.present = present;
        self.fresh = true;
        Ok(())
    }

    async fn ensure_alias(&mut self) -> Result<(), BackendError> {
        let alias = self.config.alias.clone();
        let uuid = match self.client.alias_uuid(&alias).await? {
            Some(uuid) => uuid,
            None if self.config.create_alias => {
                self.client.create_external_alias(&alias).await?;
                tracing::warn!(%alias, "Created the external alias {alias}. {}", manual_step(&alias));
                return Ok(());
            }
            None => {
                return Err(BackendError::Config(format!(
                    "OPNsense at {} has no alias {alias}: create it under Firewall → Aliases with type \
                     \"External (advanced)\", or set `create_alias = true`. {}",
                    self.client.url(),
                    manual_step(&alias)
                )))
            }
        };
        match self.client.alias_type(&uuid).await?.as_deref() {
            Some("external") | None => Ok(()),
            Some(other) => Err(BackendError::Config(format!(
                "alias {alias} is of type {other:?}; Portcullis needs type \"External (advanced)\", whose \
                 changes touch only the pf table (a host or network alias would rewrite config.xml on \
                 every block)"
            ))),
        }
    }

    fn lost_alias(&mut self, why: &str) -> BackendError {
        self.fresh = false;
        BackendError::Rejected(format!(
            "alias {} vanished from OPNsense ({why}); it is created again at the next start if \
             `create_alias = true`, otherwise create it by hand",
            self.config.alias
        ))
    }
}

#[async_trait]
impl Backend for OpnsenseBackend {
    fn name(&self) -> &'static str {
        "opnsense"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        self.ensure_alias().await?;
        self.reload().await
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let batch = self.staged.take();
        if batch.is_empty() {
            return Ok(CommitStats::default());
        }
        if !self.fresh {
            self.reload().await?;
        }
        let alias = self.config.alias.clone();
        let mut stats = CommitStats::default();
        for target in batch.removes {
            if !self.present.contains(&target) {
                continue;
            }
            stats.writes += 1;
            match self.client.change("delete", &alias, &target).await {
                Ok(Change::Done) => {
                    self.present.remove(&target);
                    stats.removed += 1;
                }
                Ok(Change::NoSuchAlias(why)) => return Err(self.lost_alias(&why)),
                Err(err) => {
                    self.fresh = false;
                    return Err(err);
                }
            }
        }
        for target in batch.adds.into_keys() {
            stats.added += 1;
            if self.present.contains(&target) {
                continue; // no timeout to refresh on OPNsense
            }
            stats.writes += 1;
            match self.client.change("add", &alias, &target).await {
                Ok(Change::Done) => {
                    self.present.insert(target);
                }
                Ok(Change::NoSuchAlias(why)) => return Err(self.lost_alias(&why)),
                Err(err) => {
                    self.fresh = false;
                    return Err(err);
                }
            }
        }
        Ok(stats)
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        self.reload().await?;
        let mut all: Vec<Target> = self.present.iter().copied().collect();
        all.sort();
        Ok(all)
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        self.ensure_alias().await?;
        self.reload().await?;
        tracing::info!(
            alias = %self.config.alias,
            entries = self.present.len(),
            "OPNsense reachable and the alias exists. {}",
            manual_step(&self.config.alias)
        );
        Ok(())
    }
}
