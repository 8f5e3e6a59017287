//! The MikroTik backend: one address-list entry per target with the native `timeout`.
//!
//! RouterOS expires entries itself, so a dead agent leaves nothing behind for long; the price is that
//! entries with a timeout live in RAM and vanish on a reboot, which the agent's reconcile repairs from its
//! state (`list` shows them missing, the agent adds them again). Only entries carrying our comment are
//! changed or removed; a matching entry someone else made is left alone and counts as blocked.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use queue_message::Target;

use super::client::{parse_timeout, Added, Menu, RestClient};
use super::config::MikrotikConfig;
use crate::backends::staged::{Batch, Staged};
use crate::backends::{Backend, BackendError, CommitStats};

/// The longest timeout RouterOS takes (`35w3d13:13:56`); longer blocks are re-added by reconcile.
pub const MAX_TIMEOUT: Duration =
    Duration::from_secs(35 * 604_800 + 3 * 86_400 + 13 * 3600 + 13 * 60 + 56);

/// An expiry this close to the one on the router is not worth a write.
const EXPIRY_TOLERANCE: chrono::Duration = chrono::Duration::seconds(5);

#[derive(Debug, Clone)]
struct Owned {
    id: String,
    /// When the entry expires on the router, as far as we know (`None` = permanent).
    expires: Option<DateTime<Utc>>,
}

/// Blocks on a MikroTik router in address lists.
#[derive(Debug)]
pub struct MikrotikBackend {
    config: MikrotikConfig,
    client: RestClient,
    /// Our entries as last read or written.
    entries: HashMap<Target, Owned>,
    fresh: bool,
    staged: Staged,
}

/// The timeout to send for an expiry: at least one second, at most [`MAX_TIMEOUT`].
fn timeout_until(expires: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (expires - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .clamp(Duration::from_secs(1), MAX_TIMEOUT)
}

impl MikrotikBackend {
    /// A backend over `client`; nothing is sent until [`Backend::init`].
    pub fn new(config: MikrotikConfig, client: RestClient) -> Self {
        Self {
            config,
            client,
            entries: HashMap::new(),
            fresh: false,
            staged: Staged::default(),
        }
    }

    fn is_ours(&self, comment: Option<&str>) -> bool {
        comment.is_some_and(|c| c == self.config.comment)
    }

    async fn reload(&mut self) -> Result<(), BackendError> {
        self.fresh = false;
        let now = Utc::now();
        let mut entries = HashMap::new();
        for menu in [Menu::V4, Menu::V6] {
            for entry in self.client.entries(menu, &self.config.list, None).await? {
                if !self.is_ours(entry.comment.as_deref()) {
                    continue;
                }
                let Ok(target) = Target::parse(&entry.address) else {
                    continue;
                };
                let expires = entry
                    .timeout
                    .as_deref()
                    .and_then(parse_timeout)
                    .and_then(|left| chrono::Duration::from_std(left).ok())
                    // A router reporting an absurd timeout must not overflow the clock (a panic here
                    // would crash-loop the agent); unreadable counts as unknown.
                    .and_then(|left| now.checked_add_signed(left));
                if let Some(duplicate) = entries.insert(
                    target,
                    Owned {
                        id: entry.id,
                        expires,
                    },
                ) {
                    // Two of our entries for one address: remove the extra one.
                    tracing::warn!(%target, "Duplicate address-list entry of ours; removing one.");
                    self.client.remove(menu, &duplicate.id).await?;
                }
            }
        }
        self.entries = entries;
        self.fresh = true;
        Ok(())
    }

    /// Finds the entry for `target` on the router (after a duplicate answer or before a removal).
    async fn find(&self, target: &Target) -> Result<Option<(String, bool)>, BackendError> {
        let menu = Menu::of(target);
        let text = target.to_string();
        let mut candidates = self
            .client
            .entries(menu, &self.config.list, Some(&text))
            .await?;
        if candidates.is_empty() && !target.is_ipv4() && target.is_host() {
            // RouterOS prints IPv6 hosts with their /128.
            candidates = self
                .client
                .entries(menu, &self.config.list, Some(&format!("{text}/128")))
                .await?;
        }
        let found = candidates
            .into_iter()
            .filter(|e| Target::parse(&e.address).ok() == Some(*target))
            .map(|e| {
                let ours = self.is_ours(e.comment.as_deref());
                (e.id, ours)
            })
            .max_by_key(|(_, ours)| *ours);
        Ok(found)
    }

    async fn add_one(
        &mut self,
        target: Target,
        expires: DateTime<Utc>,
        stats: &mut CommitStats,
    ) -> Result<(), BackendError> {
        let menu = Menu::of(&target);
        let now = Utc::now();
        let timeout = timeout_until(expires, now);
        let capped = expires.min(now + chrono::Duration::from_std(MAX_TIMEOUT).unwrap_or_default());
        if let Some(owned) = self.entries.get(&target).cloned() {
            if owned
                .expires
                .is_some_and(|have| (have - capped).abs() <= EXPIRY_TOLERANCE)
            {
                return Ok(()); // replay of the same block: nothing to change
            }
            stats.writes += 1;
            if self.client.set_timeout(menu, &owned.id, timeout).await? {
                self.entries.insert(
                    target,
                    Owned {
                        id: owned.id,
                        expires: Some(capped),
                    },
                );
                return Ok(());
            }
            self.entries.remove(&target); // expired meanwhile: add it again
        }
        stats.writes += 1;
        let list = self.config.list.clone();
        let comment = self.config.comment.clone();
        match self
            .client
            .add(menu, &list, &target, timeout, &comment)
            .await?
        {
            Added::New(id) => {
                self.entries.insert(
                    target,
                    Owned {
                        id,
                        expires: Some(capped),
                    },
                );
            }
            Added::Duplicate => match self.find(&target).await? {
                Some((id, true)) => {
                    stats.writes += 1;
                    self.client.set_timeout(menu, &id, timeout).await?;
                    self.entries.insert(
                        target,
                        Owned {
                            id,
                            expires: Some(capped),
                        },
                    );
                }
                Some((_, false)) => {
                    tracing::info!(%target, list = %list, "Address already in the list by someone else's entry; left as it is.");
                }
                None => {
                    return Err(BackendError::Rejected(format!(
                        "the router said {target} is already in {list} but does not show the entry"
                    )))
                }
            },
        }
        Ok(())
    }

    async fn remove_one(
        &mut self,
        target: Target,
        stats: &mut CommitStats,
    ) -> Result<(), BackendError> {
        let menu = Menu::of(&target);
        let id = match self.entries.remove(&target) {
            Some(owned) => Some(owned.id),
            None => match self.find(&target).await? {
                Some((id, true)) => Some(id),
                _ => None,
            },
        };
        if let Some(id) = id {
            stats.writes += 1;
            self.client.remove(menu, &id).await?;
            stats.removed += 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for MikrotikBackend {
    fn name(&self) -> &'static str {
        "mikrotik"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        let version = self.client.version().await?;
        let major: u32 = version
            .split(['.', ' '])
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(BackendError::Unsupported(format!(
                "RouterOS {version} at {}: the REST API needs RouterOS 7.1 or later",
                self.client.url()
            )));
        }
        self.reload().await
    }

    fn staged(&mut self) -> &mut Staged {
        &mut self.staged
    }

    async fn commit(&mut self) -> Result<CommitStats, BackendError> {
        let Batch { adds, removes } = self.staged.take();
        if adds.is_empty() && removes.is_empty() {
            return Ok(CommitStats::default());
        }
        let mut stats = CommitStats::default();
        let result = async {
            if !self.fresh {
                self.reload().await?;
            }
            for target in removes {
                self.remove_one(target, &mut stats).await?;
            }
            for (target, expires) in adds {
                self.add_one(target, expires, &mut stats).await?;
                stats.added += 1;
            }
            Ok::<(), BackendError>(())
        }
        .await;
        if let Err(err) = result {
            self.fresh = false;
            return Err(err);
        }
        Ok(stats)
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        self.reload().await?;
        let mut all: Vec<Target> = self.entries.keys().copied().collect();
        all.sort();
        Ok(all)
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        let version = self.client.version().await?;
        self.reload().await?;
        let list = &self.config.list;
        for (menu, family) in [(Menu::V4, "ip"), (Menu::V6, "ipv6")] {
            if !self.client.list_is_referenced(menu, list).await? {
                tracing::warn!(
                    list = %list,
                    "No /{family} firewall raw or filter rule uses src-address-list={list}: nothing is \
                     dropped yet. Add one once: /{family} firewall raw add chain=prerouting \
                     src-address-list={list} action=drop comment=portcullis"
                );
            }
        }
        tracing::info!(
            %version,
            entries = self.entries.len(),
            "MikroTik reachable; address list {list} readable."
        );
        Ok(())
    }
}
