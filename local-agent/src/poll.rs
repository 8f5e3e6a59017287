//! The consume loop: receive, verify, apply, delete (at-least-once, idempotent).
//!
//! - Receive up to 32 messages with a visibility timeout long enough for the whole batch (window plus
//!   commit), so the agent never needs to update messages (the Storage Queue Data Message Processor role
//!   allows receive and delete only). Poll again at once while messages flow; back off to
//!   `max_poll_interval` when idle.
//! - A backend with a batch window (controller-managed appliances) gets every message that arrives within
//!   the window after the first one, up to `max_batch_messages`, in one commit.
//! - Each message is verified with the shared crate. Forged, unsigned, unknown-version, malformed and
//!   replayed messages (same message id, different queue delivery) go to `<queue>-poison` with the reason
//!   and are audited, never applied. A redelivery of a message already applied (the agent crashed before
//!   deleting it) and a message whose block has already expired are audited and deleted.
//! - The never-block policy is applied again here; refused targets are audited and never reach the
//!   firewall.
//! - The batch is applied by [`Engine::apply`] (one firewall commit, then the state), and only then are
//!   the messages deleted. Only a message the firewall rejects *for its own content* counts towards the
//!   poison queue: a rejected batch is retried one message at a time, and a rejection counts only if the
//!   firewall passes its healthcheck right after. An unreachable or unhealthy firewall, or a failing state
//!   database, is an outage: the consumer stops receiving ([`Stall`]) and probes on a backoff up to
//!   5 minutes until it recovers, and the deliveries lost to it are excused (counted like rate-limit
//!   deferrals, not failures). A message past `max_dequeue_count` deliveries is still tried, on its own,
//!   and poisoned only if that attempt is rejected too, or if the agent stopped during it (so only the
//!   message that crash-loops the agent is poisoned, not its batch neighbours).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_message::{Queue, Received, SigningKey};
use tokio_util::sync::CancellationToken;

use crate::apply::{ApplyError, Engine, Submission};
use crate::backends::BackendError;
use crate::classify::{self, Admitted, Discard, Poison, PoisonReason, Rules, Verdict};
use crate::clock::Clock;
use crate::config::QueueSettings;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::{AuditEvent, EventKind};

/// Messages received per call (the service maximum).
const RECEIVE_MAX: u8 = 32;
/// First idle sleep; doubles up to `max_poll_interval`.
const IDLE_START: Duration = Duration::from_millis(100);
/// Longest sleep after errors.
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest wait between probes of a failing firewall or state database.
const STALL_PROBE_MAX: Duration = Duration::from_secs(300);

/// Why the consumer stopped receiving until something recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The firewall is unreachable or fails its healthcheck.
    Backend,
    /// The state database fails.
    Store,
}

/// The text put on the poison queue: a few header lines saying why, a blank line, then the original
/// message unchanged (so it can be inspected or re-sent).
pub fn poison_text(
    queue: &str,
    received: &Received,
    reason: PoisonReason,
    detail: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    format!(
        "portcullis-poison/1\nreason: {}\ndetail: {}\nqueue: {queue}\nqueue-message-id: {}\ndequeue-count: {}\npoisoned-at: {}\n\n{}",
        reason.code(),
        detail.replace(['\n', '\r'], " "),
        received.id,
        received.dequeue_count,
        now.to_rfc3339(),
        received.text
    )
}

/// How long a poisoned message stays on the poison queue (a year; someone should look before).
const POISON_TTL_SECS: i64 = 365 * 86_400;

/// The queue consumer.
#[derive(Debug)]
pub struct Consumer {
    engine: Arc<Engine>,
    queue: Queue,
    poison: Queue,
    keys: Arc<[SigningKey]>,
    settings: QueueSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    clock: Clock,
}

/// What one pass over a batch did (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Messages received.
    pub received: usize,
    /// Messages applied and deleted.
    pub applied: usize,
    /// Messages sent to the poison queue.
    pub poisoned: usize,
    /// Messages deleted without effect.
    pub discarded: usize,
    /// Messages left queued (failure or rate limit).
    pub kept: usize,
    /// The firewall commit failed.
    pub failed: bool,
    /// The firewall or the state database is failing: receive nothing until it recovers.
    pub stalled: Option<Stall>,
}

impl Consumer {
    /// A consumer of `queue`, poisoning into `poison`.
    pub fn new(engine: Arc<Engine>, queue: Queue, poison: Queue, settings: QueueSettings) -> Self {
        let metrics = Arc::clone(engine.metrics());
        let health = Arc::clone(engine.health());
        Self {
            keys: Arc::from(settings.keys.clone()),
            clock: engine.clock(),
            engine,
            queue,
            poison,
            settings,
            metrics,
            health,
        }
    }

    /// The main queue handle (transaction counts for benchmarks).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn count_transactions(&self) {
        self.metrics
            .set_queue_transactions(self.queue.transactions() + self.poison.transactions());
    }

    fn visibility(&self, window: Duration) -> u32 {
        // The configured timeout covers the commit and the deletes; a batch window comes on top.
        let mut vis = self.settings.visibility_timeout.get() + window;
        if let Some(until) = self.health.snapshot().rate_limited_until {
            // Deferred messages come back when the budget has room again (at most an hour).
            let wait = (until - self.clock.now()).to_std().unwrap_or_default();
            vis = vis.max(wait.min(Duration::from_secs(3600)));
        }
        u32::try_from(vis.as_secs().max(1)).unwrap_or(u32::MAX)
    }

    async fn receive(&self, max: u8, vis: u32) -> Result<Vec<Received>, queue_message::QueueError> {
        let started = Instant::now();
        let result = self.queue.receive(max, vis).await;
        self.metrics
            .poll_duration
            .observe(started.elapsed().as_secs_f64());
        self.count_transactions();
        self.metrics
            .last_poll
            .set(self.clock.now().timestamp() as f64);
        match &result {
            Ok(_) => self.health.queue_ok(),
            Err(e) => {
                self.metrics.queue_errors.inc();
                self.health.queue_failed(&e.to_string());
            }
        }
        result
    }

    /// Runs until `shutdown` is cancelled; the batch in progress is finished first.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut idle = IDLE_START;
        let mut error_backoff = Duration::from_secs(1);
        let mut commit_backoff = Duration::from_secs(1);
        let mut stall_backoff = Duration::from_secs(1);
        let max_idle = self.settings.max_poll_interval.get();
        while !shutdown.is_cancelled() {
            let window = self.engine.batch_window().await;
            let vis = self.visibility(window);
            let mut batch = match self.receive(RECEIVE_MAX, vis).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = error_backoff.as_secs(), "Queue receive failed.");
                    sleep_or_cancel(error_backoff, &shutdown).await;
                    error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                    continue;
                }
            };
            error_backoff = Duration::from_secs(1);
            if batch.is_empty() {
                sleep_or_cancel(idle.min(max_idle), &shutdown).await;
                idle = (idle * 2).min(max_idle);
                continue;
            }
            idle = IDLE_START;
            if !window.is_zero() {
                tracing::debug!(
                    messages = batch.len(),
                    window_ms = window.as_millis() as u64,
                    "Batch window open."
                );
                self.fill_window(&mut batch, window, vis, &shutdown).await;
            }
            let full = batch.len() >= usize::from(RECEIVE_MAX);
            let pass = self.process(batch).await;
            self.count_transactions();
            if let Some(stall) = pass.stalled {
                self.wait_for_recovery(stall, &mut stall_backoff, &shutdown)
                    .await;
                continue;
            }
            stall_backoff = Duration::from_secs(1);
            if pass.failed {
                tracing::warn!(
                    retry_in_s = commit_backoff.as_secs(),
                    kept = pass.kept,
                    "Batch not applied; its messages stay queued for redelivery."
                );
                sleep_or_cancel(commit_backoff, &shutdown).await;
                commit_backoff = (commit_backoff * 2).min(ERROR_BACKOFF_MAX);
                continue;
            }
            commit_backoff = Duration::from_secs(1);
            if !full {
                // A short batch means the queue is (nearly) drained: poll again after a short breath.
                sleep_or_cancel(Duration::from_millis(10), &shutdown).await;
            }
        }
    }

    /// Receives nothing until the firewall (healthcheck) or the state database (a write) works again, so an
    /// outage does not use up the deliveries of messages that arrive during it.
    async fn wait_for_recovery(
        &self,
        stall: Stall,
        backoff: &mut Duration,
        shutdown: &CancellationToken,
    ) {
        loop {
            tracing::warn!(
                failing = ?stall,
                retry_in_s = backoff.as_secs(),
                "Not receiving messages until the failing part recovers; they stay queued."
            );
            sleep_or_cancel(*backoff, shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            *backoff = (*backoff * 2).min(STALL_PROBE_MAX);
            self.metrics.recovery_probes.inc();
            let probe = match stall {
                Stall::Backend => self.engine.healthcheck().await.map_err(|e| e.to_string()),
                Stall::Store => {
                    let now = self.clock.now().to_rfc3339();
                    self.engine
                        .db()
                        .call(move |s| s.set_meta("last_store_probe_at", now))
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match probe {
                Ok(()) => {
                    if stall == Stall::Backend {
                        // Reachable again; a failing commit stays reported until a commit succeeds.
                        self.health.backend_reachable();
                    }
                    tracing::info!(recovered = ?stall, "Recovered; receiving messages again.");
                    return;
                }
                Err(e) => {
                    if stall == Stall::Backend {
                        self.health.backend_failed(&e);
                    }
                    tracing::debug!(error = %e, "Still failing.");
                }
            }
        }
    }

    async fn fill_window(
        &self,
        batch: &mut Vec<Received>,
        window: Duration,
        vis: u32,
        shutdown: &CancellationToken,
    ) {
        let deadline = Instant::now() + window;
        let cap = self.settings.max_batch_messages;
        let pause = self
            .settings
            .max_poll_interval
            .get()
            .min(Duration::from_millis(500));
        while batch.len() < cap && Instant::now() < deadline && !shutdown.is_cancelled() {
            let want = u8::try_from((cap - batch.len()).min(usize::from(RECEIVE_MAX)))
                .unwrap_or(RECEIVE_MAX);
            match self.receive(want, vis).await {
                Ok(more) if !more.is_empty() => batch.extend(more),
                Ok(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    sleep_or_cancel(pause.min(left), shutdown).await;
                }
                Err(_) => break,
            }
        }
        tracing::debug!(
            messages = batch.len(),
            window_ms = window.as_millis() as u64,
            "Batch window closed."
        );
    }

    /// Classifies the batch against the state, on the state database's thread.
    async fn classify(&self, batch: &[Received]) -> Vec<Verdict> {
        let rules = Rules {
            keys: Arc::clone(&self.keys),
            policy: self.engine.policy(),
            max_dequeue_count: self.settings.max_dequeue_count,
            now: self.clock.now(),
        };
        let n = batch.len();
        let owned = batch.to_vec();
        let verdicts = self
            .engine
            .db()
            .call(move |store| Ok(classify::classify(&owned, &rules, store)))
            .await;
        verdicts.unwrap_or_else(|e| vec![Verdict::Keep(e.to_string()); n])
    }

    /// Verifies, applies and deletes one batch of received messages: classify every message (pure, see
    /// [`classify`]), perform the poison, discard and keep verdicts, then apply the admitted messages in
    /// one commit and the suspects one at a time after them.
    pub async fn process(&self, batch: Vec<Received>) -> Pass {
        let mut pass = Pass {
            received: batch.len(),
            ..Pass::default()
        };
        self.metrics.messages_received.inc_by(batch.len() as u64);
        let verdicts = self.classify(&batch).await;
        let mut admitted: Vec<(Received, Admitted)> = Vec::new();
        for (r, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Apply(a) => {
                    self.count_refusals(&a);
                    admitted.push((r, *a));
                }
                Verdict::Poison(p) => self.poison(&r, &p, &mut pass).await,
                Verdict::Discard(d) => self.discard(&r, d, &mut pass).await,
                Verdict::Keep(why) => {
                    tracing::error!(error = %why, "State database unavailable; leaving the message queued.");
                    pass.kept += 1;
                    pass.stalled = Some(Stall::Store);
                }
            }
        }
        let (suspects, rest): (Vec<_>, Vec<_>) = admitted.into_iter().partition(|(_, a)| a.suspect);
        if !rest.is_empty() {
            let (members, admitted): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
            self.apply_members(Submission::of_messages(admitted), members, &mut pass)
                .await;
        }
        for (r, a) in suspects {
            self.apply_alone(r, a, &mut pass).await;
        }
        pass
    }

    fn count_refusals(&self, admitted: &Admitted) {
        for (target, why) in &admitted.refused {
            self.metrics.blocks_refused.add(why.code, 1);
            tracing::warn!(%target, reason = %why.text, "Target refused by the never-block policy.");
        }
    }

    /// A message past its deliveries gets one attempt on its own, marked first so that a crash during
    /// it is pinned on this message alone.
    async fn apply_alone(&self, r: Received, admitted: Admitted, pass: &mut Pass) {
        if pass.stalled.is_some() {
            self.excuse(
                &[r],
                "not tried: the firewall or the agent is failing",
                pass,
            )
            .await;
            return;
        }
        let (id, now) = (r.id.clone(), self.clock.now());
        let marked = self
            .engine
            .db()
            .call(move |s| s.note_solo_attempt(&id, now))
            .await;
        if let Err(e) = marked {
            tracing::error!(error = %e, "State database unavailable; leaving the message queued.");
            pass.kept += 1;
            pass.stalled = Some(Stall::Store);
            return;
        }
        tracing::warn!(queue_message_id = %r.id, dequeue_count = r.dequeue_count,
            "Message past its deliveries; trying it on its own before giving up on it.");
        self.apply_members(Submission::of_messages([admitted]), vec![r], pass)
            .await;
    }

    /// Appends one audit event; a failure is logged (the side effect it describes still happens).
    async fn audit(&self, event: AuditEvent) {
        self.engine.report_message_verdict(&event).await;
        if let Err(e) = self
            .engine
            .db()
            .call(move |s| s.append_audit(vec![event]))
            .await
        {
            tracing::error!(error = %e, "Cannot write the audit log.");
        }
    }

    async fn delete(&self, r: &Received) {
        if let Err(e) = self.queue.delete(&r.id, &r.pop_receipt).await {
            self.metrics.queue_errors.inc();
            // It comes back and is recognised as already applied.
            tracing::warn!(error = %e, queue_message_id = %r.id, "Could not delete a processed message; it will be redelivered and discarded.");
        }
    }

    /// Audit, send to the poison queue, delete — in that order: a crash after the send or the delete must
    /// not lose the record of why (a crash before them redelivers the message and audits it again). If
    /// the poison queue cannot be written the message stays queued.
    async fn poison(&self, r: &Received, p: &Poison, pass: &mut Pass) {
        let now = self.clock.now();
        let mut event = AuditEvent::new(EventKind::Poisoned, now)
            .queue_message(r.id.clone())
            .reason(format!("{}: {}", p.reason.code(), p.detail));
        if let Some(id) = &p.message_id {
            event = event.message(id.clone());
        }
        self.audit(event).await;
        let text = poison_text(self.queue.name(), r, p.reason, &p.detail, now);
        if let Err(e) = self.poison.send(&text, POISON_TTL_SECS).await {
            self.metrics.queue_errors.inc();
            self.health.poison_failed(&e.to_string());
            tracing::error!(error = %e, poison_queue = %self.poison.name(), queue_message_id = %r.id,
                "Cannot write to the poison queue; the message stays queued.");
            pass.kept += 1;
            return;
        }
        self.health.poison_ok();
        self.delete(r).await;
        self.metrics.messages_poisoned.add(p.reason.code(), 1);
        tracing::warn!(reason = p.reason.code(), detail = %p.detail, queue_message_id = %r.id, "Message moved to the poison queue.");
        pass.poisoned += 1;
    }

    /// Audit, then delete: a crash in between redelivers and audits again, never loses it.
    async fn discard(&self, r: &Received, d: Discard, pass: &mut Pass) {
        let reason = d.reason.code();
        let event = AuditEvent::new(EventKind::Discarded, self.clock.now())
            .queue_message(r.id.clone())
            .message(d.message_id)
            .reason(format!("{reason}: {}", d.detail));
        self.audit(event).await;
        self.delete(r).await;
        self.metrics.messages_discarded.add(reason, 1);
        tracing::info!(reason, detail = %d.detail, queue_message_id = %r.id, "Message deleted without effect.");
        pass.discarded += 1;
    }

    /// Leaves messages queued without counting this delivery against them (outage, agent trouble).
    async fn excuse(&self, members: &[Received], error: &str, pass: &mut Pass) {
        let ids: Vec<String> = members.iter().map(|r| r.id.clone()).collect();
        let (error, now) = (error.to_owned(), self.clock.now());
        let noted = self
            .engine
            .db()
            .call(move |s| s.note_excused(&ids, &error, now))
            .await;
        if let Err(e) = noted {
            tracing::error!(error = %e, "Cannot record the excused deliveries.");
        }
        pass.kept += members.len();
    }

    /// Applies `submission` (group `i` is `members[i]`): firewall, then state, then the deletes.
    async fn apply_members(&self, submission: Submission, members: Vec<Received>, pass: &mut Pass) {
        match self.engine.apply(&submission).await {
            Ok(applied) => {
                let deferred: HashSet<usize> = applied.deferred.iter().copied().collect();
                for (i, r) in members.iter().enumerate() {
                    if deferred.contains(&i) {
                        pass.kept += 1;
                    } else {
                        self.delete(r).await;
                        pass.applied += 1;
                    }
                }
            }
            Err(ApplyError::Backend(BackendError::Rejected(why))) if members.len() > 1 => {
                // One message may be the cause: apply them one at a time so the rest go through.
                tracing::warn!(error = %why, messages = members.len(), "Firewall rejected the batch; retrying its messages one by one.");
                let mut left = members.into_iter().enumerate();
                for (i, r) in left.by_ref() {
                    Box::pin(self.apply_members(submission.subset(&[i]), vec![r], pass)).await;
                    if pass.stalled.is_some() {
                        break;
                    }
                }
                let rest: Vec<Received> = left.map(|(_, r)| r).collect();
                if !rest.is_empty() {
                    self.excuse(&rest, "not tried: the firewall is failing", pass)
                        .await;
                }
            }
            Err(ApplyError::Store(e)) => {
                // The agent's own failure, not the messages': nothing counts against them, the consumer
                // stops until the state database works again.
                pass.failed = true;
                pass.stalled = Some(Stall::Store);
                tracing::error!(error = %e, messages = members.len(), "State database failed; the messages stay queued.");
                self.excuse(&members, &format!("state database: {e}"), pass)
                    .await;
            }
            Err(ApplyError::Backend(e)) => self.commit_failed(&e, members, pass).await,
        }
    }

    /// A failed commit: the messages' fault only if the firewall rejected them and is otherwise healthy
    /// (then each counts a failure and is poisoned at its limit); anything else (unreachable,
    /// misconfigured, failing its healthcheck) is an outage that excuses them and stalls the consumer.
    async fn commit_failed(&self, e: &BackendError, members: Vec<Received>, pass: &mut Pass) {
        pass.failed = true;
        let error = e.to_string();
        let message_specific =
            matches!(e, BackendError::Rejected(_)) && self.engine.healthcheck().await.is_ok();
        tracing::error!(error = %error, messages = members.len(), message_specific, "Applying the batch failed.");
        let ids: Vec<String> = members.iter().map(|r| r.id.clone()).collect();
        let now = self.clock.now();
        let events: Vec<AuditEvent> = ids
            .iter()
            .map(|id| {
                AuditEvent::new(EventKind::Failed, now)
                    .queue_message(id.clone())
                    .reason(error.clone())
            })
            .collect();
        let last_error = format!("{} {error}", now.to_rfc3339());
        let noted = self.engine.db().call(move |s| {
            s.set_meta("last_error", last_error)?;
            s.append_audit(events)
        });
        if let Err(e) = noted.await {
            tracing::error!(error = %e, "Cannot record the failed commit.");
        }
        if !message_specific {
            pass.stalled = Some(Stall::Backend);
            self.excuse(&members, &error, pass).await;
            return;
        }
        self.health.commit_rejected_for_content();
        let counted = {
            let error = error.clone();
            self.engine.db().call(move |s| {
                s.note_failures(&ids, &error, now)?;
                ids.iter()
                    .map(|id| s.delivery(id).map(|d| d.deferrals))
                    .collect::<Result<Vec<u32>, _>>()
            })
        };
        let deferrals = counted.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "Cannot count the failed deliveries.");
            vec![0; members.len()]
        });
        for (r, deferrals) in members.into_iter().zip(deferrals) {
            let deliveries = r.dequeue_count.saturating_sub(deferrals);
            if classify::poison_after_rejection(deliveries, self.settings.max_dequeue_count) {
                let poison = Poison {
                    reason: PoisonReason::Failed,
                    detail: format!(
                        "rejected by the firewall on {deliveries} deliveries; last error: {error}"
                    ),
                    message_id: None,
                };
                self.poison(&r, &poison, pass).await;
            } else {
                pass.kept += 1;
            }
        }
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_text_keeps_the_original_after_a_blank_line() {
        let r = Received {
            id: "q1".to_owned(),
            pop_receipt: "p".to_owned(),
            text: "{\"v\":1}\nsecond line".to_owned(),
            dequeue_count: 2,
        };
        let text = poison_text(
            "portcullis",
            &r,
            PoisonReason::BadSignature,
            "bad\nsignature",
            chrono::Utc::now(),
        );
        let (head, body) = text.split_once("\n\n").unwrap();
        assert!(
            head.starts_with("portcullis-poison/1\nreason: bad-signature\ndetail: bad signature\n")
        );
        assert!(head.contains("queue-message-id: q1\ndequeue-count: 2\n"));
        assert_eq!(body, r.text);
    }
}
