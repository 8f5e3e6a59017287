//! The agent side of the return path (issue 10): signed reports about what the agent did, kept in a
//! durable [`outbox`] until the reports queue has accepted them.
//!
//! Reports are written to the outbox *after* the executor has recorded a commit, in their own
//! transaction: enforcement never waits on the reports queue, and a crash between the two loses at most
//! the report of that one commit (the audit log still has it), never a block.

pub mod outbox;
pub mod sender;

use chrono::{DateTime, Utc};
use queue_message::report::{CommitEvent, EventKind as ReportKind, Report};
use queue_message::{SigningKey, Target};
use uuid::Uuid;

use std::sync::Arc;

use queue_message::report::{Heartbeat, LogBatch, ReportBody};
use tokio::sync::Notify;

use crate::db::Db;
use crate::status::StatusReport;
use crate::store::{EventKind as StoreKind, Record};

/// Where the executor hands its commit reports: the outbox, and a wake-up for the sender.
#[derive(Debug)]
pub struct Sink {
    /// The site name reports carry (`[reports] site`).
    pub site: String,
    /// The key reports are signed with (the agent's current signing key).
    pub key: SigningKey,
    /// Most messages the outbox keeps.
    pub bound: u64,
    /// Notified after every push so the sender does not wait for its next round.
    pub wake: Arc<Notify>,
}

impl Sink {
    /// Signs one commit's events and appends them to the outbox. Called after the commit was recorded,
    /// in its own transaction: a failure here is logged and costs only this report, never the commit.
    pub async fn enqueue_commit(
        &self,
        db: &Db,
        committed_at: DateTime<Utc>,
        events: Vec<CommitEvent>,
    ) {
        if events.is_empty() {
            return;
        }
        let template = Report {
            id: Uuid::nil(),
            site: self.site.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: committed_at,
            body: ReportBody::Logs(LogBatch::default()),
        };
        let texts = commit_messages(&template, Uuid::new_v4(), committed_at, &events, &self.key);
        self.push(db, outbox::Kind::Report, texts, committed_at)
            .await;
    }

    /// Signs one heartbeat and appends it to the outbox (heartbeats are the first to go when it is full).
    pub async fn enqueue_heartbeat(&self, db: &Db, at: DateTime<Utc>, heartbeat: Heartbeat) {
        let report = Report {
            id: Uuid::new_v4(),
            site: self.site.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at: at,
            body: ReportBody::Heartbeat(heartbeat),
        };
        self.push(
            db,
            outbox::Kind::Heartbeat,
            vec![report.encode(&self.key)],
            at,
        )
        .await;
    }

    /// Appends signed `texts` to the outbox and wakes the sender; a failure is logged, never returned:
    /// reporting must not stop enforcement.
    async fn push(&self, db: &Db, kind: outbox::Kind, texts: Vec<String>, at: DateTime<Utc>) {
        let bound = self.bound;
        let pushed = db
            .call(move |s| outbox::push(s.connection(), kind, &texts, at, bound))
            .await;
        match pushed {
            Ok(p) => {
                if p.dropped_heartbeats + p.dropped_reports > 0 {
                    tracing::warn!(
                        dropped_heartbeats = p.dropped_heartbeats,
                        dropped_reports = p.dropped_reports,
                        "Reports outbox full; the oldest entries were dropped."
                    );
                }
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = kind.as_str(), "Report not queued; enforcement goes on.")
            }
        }
    }
}

/// The heartbeat for `status` (the daemon's own status report) and the messages poisoned since the
/// previous heartbeat.
pub fn heartbeat(status: StatusReport, poisoned_since_last: u64) -> Heartbeat {
    Heartbeat {
        backend: status.backend,
        healthy: status.problems.is_empty(),
        problems: status.problems,
        active_blocks: status.active_blocks,
        last_commit_at: status.last_commit,
        outbox_depth: status.outbox_depth.unwrap_or(0),
        poisoned_since_last,
    }
}

/// The signed queue messages for one commit, in order (part 1 first), ready for [`outbox::push`].
///
/// Thin on purpose: [`Report::pack_commit`] does the splitting under the queue's message size limit; this
/// only encodes each part with the agent's key.
pub fn commit_messages(
    template: &Report,
    commit_id: Uuid,
    committed_at: DateTime<Utc>,
    events: &[CommitEvent],
    key: &SigningKey,
) -> Vec<String> {
    Report::pack_commit(template, commit_id, committed_at, events, key)
        .iter()
        .map(|part| part.encode(key))
        .collect()
}

/// The commit report's events for one recorded commit, built from the [`Record`] the executor wrote.
///
/// Target events (block, extend, unblock, expire) are grouped by consecutive runs of the same kind,
/// claim, expiry and message, so a 10k-address alert is one event with 10k targets; their `source` is the
/// claim's source. Audit events contribute refusals (every refusal in the agent comes from the never-block
/// policy, so the reason is given the `policy:` prefix the handler keys on), poisoned and discarded
/// messages. Claims that changed nothing on the firewall, receipts and reconcile notes are not reported.
pub fn commit_events(record: &Record) -> Vec<CommitEvent> {
    let mut out: Vec<CommitEvent> = Vec::new();
    for te in &record.target_events {
        let Some(event) = report_kind(te.kind) else {
            continue;
        };
        let source = te.meta.as_ref().map(|m| m.source.clone());
        let message_id = te.meta.as_ref().and_then(|m| m.message_id.clone());
        let reason = te.meta.as_ref().map(|m| m.reason.clone());
        let expires_at = match event {
            ReportKind::Block | ReportKind::Extend => te.expires_at,
            _ => None,
        };
        if let Some(last) = out.last_mut().filter(|last| {
            last.event == event
                && last.expires_at == expires_at
                && last.source == source
                && last.message_id == message_id
                && last.reason == reason
        }) {
            last.targets.push(te.target);
            continue;
        }
        out.push(CommitEvent {
            event,
            targets: vec![te.target],
            expires_at,
            source,
            reason,
            message_id,
        });
    }
    for ae in &record.events {
        let event = match ae.event.as_str() {
            e if e == StoreKind::Refused.as_str() => ReportKind::Refused,
            e if e == StoreKind::Poisoned.as_str() => ReportKind::Poisoned,
            e if e == StoreKind::Discarded.as_str() => ReportKind::Discarded,
            _ => continue,
        };
        let reason = ae.reason.clone().map(|r| match event {
            ReportKind::Refused if !r.starts_with("policy:") => format!("policy: {r}"),
            _ => r,
        });
        let targets = ae
            .target
            .as_deref()
            .and_then(|t| Target::parse(t).ok())
            .into_iter()
            .collect();
        out.push(CommitEvent {
            event,
            targets,
            expires_at: None,
            source: None,
            reason,
            message_id: ae
                .message_id
                .clone()
                .or_else(|| ae.queue_message_id.clone()),
        });
    }
    out
}

fn report_kind(kind: StoreKind) -> Option<ReportKind> {
    match kind {
        StoreKind::Blocked => Some(ReportKind::Block),
        StoreKind::Extended => Some(ReportKind::Extend),
        StoreKind::Unblocked => Some(ReportKind::Unblock),
        StoreKind::Expired => Some(ReportKind::Expire),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use queue_message::Source;

    use super::*;
    use crate::decide::ClaimMeta;
    use crate::store::{AuditEvent, TargetEvent};

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn a_commit_record_becomes_a_verifiable_commit_report() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
        let until = now + chrono::Duration::hours(24);
        let source = Source {
            kind: "sentinel-incident".to_owned(),
            id: Some("/subscriptions/s/incidents/1".to_owned()),
            url: None,
            rule: None,
            severity: None,
        };
        let meta = Arc::new(ClaimMeta {
            reason: "brute force".to_owned(),
            source: source.clone(),
            message_id: Some("m-1".to_owned()),
        });
        let blocked = |target: &str| TargetEvent {
            kind: StoreKind::Blocked,
            at: now,
            target: t(target),
            claim: Some(Arc::from("sentinel-incident:1")),
            meta: Some(Arc::clone(&meta)),
            expires_at: Some(until),
        };
        let record = Record {
            at: now,
            target_events: vec![
                blocked("198.51.100.7"),
                blocked("203.0.113.0/24"),
                TargetEvent {
                    kind: StoreKind::Expired,
                    at: now,
                    target: t("192.0.2.1"),
                    claim: None,
                    meta: None,
                    expires_at: None,
                },
            ],
            events: vec![
                AuditEvent::new(StoreKind::Received, now).message("m-1"),
                AuditEvent::new(StoreKind::Refused, now)
                    .target(&t("10.0.0.1"))
                    .message("m-1")
                    .reason("special-purpose range 10.0.0.0/8"),
                AuditEvent::new(StoreKind::Poisoned, now)
                    .queue_message("q-9")
                    .reason("bad-signature: no key verifies"),
            ],
            ..Record::default()
        };
        let events = commit_events(&record);
        let kinds: Vec<_> = events.iter().map(|e| e.event).collect();
        assert_eq!(
            kinds,
            [
                ReportKind::Block,
                ReportKind::Expire,
                ReportKind::Refused,
                ReportKind::Poisoned
            ]
        );
        assert_eq!(events[0].targets, [t("198.51.100.7"), t("203.0.113.0/24")]);
        assert_eq!(events[0].source.as_ref(), Some(&source));
        assert_eq!(events[0].expires_at, Some(until));
        assert_eq!(events[0].message_id.as_deref(), Some("m-1"));
        assert_eq!(events[1].expires_at, None);
        assert_eq!(
            events[2].reason.as_deref(),
            Some("policy: special-purpose range 10.0.0.0/8")
        );
        assert_eq!(events[2].targets, [t("10.0.0.1")]);
        assert_eq!(events[3].message_id.as_deref(), Some("q-9"));

        let key = SigningKey::from_bytes((0u8..32).collect()).unwrap();
        let template = Report {
            id: Uuid::nil(),
            site: "home".to_owned(),
            agent_version: "test".to_owned(),
            created_at: now,
            body: ReportBody::Logs(LogBatch::default()),
        };
        let commit_id = Uuid::new_v4();
        let texts = commit_messages(&template, commit_id, now, &events, &key);
        assert_eq!(texts.len(), 1);
        let decoded = Report::decode(&texts[0], std::slice::from_ref(&key)).unwrap();
        let ReportBody::Commit(commit) = decoded.body else {
            panic!("not a commit report: {:?}", decoded.body);
        };
        assert_eq!(commit.commit_id, commit_id);
        assert_eq!(commit.events, events);
    }
}
