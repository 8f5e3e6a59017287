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
use queue_message::{NeverBlock, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::backends::{Backend, BackendError, BlockEntry, CommitStats};
use crate::classify::Admitted;
use crate::clock::Clock;
use crate::db::Db;
use crate::decide::{self, Change, Claims, Op, Plan};
use crate::failpoint;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyInputs, Refused};
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

impl Submission {
    /// One submission of the queue messages `admitted`, in order (group `i` is the `i`th message).
    pub fn of_messages(admitted: impl IntoIterator<Item = Admitted>) -> Self {
        let mut submission = Self {
            rate_limited: true,
            ..Self::default()
        };
        for (group, a) in admitted.into_iter().enumerate() {
            submission
                .ops
                .extend(a.ops.into_iter().map(|op| Op { group, ..op }));
            submission.groups.push(a.group);
        }
        submission
    }

    /// The part that came from the groups `keep`, renumbered in that order.
    pub fn subset(&self, keep: &[usize]) -> Self {
        let renumber: std::collections::HashMap<usize, usize> = keep
            .iter()
            .enumerate()
            .map(|(new, &old)| (old, new))
            .collect();
        Self {
            ops: self
                .ops
                .iter()
                .filter_map(|op| {
                    renumber.get(&op.group).map(|&group| Op {
                        group,
                        ..op.clone()
                    })
                })
                .collect(),
            groups: keep.iter().map(|&i| self.groups[i].clone()).collect(),
            rate_limited: self.rate_limited,
        }
    }
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

/// What a reconcile repaired (the control socket's `sync` answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// The engine: backend, state, policy, clock.
#[derive(Debug)]
pub struct Engine {
    backend: tokio::sync::Mutex<Box<dyn Backend>>,
    backend_name: &'static str,
    db: Db,
    clock: Clock,
    policy: RwLock<Arc<Policy>>,
    policy_inputs: Mutex<PolicyInputs>,
    max_new_per_hour: u32,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Woken when the earliest expiry may have moved.
    pub expiry_changed: Notify,
    /// Targets committed to the firewall whose record in the state failed: reconcile must not lift them
    /// (the state is behind, not the firewall); the redelivered message records them.
    unrecorded: Mutex<BTreeSet<Target>>,
    /// Host names of the services the agent needs (queue endpoints, the Entra login host).
    service_hosts: Mutex<Vec<String>>,
    /// Where commit reports go (the return path), once the daemon set it up.
    reports: Mutex<Option<Arc<crate::reports::Sink>>>,
}

/// The simulated outage of [`failpoint::backend_down`], checked before every backend call.
fn outage() -> Result<(), BackendError> {
    if failpoint::backend_down() {
        return Err(BackendError::Unreachable(
            "simulated outage (PORTCULLIS_FAIL_BACKEND_WHILE)".to_owned(),
        ));
    }
    Ok(())
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

/// What the engine is built from.
#[derive(Debug)]
pub struct EngineParts {
    /// A built (not yet initialised) backend.
    pub backend: Box<dyn Backend>,
    /// The open state database.
    pub store: Store,
    /// The configured never-block policy.
    pub never_block: NeverBlock,
    /// `max_new_blocks_per_hour`.
    pub max_new_per_hour: u32,
    /// Where the time comes from.
    pub clock: Clock,
    /// The health state machine shared with `/healthz`.
    pub health: Arc<Health>,
}

impl Engine {
    /// Wraps a built (not yet initialised) backend and an open store.
    pub fn new(parts: EngineParts) -> Self {
        let backend_name = parts.backend.name();
        let inputs = PolicyInputs {
            configured: parts.never_block,
            ..PolicyInputs::default()
        };
        Self {
            backend: tokio::sync::Mutex::new(parts.backend),
            backend_name,
            db: Db::new(parts.store),
            clock: parts.clock,
            policy: RwLock::new(Arc::new(inputs.build())),
            policy_inputs: Mutex::new(inputs),
            max_new_per_hour: parts.max_new_per_hour,
            metrics: Arc::new(Metrics::default()),
            health: parts.health,
            expiry_changed: Notify::new(),
            unrecorded: Mutex::new(BTreeSet::new()),
            service_hosts: Mutex::new(Vec::new()),
            reports: Mutex::new(None),
        }
    }

    /// Sends a report of every later commit to `sink` (the return path).
    pub fn send_reports(&self, sink: Arc<crate::reports::Sink>) {
        *lock(&self.reports) = Some(sink);
    }

    /// The commit report's events for `record`, if reports are on.
    fn report_events(
        &self,
        record: &Record,
    ) -> Option<(
        Arc<crate::reports::Sink>,
        Vec<queue_message::report::CommitEvent>,
    )> {
        let sink = lock(&self.reports).clone()?;
        Some((sink, crate::reports::commit_events(record)))
    }

    /// Reports a message the consumer poisoned or discarded outside any commit (each is its own commit
    /// report); other events are left to the commit that records them.
    pub async fn report_message_verdict(&self, event: &AuditEvent) {
        let verdicts = [EventKind::Poisoned.as_str(), EventKind::Discarded.as_str()];
        if !verdicts.contains(&event.event.as_str()) {
            return;
        }
        let record = Record {
            at: event.at,
            events: vec![event.clone()],
            ..Record::default()
        };
        let report = self.report_events(&record);
        self.enqueue_report(report, event.at).await;
    }

    /// Queues the report of a recorded commit. Deliberately after the record, in its own transaction,
    /// and never failing the commit: enforcement must not wait on (or be undone by) the reports queue.
    async fn enqueue_report(
        &self,
        report: Option<(
            Arc<crate::reports::Sink>,
            Vec<queue_message::report::CommitEvent>,
        )>,
        at: DateTime<Utc>,
    ) {
        if let Some((sink, events)) = report {
            sink.enqueue_commit(&self.db, at, events).await;
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

    /// The state database (every call on a blocking thread).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The clock every part of the agent reads.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The never-block policy in force (configured ranges plus this host's and its services' addresses).
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn update_policy(&self, change: impl FnOnce(&mut PolicyInputs)) {
        let mut inputs = lock(&self.policy_inputs);
        change(&mut inputs);
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(inputs.build());
    }

    /// Replaces the host's own addresses in the policy.
    pub fn set_host_addresses(&self, nets: Vec<ipnet::IpNet>) {
        self.update_policy(|inputs| inputs.host_nets = nets);
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
        let mut resolved_hosts = Vec::new();
        for host in hosts {
            let resolved = tokio::net::lookup_host((host.as_str(), 443))
                .await
                .map(|addrs| {
                    addrs
                        .map(|a| ipnet::IpNet::from(a.ip()))
                        .collect::<Vec<_>>()
                });
            match resolved {
                Ok(mut nets) => {
                    nets.sort_unstable();
                    nets.dedup();
                    resolved_hosts.push((host, nets));
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "Cannot resolve a service the agent needs; keeping its previous addresses protected.");
                }
            }
        }
        self.update_policy(|inputs| inputs.own_service.extend(resolved_hosts));
    }

    /// Initialises the backend (idempotent).
    pub async fn init_backend(&self) -> Result<(), BackendError> {
        let mut backend = self.backend.lock().await;
        match backend.init().await {
            Ok(()) => {
                self.health.backend_reachable();
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
        outage()?;
        self.backend.lock().await.healthcheck().await
    }

    /// What the firewall holds in the backend's own objects.
    pub async fn firewall_list(&self) -> Result<Vec<Target>, BackendError> {
        outage()?;
        self.backend.lock().await.list().await
    }

    /// The backend's batch window.
    pub async fn batch_window(&self) -> std::time::Duration {
        self.backend.lock().await.batch_window()
    }

    /// The earliest block expiry.
    pub async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.db.call(|s| s.next_expiry()).await
    }

    /// How many new blocks still fit this hour, and when more will fit if none do.
    pub async fn budget(&self, now: DateTime<Utc>) -> Result<Budget, StoreError> {
        let max = self.max_new_per_hour;
        self.db.call(move |s| Budget::read(s, max, now)).await
    }

    async fn update_active(&self, now: DateTime<Utc>) {
        if let Ok(n) = self.db.call(move |s| s.active_count(now)).await {
            self.metrics.active_blocks.set(n as f64);
        }
    }

    /// Stages `add` and `remove` and commits them (nothing to commit: no call, no change to health).
    async fn commit(
        &self,
        backend: &mut Box<dyn Backend>,
        add: &[BlockEntry],
        remove: &[Target],
    ) -> Result<(CommitStats, std::time::Duration), BackendError> {
        if add.is_empty() && remove.is_empty() {
            return Ok((CommitStats::default(), std::time::Duration::ZERO));
        }
        for entry in add {
            backend.stage_add(*entry);
        }
        for target in remove {
            backend.stage_remove(*target);
        }
        let started = Instant::now();
        let committed = match outage() {
            // A failed commit drops what was staged, as the backend contract says.
            Err(e) => {
                backend.staged().take();
                Err(e)
            }
            Ok(()) => backend.commit().await,
        };
        match committed {
            Ok(stats) => {
                self.health.set_notices(backend.notices());
                let elapsed = started.elapsed();
                self.metrics.commit_duration.observe(elapsed.as_secs_f64());
                self.metrics
                    .last_commit
                    .set(self.clock.now().timestamp() as f64);
                self.health.commit_succeeded();
                Ok((stats, elapsed))
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                self.health.commit_failed(&e.to_string());
                Err(e)
            }
        }
    }

    /// Plans, commits and records a submission: read the state, plan (pure), commit to the firewall,
    /// record in the state. On a backend error nothing is recorded and nothing is deferred: the caller
    /// keeps the messages queued.
    pub async fn apply(&self, submission: &Submission) -> Result<Applied, ApplyError> {
        let mut backend = self.backend.lock().await;
        let now = self.clock.now();
        let touched: BTreeSet<Target> = submission.ops.iter().map(|op| op.target).collect();
        failpoint::hit_apply(&touched);
        let (current, budget) = {
            let touched = touched.clone();
            let (limited, max) = (submission.rate_limited, self.max_new_per_hour);
            self.db
                .call(move |s| {
                    let budget = if limited {
                        Some(Budget::read(s, max, now)?)
                    } else {
                        None
                    };
                    Ok((s.claims_for(touched.iter())?, budget))
                })
                .await?
        };
        let plan = decide::plan(&submission.ops, &current, now, budget.map(|b| b.left));
        drop(current);
        let mut ledger = Ledger::of(submission, &plan, now, self.max_new_per_hour, budget);
        let (stats, elapsed) = self.commit(&mut backend, &plan.add, &plan.remove).await?;
        failpoint::hit("after-commit");
        let added: Vec<Target> = plan.add.iter().map(|entry| entry.target).collect();
        let claims = plan.claims;
        self.record_commit(ledger.record(claims), &added, &touched)
            .await?;
        self.after_apply(&ledger, budget, submission.rate_limited, now)
            .await?;
        failpoint::hit("after-record");
        let applied = Applied {
            deferred: plan.deferred,
            stats,
            blocked: ledger.blocked,
            extended: ledger.extended,
            unblocked: ledger.unblocked,
        };
        self.report(&applied, !added.is_empty(), elapsed, now).await;
        Ok(applied)
    }

    /// Records a commit; if that fails, remembers its new entries as wanted (reconcile must not lift
    /// them: the state is behind the firewall) until a later record covers them.
    async fn record_commit(
        &self,
        record: Record,
        added: &[Target],
        touched: &BTreeSet<Target>,
    ) -> Result<(), ApplyError> {
        let report = self.report_events(&record);
        let at = record.at;
        let recorded = if failpoint::record_fails() {
            Err(StoreError::Corrupt(
                "simulated failure (PORTCULLIS_FAIL_RECORD_WHILE)".to_owned(),
            ))
        } else {
            self.db.call(move |s| s.record(&record)).await
        };
        if let Err(e) = recorded {
            lock(&self.unrecorded).extend(added.iter().copied());
            tracing::error!(error = %e, "Firewall committed but the state could not record it; the entries stay and the messages stay queued.");
            return Err(e.into());
        }
        {
            let mut unrecorded = lock(&self.unrecorded);
            for target in touched {
                unrecorded.remove(target);
            }
        }
        self.enqueue_report(report, at).await;
        Ok(())
    }

    /// Deferral bookkeeping and the rate-limit state after a recorded apply.
    async fn after_apply(
        &self,
        ledger: &Ledger,
        budget: Option<Budget>,
        rate_limited: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ApplyError> {
        let resume = budget.and_then(|b| b.resume);
        if !ledger.deferred_ids.is_empty() {
            let ids = ledger.deferred_ids.clone();
            self.db.call(move |s| s.note_deferrals(&ids, now)).await?;
            self.metrics
                .messages_deferred
                .inc_by(ledger.deferred_ids.len() as u64);
            tracing::error!(
                messages = ledger.deferred_ids.len(),
                limit = self.max_new_per_hour,
                resume_at = ?resume,
                "Rate limit reached: new blocks are held back and their messages stay queued."
            );
        }
        if rate_limited {
            let after = self.budget(now).await.ok();
            let limited = !ledger.deferred_ids.is_empty() || after.is_some_and(|b| b.left == 0);
            self.metrics
                .rate_limited
                .set(if limited { 1.0 } else { 0.0 });
            self.health.set_rate_limited(if limited {
                resume.or_else(|| after.and_then(|b| b.resume))
            } else {
                None
            });
        }
        Ok(())
    }

    async fn report(
        &self,
        applied: &Applied,
        added: bool,
        elapsed: std::time::Duration,
        now: DateTime<Utc>,
    ) {
        let Applied {
            blocked,
            extended,
            unblocked,
            ..
        } = *applied;
        self.metrics.blocks_applied.inc_by(blocked as u64);
        self.metrics.blocks_extended.inc_by(extended as u64);
        self.metrics.blocks_unblocked.inc_by(unblocked as u64);
        self.update_active(now).await;
        if added {
            self.expiry_changed.notify_one();
        }
        if blocked + extended + unblocked > 0 {
            tracing::info!(
                backend = self.backend_name,
                blocked,
                extended,
                unblocked,
                writes = applied.stats.writes,
                commit_ms = elapsed.as_millis() as u64,
                "Firewall updated."
            );
        }
    }

    /// Removes every block whose expiry has passed, in one commit.
    pub async fn expire(&self) -> Result<usize, ApplyError> {
        let mut backend = self.backend.lock().await;
        let now = self.clock.now();
        let expired = self.db.call(move |s| s.expired_blocks(now)).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        self.commit(&mut backend, &[], &expired).await?;
        let record = Record {
            at: now,
            claims: expired.iter().map(|t| (*t, Claims::new())).collect(),
            target_events: expired
                .iter()
                .map(|t| TargetEvent {
                    kind: EventKind::Expired,
                    at: now,
                    target: *t,
                    claim: None,
                    meta: None,
                    expires_at: None,
                })
                .collect(),
            meta: vec![("last_commit_at", now.to_rfc3339())],
            ..Record::default()
        };
        let report = self.report_events(&record);
        self.db.call(move |s| s.record(&record)).await?;
        self.enqueue_report(report, now).await;
        self.metrics.blocks_expired.inc_by(expired.len() as u64);
        self.update_active(now).await;
        tracing::info!(count = expired.len(), targets = %sample(&expired, 10), "Blocks expired.");
        Ok(expired.len())
    }

    /// Compares the firewall with the state and repairs the difference in one commit: re-adds what the
    /// firewall lost, removes from the agent's own objects what the state no longer wants, and lifts active
    /// blocks the policy now refuses. Recreates the backend's objects first if they are gone.
    pub async fn reconcile(&self) -> Result<Reconciled, ApplyError> {
        let mut backend = self.backend.lock().await;
        if let Err(e) = async {
            outage()?;
            backend.healthcheck().await
        }
        .await
        {
            tracing::warn!(error = %e, backend = self.backend_name, "Firewall objects missing or damaged; recreating them.");
            if let Err(e) = backend.init().await {
                self.health.backend_failed(&e.to_string());
                return Err(e.into());
            }
        }
        self.health.set_notices(backend.notices());
        let now = self.clock.now();
        let desired = self.db.call(move |s| s.active_blocks(now)).await?;
        let actual = match async {
            outage()?;
            backend.list().await
        }
        .await
        {
            Ok(list) => list,
            Err(e) => {
                self.health.backend_failed(&e.to_string());
                return Err(e.into());
            }
        };
        let unrecorded = lock(&self.unrecorded).clone();
        let drift = Drift::between(desired, actual, &self.policy(), &unrecorded);
        drop(unrecorded);
        if drift.missing.is_empty() && drift.extra.is_empty() {
            // Reachable and listing, but no write was made: a failing commit stays reported.
            self.health.backend_reachable();
        } else {
            let removed: Vec<Target> = drift.extra.clone();
            self.commit(&mut backend, &drift.missing, &removed).await?;
        }
        let readded: Vec<Target> = drift.missing.iter().map(|e| e.target).collect();
        if let Some(record) = drift.record(&readded, now) {
            self.db.call(move |s| s.record(&record)).await?;
        }
        let repaired = drift.missing.len() + drift.extra.len();
        self.metrics.reconcile_repairs.inc_by(repaired as u64);
        self.update_active(now).await;
        let active = self.db.call(move |s| s.active_count(now)).await?;
        if repaired > 0 || !drift.refused.is_empty() {
            tracing::warn!(
                readded = drift.missing.len(),
                removed = drift.extra.len(),
                refused = drift.refused.len(),
                backend = self.backend_name,
                "Reconcile repaired drift between the state and the firewall."
            );
        } else {
            tracing::debug!(active, "Reconcile found no drift.");
        }
        Ok(Reconciled {
            readded: drift.missing.len(),
            removed: drift.extra.len(),
            refused: drift.refused.len(),
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

/// The hourly budget of new blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// New blocks that still fit this hour.
    pub left: usize,
    /// When more fit again, if none do now.
    pub resume: Option<DateTime<Utc>>,
}

impl Budget {
    fn read(store: &Store, max_per_hour: u32, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let (used, oldest) = store.new_blocks_since(now - Duration::hours(1))?;
        Ok(Self::of(max_per_hour, used, oldest))
    }

    /// The budget when `used` new blocks were made in the last hour, the oldest at `oldest`.
    pub fn of(max_per_hour: u32, used: u64, oldest: Option<DateTime<Utc>>) -> Self {
        let left =
            usize::try_from(u64::from(max_per_hour).saturating_sub(used)).unwrap_or(usize::MAX);
        let resume = (left == 0)
            .then(|| oldest.map(|o| o + Duration::hours(1)))
            .flatten();
        Self { left, resume }
    }
}

/// The bookkeeping of one planned submission, decided before the commit (pure): audit events, per-target
/// events, seen ids, finished and deferred queue messages, and the counts.
#[derive(Debug, Default)]
struct Ledger {
    events: Vec<AuditEvent>,
    target_events: Vec<TargetEvent>,
    seen: Vec<Seen>,
    delivered: Vec<String>,
    deferred_ids: Vec<String>,
    at: DateTime<Utc>,
    blocked: usize,
    extended: usize,
    unblocked: usize,
}

impl Ledger {
    fn of(
        submission: &Submission,
        plan: &Plan,
        now: DateTime<Utc>,
        max_new_per_hour: u32,
        budget: Option<Budget>,
    ) -> Self {
        let deferred: HashSet<usize> = plan.deferred.iter().copied().collect();
        let mut ledger = Self {
            at: now,
            ..Self::default()
        };
        let resume = budget.and_then(|b| b.resume);
        for (i, group) in submission.groups.iter().enumerate() {
            ledger.events.extend(group.events.iter().cloned());
            if deferred.contains(&i) {
                let mut e = AuditEvent::new(EventKind::Deferred, now).reason(format!(
                    "max_new_blocks_per_hour ({max_new_per_hour}) reached; the message stays queued{}",
                    resume
                        .map(|r| format!(" until about {}", r.to_rfc3339()))
                        .unwrap_or_default()
                ));
                if let Some(q) = &group.queue_message_id {
                    e = e.queue_message(q.clone());
                    ledger.deferred_ids.push(q.clone());
                }
                if let Some(s) = &group.seen {
                    e = e.message(s.message_id.clone());
                }
                ledger.events.push(e);
                continue;
            }
            ledger.seen.extend(group.seen.clone());
            ledger.delivered.extend(group.queue_message_id.clone());
        }
        // Per target, the last operation that touched it explains the outcome in the audit log.
        let mut last_op: BTreeMap<Target, &Op> = BTreeMap::new();
        for op in &submission.ops {
            if !(deferred.contains(&op.group) && matches!(op.intent, decide::Intent::Block { .. }))
            {
                last_op.insert(op.target, op);
            }
        }
        ledger.target_events.reserve(plan.outcomes.len());
        for outcome in &plan.outcomes {
            let kind = match outcome.change {
                Change::Blocked => {
                    ledger.blocked += 1;
                    EventKind::Blocked
                }
                Change::Extended => {
                    ledger.extended += 1;
                    EventKind::Extended
                }
                Change::Unchanged => EventKind::Claimed,
                Change::Unblocked => {
                    ledger.unblocked += 1;
                    EventKind::Unblocked
                }
            };
            let op = last_op.get(&outcome.target);
            ledger.target_events.push(TargetEvent {
                kind,
                at: now,
                target: outcome.target,
                claim: op.map(|op| Arc::clone(&op.key)),
                meta: op.map(|op| Arc::clone(&op.meta)),
                expires_at: outcome.expires_at,
            });
        }
        ledger
    }

    /// The record of the commit: this bookkeeping with the new claims (moves the bulk out, keeps counts
    /// and deferred ids).
    fn record(&mut self, claims: BTreeMap<Target, Claims>) -> Record {
        Record {
            at: self.at,
            claims,
            events: std::mem::take(&mut self.events),
            target_events: std::mem::take(&mut self.target_events),
            seen: std::mem::take(&mut self.seen),
            delivered: std::mem::take(&mut self.delivered),
            meta: vec![("last_commit_at", self.at.to_rfc3339())],
        }
    }
}

/// What reconcile must repair (pure: from the desired blocks, the firewall's list and the policy).
#[derive(Debug, Default)]
struct Drift {
    /// Blocks the firewall lost.
    missing: Vec<BlockEntry>,
    /// Entries in the agent's objects the state does not want.
    extra: Vec<Target>,
    /// Active blocks the policy now refuses, with why.
    refused: Vec<(Target, Refused)>,
}

impl Drift {
    fn between(
        mut desired: Vec<(Target, DateTime<Utc>)>,
        mut actual: Vec<Target>,
        policy: &Policy,
        unrecorded: &BTreeSet<Target>,
    ) -> Self {
        let mut drift = Self::default();
        desired.retain(|(target, _)| match policy.screen(target) {
            Ok(()) => true,
            Err(why) => {
                drift.refused.push((*target, why));
                false
            }
        });
        desired.sort_unstable_by_key(|(t, _)| *t);
        actual.sort_unstable();
        actual.dedup();
        for (target, expires_at) in &desired {
            if actual.binary_search(target).is_err() {
                drift.missing.push(BlockEntry {
                    target: *target,
                    expires_at: *expires_at,
                });
            }
        }
        for target in &actual {
            if unrecorded.contains(target) {
                // Committed, but its record failed: the state is behind, the block is wanted.
                tracing::warn!(%target, "Keeping a firewall entry whose record in the state failed.");
                continue;
            }
            if desired.binary_search_by_key(target, |(t, _)| *t).is_err() {
                drift.extra.push(*target);
            }
        }
        drift
    }

    /// The audit record of a repair (`None` when there is nothing to record).
    fn record(&self, readded: &[Target], now: DateTime<Utc>) -> Option<Record> {
        let mut events = Vec::new();
        let mut cleared = BTreeMap::new();
        for (target, why) in &self.refused {
            cleared.insert(*target, Claims::new());
            events.push(
                AuditEvent::new(EventKind::Refused, now)
                    .target(target)
                    .reason(format!("lifted: the policy now refuses it ({})", why.text)),
            );
        }
        if !self.missing.is_empty() || !self.extra.is_empty() {
            events.push(AuditEvent::new(EventKind::Reconciled, now).detail(format!(
                "re-added {} ({}), removed {} ({})",
                self.missing.len(),
                sample(readded, 10),
                self.extra.len(),
                sample(&self.extra, 10)
            )));
        }
        (!events.is_empty()).then(|| Record {
            at: now,
            claims: cleared,
            events,
            ..Record::default()
        })
    }
}
