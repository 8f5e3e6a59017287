//! Decide before acting: what to do with each received queue message, as a pure function of the message,
//! the rules and what the state database knows. No I/O happens here; [`crate::poll`] performs the
//! [`Verdict`]s in the crash-safe order (firewall, then state, then queue).
//!
//! The rules, in the order they are checked:
//! 1. A message past `max_dequeue_count` deliveries (not counting excused ones) whose last recorded attempt
//!    was on its own ([`SOLO_ATTEMPT`]) stopped the agent while being applied: poison it (`failed`).
//! 2. A message that does not decode — malformed, unknown version, unsigned, unknown key, bad signature —
//!    is poisoned with that reason.
//! 3. A message id applied before: from this same queue message, the agent crashed before deleting it —
//!    discard (`redelivered`); from another queue message, or twice in one batch, it is a replay — poison
//!    (`replayed`).
//! 4. A message past its own `expires_at` is discarded (`expired`).
//! 5. Otherwise it is applied: its targets become claim operations, the never-block policy refuses some
//!    (audited, never staged), and a message past its deliveries is marked a *suspect*, to be applied on
//!    its own after the others.
//!
//! If the state cannot be read the message is kept (left queued) and the consumer stalls.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use queue_message::{BlockMessage, DecodeError, Received, SigningKey, Target};

use crate::apply::Group;
use crate::decide::{self, Op};
use crate::policy::{Policy, Refused};
use crate::store::{AuditEvent, Delivery, EventKind, Seen, Store, StoreError, SOLO_ATTEMPT};

/// Why a message went to the poison queue (metric label and audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonReason {
    /// Not a Portcullis message.
    Malformed,
    /// A schema version this agent does not know.
    UnknownVersion,
    /// No signature.
    Unsigned,
    /// Signed with a key the agent does not hold.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// A message id applied before, delivered again as a new queue message.
    Replayed,
    /// It kept failing.
    Failed,
}

impl PoisonReason {
    /// Metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownVersion => "unknown-version",
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown-key",
            Self::BadSignature => "bad-signature",
            Self::Replayed => "replayed",
            Self::Failed => "failed",
        }
    }

    fn from_decode(e: &DecodeError) -> Self {
        match e {
            DecodeError::Malformed(_) => Self::Malformed,
            DecodeError::UnknownVersion(_) => Self::UnknownVersion,
            DecodeError::Unsigned => Self::Unsigned,
            DecodeError::UnknownKey(_) => Self::UnknownKey,
            DecodeError::BadSignature => Self::BadSignature,
        }
    }
}

/// Why a message was deleted without effect (metric label and audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Applied before; the agent stopped before deleting it.
    Redelivered,
    /// Its block or unblock is no longer meaningful.
    Expired,
}

impl DiscardReason {
    /// Metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::Redelivered => "redelivered",
            Self::Expired => "expired",
        }
    }
}

/// A message to move to the poison queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Why.
    pub reason: PoisonReason,
    /// What exactly (one line).
    pub detail: String,
    /// The Portcullis message id, when it decoded.
    pub message_id: Option<String>,
}

/// A message to delete without effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discard {
    /// Why.
    pub reason: DiscardReason,
    /// What exactly.
    pub detail: String,
    /// The Portcullis message id.
    pub message_id: String,
}

/// A verified message to apply.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Its claim operations (group index 0; the executor renumbers them within a submission).
    pub ops: Vec<Op>,
    /// Its bookkeeping: queue message id, seen id, received and refused audit events.
    pub group: Group,
    /// Targets the never-block policy refused (already in `group.events`; the executor counts and logs).
    pub refused: Vec<(Target, Refused)>,
    /// Past its deliveries: apply it on its own, after the others, before giving up on it.
    pub suspect: bool,
}

/// What to do with one received message.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Apply it, then delete it.
    Apply(Box<Admitted>),
    /// Audit it, send it to the poison queue, delete it.
    Poison(Poison),
    /// Audit it and delete it.
    Discard(Discard),
    /// Leave it queued: the state database could not be read (the consumer stalls until it can).
    Keep(String),
}

/// What the classifier reads from the state database.
pub trait StateView {
    /// Failures and deferrals recorded for a queue message.
    fn delivery(&self, queue_message_id: &str) -> Result<Delivery, StoreError>;
    /// The queue message that applied `message_id`, if any did.
    fn seen(&self, message_id: &str) -> Result<Option<String>, StoreError>;
}

impl StateView for Store {
    fn delivery(&self, queue_message_id: &str) -> Result<Delivery, StoreError> {
        Self::delivery(self, queue_message_id)
    }

    fn seen(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        Self::seen(self, message_id)
    }
}

/// Everything the classifier needs besides the messages and the state (owned, so it can move to the
/// state database's thread).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Keys a message may be signed with.
    pub keys: Arc<[SigningKey]>,
    /// The never-block policy in force.
    pub policy: Arc<Policy>,
    /// Deliveries before a failing message is given up on.
    pub max_dequeue_count: u32,
    /// The time of this batch.
    pub now: DateTime<Utc>,
}

/// Deliveries that count against a message: the queue's count less the excused and deferred ones.
pub fn counted_deliveries(dequeue_count: u32, delivery: &Delivery) -> u32 {
    dequeue_count.saturating_sub(delivery.deferrals)
}

/// After the firewall rejected a message *for its content* on this delivery: poison it once its counted
/// deliveries reach the limit (the caller counted this failure already).
pub fn poison_after_rejection(deliveries: u32, max_dequeue_count: u32) -> bool {
    deliveries >= max_dequeue_count
}

/// Classifies one batch, in order (a message id seen earlier in the same batch is a replay).
pub fn classify(batch: &[Received], rules: &Rules, state: &impl StateView) -> Vec<Verdict> {
    let mut ids_in_batch = HashSet::new();
    batch
        .iter()
        .map(|r| classify_one(r, rules, state, &mut ids_in_batch))
        .collect()
}

fn classify_one(
    r: &Received,
    rules: &Rules,
    state: &impl StateView,
    ids_in_batch: &mut HashSet<uuid::Uuid>,
) -> Verdict {
    let delivery = match state.delivery(&r.id) {
        Ok(d) => d,
        Err(e) => return Verdict::Keep(e.to_string()),
    };
    let deliveries = counted_deliveries(r.dequeue_count, &delivery);
    let suspect = deliveries > rules.max_dequeue_count;
    if suspect && delivery.last_error.as_deref() == Some(SOLO_ATTEMPT) {
        return Verdict::Poison(Poison {
            reason: PoisonReason::Failed,
            detail: format!(
                "delivered {deliveries} times without success; the agent stopped while applying it on its own"
            ),
            message_id: None,
        });
    }
    let message = match BlockMessage::decode(&r.text, &rules.keys) {
        Ok(m) => m,
        Err(e) => {
            return Verdict::Poison(Poison {
                reason: PoisonReason::from_decode(&e),
                detail: e.to_string(),
                message_id: None,
            })
        }
    };
    let message_id = message.id.to_string();
    match state.seen(&message_id) {
        Ok(Some(q)) if q == r.id => {
            return Verdict::Discard(Discard {
                reason: DiscardReason::Redelivered,
                detail: "already applied before the agent could delete it".to_owned(),
                message_id,
            })
        }
        Ok(Some(q)) => {
            return Verdict::Poison(Poison {
                reason: PoisonReason::Replayed,
                detail: format!("message {message_id} was already applied from queue message {q}"),
                message_id: Some(message_id),
            })
        }
        Ok(None) => {}
        Err(e) => return Verdict::Keep(e.to_string()),
    }
    if !ids_in_batch.insert(message.id) {
        return Verdict::Poison(Poison {
            reason: PoisonReason::Replayed,
            detail: format!("message {message_id} appears twice in one batch"),
            message_id: Some(message_id),
        });
    }
    if message.expires_at <= rules.now {
        return Verdict::Discard(Discard {
            reason: DiscardReason::Expired,
            detail: format!(
                "its {} expired at {}",
                message.action,
                message.expires_at.to_rfc3339()
            ),
            message_id,
        });
    }
    Verdict::Apply(Box::new(admit(r, &message, rules, suspect)))
}

/// The operations, audit events and refusals of a verified, current message.
fn admit(r: &Received, message: &BlockMessage, rules: &Rules, suspect: bool) -> Admitted {
    let now = rules.now;
    let message_id = message.id.to_string();
    let claim = message.source.claim_key();
    let url = message.source.url.as_deref();
    let mut events = vec![AuditEvent::new(EventKind::Received, now)
        .queue_message(r.id.clone())
        .message(message_id.clone())
        .claim(claim.clone())
        .reason(message.reason.clone())
        .detail(format!(
            "{} of {} target(s) from {}{}",
            message.action,
            message.targets.len(),
            message.source.kind,
            url.map(|u| format!(" ({u})")).unwrap_or_default()
        ))];
    let (ops, refused) = decide::message_ops(message, 0, &rules.policy);
    for (target, why) in &refused {
        events.push(
            AuditEvent::new(EventKind::Refused, now)
                .target(target)
                .claim(claim.clone())
                .message(message_id.clone())
                .reason(why.text.clone()),
        );
    }
    Admitted {
        ops,
        group: Group {
            queue_message_id: Some(r.id.clone()),
            seen: Some(Seen {
                message_id,
                queue_message_id: r.id.clone(),
                expires_at: message.expires_at,
            }),
            events,
        },
        refused,
        suspect,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::Duration;
    use queue_message::{Action, NeverBlock, Source};

    use super::*;

    /// The state as a table: delivery records and seen ids, or a failing database.
    #[derive(Default)]
    struct Table {
        deliveries: HashMap<String, Delivery>,
        seen: HashMap<String, String>,
        failing: bool,
    }

    impl StateView for Table {
        fn delivery(&self, id: &str) -> Result<Delivery, StoreError> {
            if self.failing {
                return Err(StoreError::Corrupt("disk on fire".to_owned()));
            }
            Ok(self.deliveries.get(id).cloned().unwrap_or_default())
        }
        fn seen(&self, id: &str) -> Result<Option<String>, StoreError> {
            Ok(self.seen.get(id).cloned())
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(vec![7; 32]).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn rules() -> Rules {
        Rules {
            keys: Arc::from(vec![key()]),
            // The documentation range the tests use is a lab range; 10/8 stays refused.
            policy: Arc::new(Policy::from(NeverBlock::new(
                Vec::new(),
                vec!["198.51.100.0/24".parse().unwrap()],
                16,
                32,
            ))),
            max_dequeue_count: 5,
            now: now(),
        }
    }

    fn message(n: u128, targets: &[&str], expires_in_s: i64) -> BlockMessage {
        BlockMessage {
            id: uuid::Uuid::from_u128(n),
            action: Action::Block,
            targets: targets.iter().map(|t| Target::parse(t).unwrap()).collect(),
            expires_at: now() + Duration::seconds(expires_in_s),
            reason: "test".to_owned(),
            source: Source {
                kind: "sentinel-incident".to_owned(),
                id: Some(format!("/incidents/{n}")),
                ..Source::default()
            },
            issued_at: now(),
        }
    }

    fn received(id: &str, text: String, dequeue_count: u32) -> Received {
        Received {
            id: id.to_owned(),
            pop_receipt: "p".to_owned(),
            text,
            dequeue_count,
        }
    }

    fn signed(n: u128) -> String {
        message(n, &["198.51.100.7"], 3600).encode(&key())
    }

    /// One row of the rule table.
    type Case = (
        &'static str,
        (&'static str, String, u32),
        Option<Delivery>,
        Option<&'static str>,
        (&'static str, &'static str),
    );

    /// The verdict's name and (for poison and discard) its reason code.
    fn summary(v: &Verdict) -> (&'static str, &'static str) {
        match v {
            Verdict::Apply(a) if a.suspect => ("apply", "suspect"),
            Verdict::Apply(_) => ("apply", ""),
            Verdict::Poison(p) => ("poison", p.reason.code()),
            Verdict::Discard(d) => ("discard", d.reason.code()),
            Verdict::Keep(_) => ("keep", ""),
        }
    }

    #[test]
    fn each_rule_gives_its_verdict() {
        let other_key = SigningKey::from_bytes(vec![9; 32]).unwrap();
        let mut tampered: serde_json::Value = serde_json::from_str(&signed(1)).unwrap();
        tampered["reason"] = "changed".into();
        let solo = Delivery {
            last_error: Some(SOLO_ATTEMPT.to_owned()),
            ..Delivery::default()
        };
        let excused = Delivery {
            deferrals: 10,
            ..Delivery::default()
        };
        let applied_id = uuid::Uuid::from_u128(1).to_string();
        let expired = message(1, &["198.51.100.7"], -1).encode(&key());
        let wrong_key = message(1, &["198.51.100.7"], 60).encode(&other_key);
        let (q1, q2) = ("q1", "q2");
        // name, queue message (id, text, dequeue count), its delivery record, which queue message applied
        // its id before, expected verdict.
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("fresh",                       (q1, signed(1), 1), None, None, ("apply", "")),
            ("garbage",                     (q1, "hello".to_owned(), 1), None, None, ("poison", "malformed")),
            ("wrong key",                   (q1, wrong_key, 1), None, None, ("poison", "unknown-key")),
            ("tampered",                    (q1, tampered.to_string(), 1), None, None, ("poison", "bad-signature")),
            ("same delivery again",         (q1, signed(1), 2), None, Some(q1), ("discard", "redelivered")),
            ("applied from another",        (q2, signed(1), 1), None, Some(q1), ("poison", "replayed")),
            ("expired",                     (q1, expired, 1), None, None, ("discard", "expired")),
            ("at the limit",                (q1, signed(1), 5), None, None, ("apply", "")),
            ("past the limit",              (q1, signed(1), 6), None, None, ("apply", "suspect")),
            ("past it, stopped the agent",  (q1, signed(1), 6), Some(solo.clone()), None, ("poison", "failed")),
            ("solo mark within the limit",  (q1, signed(1), 3), Some(solo), None, ("apply", "")),
            ("many deliveries, excused",    (q1, signed(1), 12), Some(excused), None, ("apply", "")),
        ];
        for (name, (id, text, dequeue_count), delivery, seen_from, expected) in cases {
            let r = received(id, text, dequeue_count);
            let mut state = Table::default();
            if let Some(d) = delivery {
                state.deliveries.insert(r.id.clone(), d);
            }
            if let Some(q) = seen_from {
                state.seen.insert(applied_id.clone(), q.to_owned());
            }
            let verdicts = classify(std::slice::from_ref(&r), &rules(), &state);
            assert_eq!(summary(&verdicts[0]), expected, "{name}");
        }
    }

    /// The shared known answer (what a handler of any version signs) is verified and admitted with both
    /// its targets.
    #[test]
    fn the_known_answer_message_is_verified_and_admitted() {
        let rules = Rules {
            keys: Arc::from(vec![queue_message::golden::key()]),
            policy: Arc::new(Policy::from(NeverBlock::new(
                Vec::new(),
                vec![
                    "198.51.100.0/24".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ],
                16,
                32,
            ))),
            ..rules()
        };
        let r = received("q1", queue_message::golden::TEXT.to_owned(), 1);
        let verdicts = classify(&[r], &rules, &Table::default());
        let Verdict::Apply(admitted) = &verdicts[0] else {
            panic!("not admitted: {:?}", verdicts[0]);
        };
        let targets: Vec<String> = admitted
            .ops
            .iter()
            .map(|op| op.target.to_string())
            .collect();
        assert_eq!(targets, ["198.51.100.7", "2001:db8::/64"]);
        let seen = admitted.group.seen.as_ref().unwrap();
        assert_eq!(
            seen.message_id,
            queue_message::golden::message().id.to_string()
        );
    }

    #[test]
    fn the_same_message_twice_in_one_batch_is_a_replay() {
        let batch = [
            received("q1", signed(1), 1),
            received("q2", signed(1), 1),
            received("q3", signed(2), 1),
        ];
        let verdicts = classify(&batch, &rules(), &Table::default());
        let got: Vec<_> = verdicts.iter().map(summary).collect();
        assert_eq!(got, [("apply", ""), ("poison", "replayed"), ("apply", "")]);
    }

    #[test]
    fn an_unreadable_state_keeps_every_message() {
        let state = Table {
            failing: true,
            ..Table::default()
        };
        let verdicts = classify(&[received("q1", signed(1), 1)], &rules(), &state);
        assert!(matches!(&verdicts[0], Verdict::Keep(why) if why.contains("disk on fire")));
    }

    #[test]
    fn refused_targets_are_audited_and_never_become_operations() {
        let text = message(1, &["198.51.100.7", "10.0.0.1"], 60).encode(&key());
        let verdicts = classify(&[received("q1", text, 1)], &rules(), &Table::default());
        let Verdict::Apply(admitted) = &verdicts[0] else {
            panic!("not applied: {:?}", verdicts[0]);
        };
        let staged: Vec<String> = admitted
            .ops
            .iter()
            .map(|op| op.target.to_string())
            .collect();
        assert_eq!(staged, ["198.51.100.7"]);
        assert_eq!(admitted.refused.len(), 1);
        assert_eq!(admitted.refused[0].0.to_string(), "10.0.0.1");
        let kinds: Vec<&str> = admitted
            .group
            .events
            .iter()
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(
            kinds,
            [EventKind::Received.as_str(), EventKind::Refused.as_str()]
        );
    }

    #[test]
    fn a_rejected_message_is_poisoned_when_its_counted_deliveries_reach_the_limit() {
        let d = |deferrals| Delivery {
            deferrals,
            ..Delivery::default()
        };
        // (dequeue count, deferrals, limit, poison?)
        for (dequeue, deferrals, max, poison) in [
            (1, 0, 5, false),
            (4, 0, 5, false),
            (5, 0, 5, true),
            (7, 3, 5, false),
            (8, 3, 5, true),
        ] {
            let counted = counted_deliveries(dequeue, &d(deferrals));
            assert_eq!(
                poison_after_rejection(counted, max),
                poison,
                "{dequeue} deliveries, {deferrals} deferred, limit {max}"
            );
        }
    }
}
