//! The UniFi backend: sharded address lists, whole-list writes only on real change, serialised and spaced.
//!
//! The agent's state is the source of truth; UniFi has no per-entry timeout, so expiry is the agent's
//! removal. Each family has shards `<group_name>-v4-0`, `-v4-1`, …; a new target goes to the lowest shard
//! with room, so the first shard fills first and removals leave room that later blocks reuse.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use queue_message::Target;
use tokio::time::Instant;

use super::client::{Family, GroupApi, RemoteGroup};
use super::config::UnifiConfig;
use crate::backends::staged::Staged;
use crate::backends::{Backend, BackendError, CommitStats};

/// Shard key: family and index.
type Key = (Family, u32);

/// The one-time manual step, shown by `check` and when the groups are missing.
pub fn manual_step(prefix: &str, kind: &str) -> String {
    format!(
        "UniFi drops nothing by itself: once, create a rule that drops traffic whose source is in the \
         {kind}s `{prefix}-v4-0` and `{prefix}-v6-0`. Classic firewall: Settings → Security → Firewall rules, \
         Internet In (WAN_IN) and Internet v6 In (WANv6_IN), action Drop, source = the group. Zone-based \
         firewall (Network 9+): a policy from External to Internal and to Gateway, action Block, source = the \
         {kind}s. When a shard `-v4-1`, `-v6-1`, … appears, add it to the same rule."
    )
}

/// Blocks on a UniFi console in address groups or traffic matching lists.
#[derive(Debug)]
pub struct UnifiBackend {
    config: UnifiConfig,
    api: Box<dyn GroupApi>,
    /// Our shards as last read or written.
    shards: BTreeMap<Key, RemoteGroup>,
    /// False after a failed write or before the first read: reload before the next diff.
    fresh: bool,
    staged: Staged,
    last_write: Option<Instant>,
    /// The manual step was logged once (at the first healthcheck); later healthchecks stay quiet.
    step_shown: bool,
    /// Groups this agent created since it started: no rule is known to reference them.
    created: BTreeSet<String>,
}

impl UnifiBackend {
    /// A backend over `api`; nothing is sent until [`Backend::init`].
    pub fn new(config: UnifiConfig, api: Box<dyn GroupApi>) -> Self {
        Self {
            config,
            api,
            shards: BTreeMap::new(),
            fresh: false,
            staged: Staged::default(),
            last_write: None,
            step_shown: false,
            created: BTreeSet::new(),
        }
    }

    fn shard_name(&self, (family, index): Key) -> String {
        format!("{}-{}-{index}", self.config.group_name, family.tag())
    }

    /// `portcullis-v4-3` → `(V4, 3)` when the prefix is ours.
    fn parse_name(&self, name: &str) -> Option<Key> {
        let rest = name
            .strip_prefix(&self.config.group_name)?
            .strip_prefix('-')?;
        let (tag, index) = rest.split_once('-')?;
        let family = match tag {
            "v4" => Family::V4,
            "v6" => Family::V6,
            _ => return None,
        };
        if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some((family, index.parse().ok()?))
    }

    async fn reload(&mut self) -> Result<(), BackendError> {
        self.fresh = false;
        self.api.connect().await?;
        let mut shards = BTreeMap::new();
        for group in self.api.list_groups().await? {
            let Some(key) = self.parse_name(&group.name) else {
                continue;
            };
            if key.0 != group.family {
                tracing::warn!(
                    name = %group.name,
                    "A group named like ours has the wrong address family; ignored."
                );
                continue;
            }
            if let Some(previous) = shards.insert(key, group) {
                tracing::warn!(
                    name = %previous.name,
                    "Two groups have the same name; using the last one listed."
                );
            }
        }
        self.shards = shards;
        self.fresh = true;
        Ok(())
    }

    fn missing_first_shards(&self) -> Vec<Key> {
        [(Family::V4, 0), (Family::V6, 0)]
            .into_iter()
            .filter(|key| !self.shards.contains_key(key))
            .collect()
    }

    async fn wait_write_slot(&self) {
        if let Some(last) = self.last_write {
            tokio::time::sleep_until(last + self.config.min_write_interval).await;
        }
    }

    async fn create_shard(
        &mut self,
        key: Key,
        members: &BTreeSet<Target>,
    ) -> Result<(), BackendError> {
        let name = self.shard_name(key);
        self.wait_write_slot().await;
        let result = self.api.create_group(&name, key.0, members).await;
        self.last_write = Some(Instant::now());
        let group = result?;
        tracing::warn!(
            %name,
            kind = self.api.object_kind(),
            "Created {} {name}; until a firewall rule or zone policy drops its sources, its members are \
             NOT blocked.",
            self.api.object_kind()
        );
        self.shards.insert(key, group);
        self.created.insert(name);
        Ok(())
    }

    /// Computes the new membership of every shard; returns it and the shards that must be created.
    fn plan(
        &self,
        adds: &BTreeSet<Target>,
        removes: &BTreeSet<Target>,
    ) -> (BTreeMap<Key, BTreeSet<Target>>, usize, usize) {
        let mut next: BTreeMap<Key, BTreeSet<Target>> = self
            .shards
            .iter()
            .map(|(key, group)| (*key, group.members.clone()))
            .collect();
        let mut location: HashMap<Target, Vec<Key>> = HashMap::new();
        for (key, members) in &next {
            for target in members {
                location.entry(*target).or_default().push(*key);
            }
        }
        let mut removed = 0;
        for target in removes {
            if let Some(keys) = location.remove(target) {
                for key in keys {
                    next.get_mut(&key).map(|m| m.remove(target));
                }
                removed += 1;
            }
        }
        let mut added = 0;
        for target in adds {
            added += 1;
            if location.contains_key(target) {
                continue; // already blocked: UniFi has no expiry to refresh, so nothing to write
            }
            let family = Family::of(target);
            let slot = next
                .iter()
                .filter(|((f, _), members)| {
                    *f == family && members.len() < self.config.max_group_size
                })
                .map(|(key, _)| *key)
                .next();
            let key = slot.unwrap_or_else(|| {
                let last = next
                    .keys()
                    .filter(|(f, _)| *f == family)
                    .map(|(_, i)| *i)
                    .max();
                (family, last.map_or(0, |i| i + 1))
            });
            next.entry(key).or_default().insert(*target);
            location.insert(*target, vec![key]);
        }
        (next, added, removed)
    }
}

#[async_trait]
impl Backend for UnifiBackend {
    fn name(&self) -> &'static str {
        "unifi"
    }

    async fn init(&mut self) -> Result<(), BackendError> {
        self.reload().await?;
        let missing = self.missing_first_shards();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(|k| self.shard_name(*k)).collect();
        if !self.config.create_groups {
            return Err(BackendError::Config(format!(
                "the {} {} missing on {}. Create {} (empty, or with one placeholder member) or set \
                 `create_groups = true`. {}",
                self.api.object_kind(),
                if names.len() == 1 { "is" } else { "s are" },
                self.api.describe(),
                names.join(" and "),
                manual_step(&self.config.group_name, self.api.object_kind())
            )));
        }
        for key in missing {
            self.create_shard(key, &BTreeSet::new()).await?;
        }
        tracing::warn!(
            "{}",
            manual_step(&self.config.group_name, self.api.object_kind())
        );
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
        let adds: BTreeSet<Target> = batch.adds.into_keys().collect();
        let removes = batch.removes;
        if !self.fresh {
            self.reload().await?;
        }
        let (next, added, removed) = self.plan(&adds, &removes);
        let new_shards: Vec<Key> = next
            .keys()
            .filter(|key| !self.shards.contains_key(key))
            .copied()
            .collect();
        if !new_shards.is_empty() && !self.config.create_groups {
            let names: Vec<String> = new_shards.iter().map(|k| self.shard_name(*k)).collect();
            return Err(BackendError::Rejected(format!(
                "the {}s are full ({} members each, `max_group_size`): create {} and add it to the drop \
                 rule, or set `create_groups = true`",
                self.api.object_kind(),
                self.config.max_group_size,
                names.join(", ")
            )));
        }
        let mut stats = CommitStats {
            added,
            removed,
            writes: 0,
        };
        for (key, members) in next {
            let result = match self.shards.get(&key) {
                Some(group) if group.members == members => continue,
                Some(group) => {
                    let group = group.clone();
                    self.wait_write_slot().await;
                    let result = self.api.replace_members(&group, &members).await;
                    self.last_write = Some(Instant::now());
                    result.map(|()| {
                        if let Some(shard) = self.shards.get_mut(&key) {
                            shard.members = members;
                        }
                    })
                }
                None => self.create_shard(key, &members).await,
            };
            if let Err(err) = result {
                // We do not know whether the device applied it: read it again before the next diff.
                self.fresh = false;
                return Err(err);
            }
            stats.writes += 1;
        }
        tracing::debug!(
            added = stats.added,
            removed = stats.removed,
            writes = stats.writes,
            "UniFi commit done."
        );
        Ok(stats)
    }

    async fn list(&mut self) -> Result<Vec<Target>, BackendError> {
        self.reload().await?;
        let all: BTreeSet<Target> = self
            .shards
            .values()
            .flat_map(|group| group.members.iter().copied())
            .collect();
        Ok(all.into_iter().collect())
    }

    async fn healthcheck(&mut self) -> Result<(), BackendError> {
        self.reload().await?;
        let missing = self.missing_first_shards();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|k| self.shard_name(*k)).collect();
            return Err(BackendError::Config(format!(
                "missing {}: {}. {}",
                self.api.object_kind(),
                names.join(", "),
                manual_step(&self.config.group_name, self.api.object_kind())
            )));
        }
        let sizes: Vec<String> = self
            .shards
            .iter()
            .map(|(key, group)| {
                format!(
                    "{}={}/{}",
                    self.shard_name(*key),
                    group.members.len(),
                    self.config.max_group_size
                )
            })
            .collect();
        if self.step_shown {
            // Every reconcile runs a healthcheck: the long manual step is not repeated each time.
            tracing::debug!(
                target = %self.api.describe(),
                shards = %sizes.join(" "),
                "UniFi reachable and the groups exist."
            );
        } else {
            self.step_shown = true;
            tracing::info!(
                target = %self.api.describe(),
                shards = %sizes.join(" "),
                "UniFi reachable and the groups exist. {}",
                manual_step(&self.config.group_name, self.api.object_kind())
            );
        }
        Ok(())
    }

    fn batch_window(&self) -> Duration {
        self.config.batch_window
    }

    fn notices(&self) -> Vec<String> {
        let kind = self.api.object_kind();
        self.created
            .iter()
            .map(|name| {
                format!(
                    "the agent created the {kind} {name} on {}; its members are NOT blocked until a drop \
                     rule or zone policy uses it as source: add {name} to the rule that holds \
                     {prefix}-v4-0 / {prefix}-v6-0 (or create one: {}), then restart the agent to clear \
                     this notice",
                    self.api.describe(),
                    manual_step(&self.config.group_name, kind),
                    prefix = self.config.group_name,
                )
            })
            .collect()
    }
}
