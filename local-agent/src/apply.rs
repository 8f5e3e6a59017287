//! The single writer: plans a batch of claim operations against the state, commits it to the firewall in
//! one transaction, then records it in the state database. Also expiry and reconcile, which change the
//! firewall the same way.
//!
//! Every firewall change in the agent goes through [`Engine`], which holds the backend behind one async
//! mutex, so the consumer, the expiry task, reconcile and manual commands never interleave. The order is
//! always *firewall first, then state*: a crash between the two leaves the state behind the firewall, the
//! queue messages are not yet deleted, and their redelivery re-applies the same idempotent change.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use queue_message::{NeverBlock, Refusal, Target};
use tokio::sync::Notify;

use crate::backends::{Backend, BackendError, CommitStats};
use crate::decide::{self, Change, Claims, Op};
use crate::failpoint;
use crate::metrics::{Health, Metrics};
use crate::store::{AuditEvent, EventKind, Record, Seen, Store, StoreError, TargetEvent};

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The firewall refused or could not be reached; nothing was recorded.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The state database failed (after a successful firewall commit, the next delivery repairs it).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One message (or manual command) within a submission.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// The queue message it came from.
    pub queue_message_id: Option<String>,
    /// Remember its id as applied once recorded.
    pub seen: Option<Seen>,
    /// Events to record with it (received, refused).
    pub events: Vec<AuditEvent>,
}

/// A batch to apply: claim operations tagged with the index of their group.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// Operations, in order.
    pub ops: Vec<Op>,
    /// Messages or commands the operations came from.
    pub groups: Vec<Group>,
    /// Apply the hourly limit on new blocks (queue messages yes, a person's command no).
    pub rate_limited: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Groups whose new blocks were held back by the rate limit; their messages stay queued.
    pub deferred: Vec<usize>,
    /// The backend's report.
    pub stats: CommitStats,
    /// Targets newly blocked.
    pub blocked: usize,
    /// Blocks extended.
    pub extended: usize,
    /// Blocks lifted.
    pub unblocked: usize,
}

/// What a reconcile repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Blocks the firewall had lost and got back.
    pub readded: usize,
    /// Entries in the agent's own objects the state no longer wants.
    pub removed: usize,
    /// Active blocks the policy now refuses (allowlist changed, new host address), lifted.
    pub refused: usize,
    /// Blocks in force afterwards.
    pub active: u64,
}

/// The engine: backend, state, policy.
#[derive(Debug)]
pub struct Engine {
    backend: tokio::sync::Mutex<Box<dyn Backend>>,
    backend_name: &'static str,
    store: Mutex<Store>,
    policy: RwLock<NeverBlock>,
    base_policy: NeverBlock,
    max_new_per_hour: u32,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Woken when the earliest expiry may have moved.
    pub expiry_changed: Notify,
    /// Targets committed to the firewall whose record in the state failed: reconcile must not lift them
    /// (the state is behind, not the firewall); the redelivered message records them.
    unrecorded: Mutex<BTreeSet<Target>>,
    /// This host's own addresses (never blocked).
    host_nets: Mutex<Vec<ipnet::IpNet>>,
    /// Host names of the services the agent needs (queue endpoints, the Entra login host).
    service_hosts: Mutex<Vec<String>>,
    /// Their resolved addresses, per host name (never blocked: blocking them locks the agent out).
    own_service: Mutex<BTreeMap<String, Vec<ipnet::IpNet>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sample(targets: &[Target], n: usize) -> String {
    let mut text: Vec<String> = targets.iter().take(n).map(ToString::to_string).collect();
    if targets.len() > n {
        text.push(format!("… {} more", targets.len() - n));
    }
    text.join(", ")
}

impl Engine {
    /// Wraps a built (not yet initialised) backend and an open store.
    pub fn new(
        backend: Box<dyn Backend>,
        store: Store,
        policy: NeverBlock,
        max_new_per_hour: u32,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        let backend_name = backend.name();
        Self {
            backend: tokio::sync::Mutex::new(backend),
            backend_name,
            store: Mutex::new(store),
            policy: RwLock::new(policy.clone()),
            base_policy: policy,
            max_new_per_hour,
            metrics,
            health,
            expiry_changed: Notify::new(),
            unrecorded: Mutex::new(BTreeSet::new()),
            host_nets: Mutex::new(Vec::new()),
            service_hosts: Mutex::new(Vec::new()),
            own_service: Mutex::new(BTreeMap::new()),
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The health.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The state store, for reads (held briefly; never across an await).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Checks a target against the never-block policy, host addresses included.
    pub fn check(&self, target: &Target) -> Result<(), Refusal> {
        decide::screen(&self.policy(), target)
    }

    /// The never-block policy in force (configured ranges plus this host's addresses).
    pub fn policy(&self) -> NeverBlock {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the host's own addresses in the policy (the configured policy plus these and the
    /// services' addresses).
    pub fn set_host_addresses(&self, nets: Vec<ipnet::IpNet>) {
        *lock(&self.host_nets) = nets;
        self.rebuild_policy();
    }

    fn rebuild_policy(&self) {
        let mut policy = self.base_policy.clone();
        policy.extend_allowlist(lock(&self.host_nets).clone());
        let own: Vec<ipnet::IpNet> = lock(&self.own_service)
            .values()
            .flatten()
            .copied()
            .collect();
        policy.extend_allowlist(own);
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// Names the hosts of the services the agent depends on (queue endpoints, Entra login), whose
    /// addresses [`refresh_own_service`](Self::refresh_own_service) keeps on the never-block list.
    pub fn set_service_hosts(&self, hosts: Vec<String>) {
        *lock(&self.service_hosts) = hosts;
    }

    /// Resolves the service hosts again (with the host addresses, at every reconcile). A host that does
    /// not resolve keeps its previous addresses.
    pub async fn refresh_own_service(&self) {
        let hosts = lock(&self.service_hosts).clone();
        if hosts.is_empty() {
            return;
        }
        for host in hosts {
            let resolved = tokio::net::lookup_host((host.as_str(), 443)).await;
            match resolved {
                Ok(addrs) => {
                    let mut nets: Vec<ipnet::IpNet> =
                        addrs.map(|a| ipnet::IpNet::from(a.ip())).collect();
                    nets.sort_unstable();
                    nets.dedup();
                    lock(&self.own_service).insert(host.clone(), nets);
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "Cannot resolve a service the agent needs; keeping its previous addresses protected.");
                }
            }
        }
        self.rebuild_policy();
    }

    /// The metric code and audit text of a refusal: `own-service` when the target overlaps an address of
    /// a service the agent needs (blocking it would cut the agent off), else the policy's own.
    pub fn refusal(&self, why: &Refusal) -> (&'static str, String) {
        if let Refusal::Allowlisted(net) = why {
            let own = lock(&self.own_service);
            if let Some((host, _)) = own.iter().find(|(_, nets)| nets.contains(net)) {
                return (
                    "own-service",
                    format!("own-service: {net} is an address of {host}, which the agent needs"),
                );
            }
        }
        (why.code(), why.to_string())
    }

    /// Initialises the backend (idempotent).
    pub async fn init_backend(&self) -> Result<(), BackendError> {
        let mut backend = self.backend.lock().await;
        match backend.init().await {
            Ok(()) => {
                self.health.backend_ok(false);
                self.health.set_notices(backend.notices());
                Ok(())
            }
            Err(e) => {
                self.health.backend_failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// Checks the backend without changing anything.
    pub async fn healthcheck(&self) -> Result<(), BackendError> {
        self.backend.lock().await.healthcheck().await
    }

    /// What the firewall holds in the backend's own objects.
    pub async fn firewall_list(&self) -> Result<Vec<Target>, BackendError> {
        self.backend.lock().await.list().await
    }

    /// The backend's batch window.
    pub async fn batch_window(&self) -> std::time::Duration {
        self.backend.lock().await.batch_window()
    }

    /// The earliest block expiry.
    pub fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store().next_expiry()
    }

    /// How many new blocks still fit this hour, and when more will fit if none do.
    pub fn budget(&self, now: DateTime<Utc>) -> Result<(usize, Option<DateTime<Utc>>), StoreError> {
        let (used, oldest) = self.store().new_blocks_since(now - Duration::hours(1))?;
        let max = u64::from(self.max_new_per_hour);
        let left = usize::try_from(max.saturating_sub(used)).unwrap_or(usize::MAX);
        let resume = (left == 0)
            .then(|| oldest.map(|o| o + Duration::hours(1)))
            .flatten();
        Ok((left, resume))
    }

    fn update_active(&self, now: DateTime<Utc>) {
        if let Ok(n) = self.store().active_count(now) {
            self.metrics.active_blocks.set(n as f64);
        }
    }

    async fn commit(
        &self,
        backend: &mut Box<dyn Backend>,
    ) -> Result<(CommitStats, std::time::Duration), BackendError> {
        let started = Instant::now();
        match backend.commit().await {
            Ok(stats) => {
                self.health.set_notices(backend.notices());
                let elapsed = started.elapsed();
                self.metrics.commit_duration.observe(elapsed);
                self.metrics.last_commit.set(Utc::now().timestamp() as f64);
                self.health.backend_ok(true);
                Ok((stats, elapsed))
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                self.health.commit_failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// Plans, commits and records a submission. On a backend error nothing is recorded and nothing is
    /// deferred: the caller keeps the messages queued.
    pub async fn apply(&self, submission: &Submission) -> Result<Applied, ApplyError> {
        let mut backend = self.backend.lock().await;
        let now = Utc::now();
        let touched: BTreeSet<Target> = submission.ops.iter().map(|op| op.target).collect();
        failpoint::hit_apply(&touched);
        let current = self.store().claims_for(touched.iter())?;
        let (budget, resume) = if submission.rate_limited {
            let (left, resume) = self.budget(now)?;
            (Some(left), resume)
        } else {
            (None, None)
        };
        let plan = decide::plan(&submission.ops, &current, now, budget);
        for entry in &plan.add {
            backend.stage_add(*entry);
        }
        for target in &plan.remove {
            backend.stage_remove(*target);
        }
        let (stats, elapsed) = if plan.add.is_empty() && plan.remove.is_empty() {
            (CommitStats::default(), std::time::Duration::ZERO)
        } else {
            self.commit(&mut backend).await?
        };
        failpoint::hit("after-commit");

        let deferred: HashSet<usize> = plan.deferred.iter().copied().collect();
        // Per target, the last operation that touched it explains the outcome in the audit log.
        let mut last_op: BTreeMap<Target, &Op> = BTreeMap::new();
        for op in &submission.ops {
            if !(deferred.contains(&op.group) && matches!(op.intent, decide::Intent::Block { .. }))
            {
                last_op.insert(op.target, op);
            }
        }
        let mut events = Vec::new();
        let mut seen = Vec::new();
        let mut delivered = Vec::new();
        let mut deferred_ids = Vec::new();
        for (i, group) in submission.groups.iter().enumerate() {
            events.extend(group.events.iter().cloned());
            if deferred.contains(&i) {
                let mut e = AuditEvent::new(EventKind::Deferred, now).reason(format!(
                    "max_new_blocks_per_hour ({}) reached; the message stays queued{}",
                    self.max_new_per_hour,
                    resume
                        .map(|r| format!(" until about {}", r.to_rfc3339()))
                        .unwrap_or_default()
                ));
                if let Some(q) = &group.queue_message_id {
                    e = e.queue_message(q.clone());
                    deferred_ids.push(q.clone());
                }
                if let Some(s) = &group.seen {
                    e = e.message(s.message_id.clone());
                }
                events.push(e);
                continue;
            }
            seen.extend(group.seen.clone());
            delivered.extend(group.queue_message_id.clone());
        }
        let (mut blocked, mut extended, mut unblocked) = (0, 0, 0);
        let mut target_events = Vec::with_capacity(plan.outcomes.len());
        for outcome in &plan.outcomes {
            let kind = match outcome.change {
                Change::Blocked => {
                    blocked += 1;
                    EventKind::Blocked
                }
                Change::Extended => {
                    extended += 1;
                    EventKind::Extended
                }
                Change::Unchanged => EventKind::Claimed,
                Change::Unblocked => {
                    unblocked += 1;
                    EventKind::Unblocked
                }
            };
            let op = last_op.get(&outcome.target);
            target_events.push(TargetEvent {
                kind,
                at: now,
                target: outcome.target,
                claim: op.map(|op| Arc::clone(&op.key)),
                meta: op.map(|op| Arc::clone(&op.meta)),
                expires_at: outcome.expires_at,
            });
        }
        drop(last_op);
        let recorded = if failpoint::record_fails() {
            Err(StoreError::Corrupt(
                "simulated failure (PORTCULLIS_FAIL_RECORD_WHILE)".to_owned(),
            ))
        } else {
            self.store().record(&Record {
                claims: Some(&plan.claims),
                events,
                target_events,
                seen,
                delivered,
                meta: vec![("last_commit_at", now.to_rfc3339())],
            })
        };
        if let Err(e) = recorded {
            // The firewall holds what the state does not know yet; keep reconcile's hands off it.
            lock(&self.unrecorded).extend(plan.add.iter().map(|entry| entry.target));
            tracing::error!(error = %e, "Firewall committed but the state could not record it; the entries stay and the messages stay queued.");
            return Err(e.into());
        }
        {
            let mut unrecorded = lock(&self.unrecorded);
            for target in &touched {
                unrecorded.remove(target);
            }
        }
        if !deferred_ids.is_empty() {
            self.store().note_deferrals(&deferred_ids, now)?;
            self.metrics
                .messages_deferred
                .add(deferred_ids.len() as u64);
            tracing::error!(
                messages = deferred_ids.len(),
                limit = self.max_new_per_hour,
                resume_at = ?resume,
                "Rate limit reached: new blocks are held back and their messages stay queued."
            );
        }
        failpoint::hit("after-record");
        if submission.rate_limited {
            let rate_limited = !deferred_ids.is_empty()
                || self.budget(now).map(|(left, _)| left == 0).unwrap_or(false);
            self.metrics
                .rate_limited
                .set(if rate_limited { 1.0 } else { 0.0 });
            self.health.set_rate_limited(if rate_limited {
                resume.or_else(|| self.budget(now).ok().and_then(|(_, r)| r))
            } else {
                None
            });
        }
        self.metrics.blocks_applied.add(blocked as u64);
        self.metrics.blocks_extended.add(extended as u64);
        self.metrics.blocks_unblocked.add(unblocked as u64);
        self.update_active(now);
        if !plan.add.is_empty() {
            self.expiry_changed.notify_one();
        }
        if blocked + extended + unblocked > 0 {
            tracing::info!(
                backend = self.backend_name,
                blocked,
                extended,
                unblocked,
                writes = stats.writes,
                commit_ms = elapsed.as_millis() as u64,
                "Firewall updated."
            );
        }
        Ok(Applied {
            deferred: plan.deferred,
            stats,
            blocked,
            extended,
            unblocked,
        })
    }

    /// Removes every block whose expiry has passed, in one commit.
    pub async fn expire(&self) -> Result<usize, ApplyError> {
        let mut backend = self.backend.lock().await;
        let now = Utc::now();
        let expired = self.store().expired_blocks(now)?;
        if expired.is_empty() {
            return Ok(0);
        }
        for target in &expired {
            backend.stage_remove(*target);
        }
        self.commit(&mut backend).await?;
        let cleared: BTreeMap<Target, Claims> =
            expired.iter().map(|t| (*t, Claims::new())).collect();
        let target_events = expired
            .iter()
            .map(|t| TargetEvent {
                kind: EventKind::Expired,
                at: now,
                target: *t,
                claim: None,
                meta: None,
                expires_at: None,
            })
            .collect();
        self.store().record(&Record {
            claims: Some(&cleared),
            target_events,
            meta: vec![("last_commit_at", now.to_rfc3339())],
            ..Record::default()
        })?;
        self.metrics.blocks_expired.add(expired.len() as u64);
        self.update_active(now);
        tracing::info!(count = expired.len(), targets = %sample(&expired, 10), "Blocks expired.");
        Ok(expired.len())
    }

    /// Compares the firewall with the state and repairs the difference in one commit: re-adds what the
    /// firewall lost, removes from the agent's own objects what the state no longer wants, and lifts active
    /// blocks the policy now refuses. Recreates the backend's objects first if they are gone.
    pub async fn reconcile(&self) -> Result<Reconciled, ApplyError> {
        let mut backend = self.backend.lock().await;
        if let Err(e) = backend.healthcheck().await {
            tracing::warn!(error = %e, backend = self.backend_name, "Firewall objects missing or damaged; recreating them.");
            if let Err(e) = backend.init().await {
                self.health.backend_failed(&e.to_string());
                return Err(e.into());
            }
        }
        self.health.set_notices(backend.notices());
        let now = Utc::now();
        let mut desired = self.store().active_blocks(now)?;
        let mut refused = Vec::new();
        desired.retain(|(target, _)| match self.check(target) {
            Ok(()) => true,
            Err(why) => {
                refused.push((*target, why));
                false
            }
        });
        desired.sort_unstable_by_key(|(t, _)| *t);
        let mut actual = match backend.list().await {
            Ok(list) => list,
            Err(e) => {
                self.health.backend_failed(&e.to_string());
                return Err(e.into());
            }
        };
        actual.sort_unstable();
        actual.dedup();
        let mut missing = Vec::new();
        for (target, expires_at) in &desired {
            if actual.binary_search(target).is_err() {
                backend.stage_add(crate::backends::BlockEntry {
                    target: *target,
                    expires_at: *expires_at,
                });
                missing.push(*target);
            }
        }
        let mut extra = Vec::new();
        let unrecorded = lock(&self.unrecorded).clone();
        for target in &actual {
            if unrecorded.contains(target) {
                // Committed, but its record failed: the state is behind, the block is wanted.
                tracing::warn!(%target, "Keeping a firewall entry whose record in the state failed.");
                continue;
            }
            if desired.binary_search_by_key(target, |(t, _)| *t).is_err() {
                backend.stage_remove(*target);
                extra.push(*target);
            }
        }
        drop(actual);
        drop(desired);
        if !missing.is_empty() || !extra.is_empty() {
            self.commit(&mut backend).await?;
        } else {
            // Reachable and listing, but no write was made: a failing commit stays reported.
            self.health.backend_ok(false);
        }
        let mut events = Vec::new();
        let mut cleared = BTreeMap::new();
        for (target, why) in &refused {
            cleared.insert(*target, Claims::new());
            events.push(
                AuditEvent::new(EventKind::Refused, now)
                    .target(target)
                    .reason(format!(
                        "lifted: the policy now refuses it ({})",
                        self.refusal(why).1
                    )),
            );
        }
        if !missing.is_empty() || !extra.is_empty() {
            events.push(AuditEvent::new(EventKind::Reconciled, now).detail(format!(
                "re-added {} ({}), removed {} ({})",
                missing.len(),
                sample(&missing, 10),
                extra.len(),
                sample(&extra, 10)
            )));
        }
        if !events.is_empty() {
            self.store().record(&Record {
                claims: Some(&cleared),
                events,
                ..Record::default()
            })?;
        }
        let repaired = missing.len() + extra.len();
        self.metrics.reconcile_repairs.add(repaired as u64);
        self.update_active(now);
        let active = self.store().active_count(now)?;
        if repaired > 0 || !refused.is_empty() {
            tracing::warn!(
                readded = missing.len(),
                removed = extra.len(),
                refused = refused.len(),
                backend = self.backend_name,
                "Reconcile repaired drift between the state and the firewall."
            );
        } else {
            tracing::debug!(active, "Reconcile found no drift.");
        }
        Ok(Reconciled {
            readded: missing.len(),
            removed: extra.len(),
            refused: refused.len(),
            active,
        })
    }

    /// Calls the backend's shutdown once; blocks stay in place.
    pub async fn shutdown(&self) {
        if let Err(e) = self.backend.lock().await.shutdown().await {
            tracing::warn!(error = %e, "Backend shutdown reported an error.");
        }
    }
}
