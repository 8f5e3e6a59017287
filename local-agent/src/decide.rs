//! Deciding what the firewall should do: claims per target, merged into one plan.
//!
//! A target is blocked while at least one *claim* on it is alive. A claim is keyed by the source that made
//! it ([`queue_message::Source::claim_key`]: one per incident or alert, `manual` for people), so an
//! incident closed as a false positive lifts its own claim without lifting another incident's block on the
//! same address. A manual unblock lifts every claim: a person said so. The effective expiry of a block is
//! the latest expiry of its claims, and claims only ever extend.
//!
//! Everything here is pure (no I/O, time passed in), so the property tests can hammer it: [`message_ops`]
//! applies the never-block policy ([`Policy`]), [`plan`] turns claim operations and the current claims of the touched
//! targets into firewall changes and the resulting claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use queue_message::{Action, BlockMessage, Source, Target};

use crate::backends::BlockEntry;
use crate::policy::{Policy, Refused};

/// Who asked for a claim, and why; kept for `list` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimMeta {
    /// Human-readable reason.
    pub reason: String,
    /// Where the instruction came from.
    pub source: Source,
    /// The queue message's id (`None` for manual commands).
    pub message_id: Option<String>,
}

/// One source's reason to block a target until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// When this claim lapses.
    pub expires_at: DateTime<Utc>,
    /// When this claim was first made.
    pub created_at: DateTime<Utc>,
    /// Who and why; shared by every target of one message (a 10k-IP alert holds it once).
    pub meta: Arc<ClaimMeta>,
}

/// The claims on one target, by claim key.
///
/// A small vector rather than a map: almost every target has one claim, and a `BTreeMap` would allocate
/// a node for eleven entries per target, which is most of the agent's memory when a bulk alert arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims(Vec<(Arc<str>, Claim)>);

impl Claims {
    /// No claims.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The claim under `key`.
    pub fn get(&self, key: &str) -> Option<&Claim> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, c)| c)
    }

    /// The claim under `key`, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Claim> {
        self.0.iter_mut().find(|(k, _)| &**k == key).map(|(_, c)| c)
    }

    /// Inserts or replaces the claim under `key`.
    pub fn insert(&mut self, key: Arc<str>, claim: Claim) {
        match self.get_mut(&key) {
            Some(existing) => *existing = claim,
            None => self.0.push((key, claim)),
        }
    }

    /// Removes the claim under `key`.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| &**k != key);
    }

    /// Keeps the claims for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Claim) -> bool) {
        self.0.retain(|(k, c)| keep(k, c));
    }

    /// Removes every claim.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// No claim at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of claims.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The claims with their keys.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Claim)> {
        self.0.iter().map(|(k, c)| (k, c))
    }
}

impl std::ops::Index<&str> for Claims {
    type Output = Claim;
    fn index(&self, key: &str) -> &Claim {
        self.get(key).expect("no claim under this key")
    }
}

/// The effective expiry: the latest claim still alive at `now`, if any.
pub fn effective_expiry(claims: &Claims, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    claims
        .iter()
        .map(|(_, c)| c.expires_at)
        .filter(|e| *e > now)
        .max()
}

/// What an operation does to a target's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Add or extend the claim `key` until `expires_at`.
    Block {
        /// When the claim should lapse.
        expires_at: DateTime<Utc>,
    },
    /// Lift the claim `key`.
    Release,
    /// Lift every claim on the target (manual unblock).
    ReleaseAll,
}

/// One claim operation on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The target.
    pub target: Target,
    /// The claim key (shared by the message's targets).
    pub key: Arc<str>,
    /// Block, release, release all.
    pub intent: Intent,
    /// Who and why (shared by the message's targets).
    pub meta: Arc<ClaimMeta>,
    /// Which submitted message this op came from (for rate-limit deferral).
    pub group: usize,
}

/// What happened to a target's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Newly blocked.
    Blocked,
    /// Still blocked, now until later.
    Extended,
    /// Still blocked, unchanged (a claim came or went without moving the expiry).
    Unchanged,
    /// No longer blocked.
    Unblocked,
}

/// One target's outcome in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The target.
    pub target: Target,
    /// What happened to its block.
    pub change: Change,
    /// Its effective expiry afterwards (`None` when unblocked).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The merged result of a batch of operations.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Blocks to add or extend on the firewall.
    pub add: Vec<BlockEntry>,
    /// Targets to take off the firewall.
    pub remove: Vec<Target>,
    /// The claims of every touched target afterwards (empty = no block).
    pub claims: BTreeMap<Target, Claims>,
    /// Per touched target, what changed.
    pub outcomes: Vec<Outcome>,
    /// Groups (messages) whose new blocks did not fit the rate limit and were left out, in part or whole.
    pub deferred: Vec<usize>,
}

impl Plan {
    /// Targets newly blocked by this plan.
    pub fn new_blocks(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.change == Change::Blocked)
            .count()
    }
}

/// The claim operations a verified message asks for, with the targets the policy refuses. A block's
/// refused targets never become operations; unblocks are never refused (lifting is always safe). A
/// person's unblock (source kind `manual`) lifts every claim, a source's unblock lifts its own.
pub fn message_ops(
    message: &BlockMessage,
    group: usize,
    policy: &Policy,
) -> (Vec<Op>, Vec<(Target, Refused)>) {
    let key: Arc<str> = Arc::from(message.source.claim_key());
    let meta = Arc::new(ClaimMeta {
        reason: message.reason.clone(),
        source: message.source.clone(),
        message_id: Some(message.id.to_string()),
    });
    let mut ops = Vec::with_capacity(message.targets.len());
    let mut refused = Vec::new();
    for target in &message.targets {
        let intent = match message.action {
            Action::Block => match policy.screen(target) {
                Ok(()) => Intent::Block {
                    expires_at: message.expires_at,
                },
                Err(why) => {
                    refused.push((*target, why));
                    continue;
                }
            },
            Action::Unblock if message.source.kind == "manual" => Intent::ReleaseAll,
            Action::Unblock => Intent::Release,
        };
        ops.push(Op {
            target: *target,
            key: Arc::clone(&key),
            intent,
            meta: Arc::clone(&meta),
            group,
        });
    }
    (ops, refused)
}

/// `t` truncated to whole milliseconds, the precision of the state database.
pub fn whole_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Merges `ops` (in order) with the current claims of the touched targets.
///
/// `budget` caps the number of *new* blocks (targets not blocked before); ops that would exceed it are
/// dropped and their group is listed in [`Plan::deferred`], so the caller keeps those messages queued.
/// Extensions and releases are never limited.
// Long on purpose: one pass over the operations and one over the touched targets, each a single match
// over the intent or the change; splitting them would hide the budget rule between two functions.
pub fn plan(
    ops: &[Op],
    current: &HashMap<Target, Claims>,
    now: DateTime<Utc>,
    budget: Option<usize>,
) -> Plan {
    let mut claims: BTreeMap<Target, Claims> = BTreeMap::new();
    let mut budget = budget;
    let mut deferred: Vec<usize> = Vec::new();
    for op in ops {
        let entry = claims.entry(op.target).or_insert_with(|| {
            let mut c = current.get(&op.target).cloned().unwrap_or_default();
            c.retain(|_, claim| claim.expires_at > now);
            c
        });
        match &op.intent {
            Intent::Block { expires_at } => {
                // The state keeps milliseconds; so does the plan, or a redelivery would "extend" by
                // the nanoseconds the database dropped.
                let expires_at = &whole_millis(*expires_at);
                if *expires_at <= now {
                    continue;
                }
                let was_blocked = current
                    .get(&op.target)
                    .and_then(|c| effective_expiry(c, now))
                    .is_some();
                let blocked_in_batch = effective_expiry(entry, now).is_some();
                if !was_blocked && !blocked_in_batch {
                    match budget.as_mut() {
                        Some(0) => {
                            if !deferred.contains(&op.group) {
                                deferred.push(op.group);
                            }
                            continue;
                        }
                        Some(left) => *left -= 1,
                        None => {}
                    }
                }
                match entry.get_mut(&op.key) {
                    Some(claim) => {
                        if *expires_at > claim.expires_at {
                            claim.expires_at = *expires_at;
                        }
                        claim.meta = Arc::clone(&op.meta);
                    }
                    None => {
                        entry.insert(
                            Arc::clone(&op.key),
                            Claim {
                                expires_at: *expires_at,
                                created_at: now,
                                meta: Arc::clone(&op.meta),
                            },
                        );
                    }
                }
            }
            Intent::Release => {
                entry.remove(&op.key);
            }
            Intent::ReleaseAll => entry.clear(),
        }
    }
    let mut result = Plan {
        deferred,
        ..Plan::default()
    };
    for (target, after) in claims {
        let before = current.get(&target).and_then(|c| effective_expiry(c, now));
        let expiry = effective_expiry(&after, now);
        let change = match (before, expiry) {
            (None, Some(_)) => Change::Blocked,
            (Some(b), Some(a)) if a > b => Change::Extended,
            (Some(_), Some(_)) => Change::Unchanged,
            (Some(_), None) => Change::Unblocked,
            (None, None) => {
                // Nothing was blocked and nothing is: only stale claims may need cleaning up.
                result.claims.insert(target, after);
                continue;
            }
        };
        match (change, expiry) {
            (Change::Blocked | Change::Extended, Some(expires_at)) => {
                result.add.push(BlockEntry { target, expires_at })
            }
            (Change::Unblocked, _) => result.remove.push(target),
            _ => {}
        }
        result.outcomes.push(Outcome {
            target,
            change,
            expires_at: expiry,
        });
        result.claims.insert(target, after);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn block(target: &str, key: &str, expires_at: DateTime<Utc>, group: usize) -> Op {
        Op {
            target: t(target),
            key: Arc::from(key),
            intent: Intent::Block { expires_at },
            meta: Arc::default(),
            group,
        }
    }

    fn release(target: &str, key: &str, all: bool) -> Op {
        Op {
            target: t(target),
            key: Arc::from(key),
            intent: if all {
                Intent::ReleaseAll
            } else {
                Intent::Release
            },
            meta: Arc::default(),
            group: 0,
        }
    }

    #[test]
    fn a_target_stays_blocked_until_every_claim_is_lifted() {
        let now = whole_millis(Utc::now());
        let e1 = now + Duration::hours(1);
        let e2 = now + Duration::hours(2);
        let p = plan(
            &[
                block("198.51.100.7", "a", e1, 0),
                block("198.51.100.7", "b", e2, 1),
            ],
            &HashMap::new(),
            now,
            None,
        );
        assert_eq!(
            p.add,
            [BlockEntry {
                target: t("198.51.100.7"),
                expires_at: e2
            }]
        );
        assert_eq!(p.new_blocks(), 1);
        let current: HashMap<_, _> = p.claims.into_iter().collect();

        let p = plan(&[release("198.51.100.7", "b", false)], &current, now, None);
        assert!(p.add.is_empty() && p.remove.is_empty());
        assert_eq!(p.outcomes[0].change, Change::Unchanged);
        assert_eq!(p.outcomes[0].expires_at, Some(e1));
        let current: HashMap<_, _> = p.claims.into_iter().collect();

        let p = plan(&[release("198.51.100.7", "a", false)], &current, now, None);
        assert_eq!(p.remove, [t("198.51.100.7")]);
        assert_eq!(p.outcomes[0].change, Change::Unblocked);
    }

    #[test]
    fn claims_only_extend_and_manual_unblock_lifts_all() {
        let now = whole_millis(Utc::now());
        let e1 = now + Duration::hours(1);
        let p = plan(
            &[block("198.51.100.7", "a", e1, 0)],
            &HashMap::new(),
            now,
            None,
        );
        let current: HashMap<_, _> = p.claims.into_iter().collect();
        let p = plan(
            &[block("198.51.100.7", "a", now + Duration::minutes(5), 0)],
            &current,
            now,
            None,
        );
        assert_eq!(p.outcomes[0].change, Change::Unchanged);
        assert!(p.add.is_empty());
        let p = plan(
            &[block("198.51.100.7", "b", e1 + Duration::hours(1), 0)],
            &current,
            now,
            None,
        );
        assert_eq!(p.outcomes[0].change, Change::Extended);
        let current: HashMap<_, _> = p.claims.into_iter().collect();
        let p = plan(
            &[release("198.51.100.7", "manual", true)],
            &current,
            now,
            None,
        );
        assert_eq!(p.remove, [t("198.51.100.7")]);
    }

    #[test]
    fn expired_claims_do_not_count() {
        let now = whole_millis(Utc::now());
        let mut claims = Claims::new();
        claims.insert(
            Arc::from("old"),
            Claim {
                expires_at: now - Duration::seconds(1),
                created_at: now - Duration::hours(1),
                meta: Arc::default(),
            },
        );
        let current: HashMap<_, _> = [(t("198.51.100.7"), claims)].into();
        let p = plan(
            &[block("198.51.100.7", "a", now + Duration::hours(1), 0)],
            &current,
            now,
            None,
        );
        assert_eq!(p.outcomes[0].change, Change::Blocked);
        assert_eq!(p.claims[&t("198.51.100.7")].len(), 1);
        // A block that has already expired is ignored.
        let p = plan(
            &[block("198.51.100.8", "a", now, 0)],
            &HashMap::new(),
            now,
            None,
        );
        assert!(p.add.is_empty() && p.outcomes.is_empty());
    }

    #[test]
    fn the_budget_limits_new_blocks_only() {
        let now = whole_millis(Utc::now());
        let e = now + Duration::hours(1);
        let p = plan(
            &[block("198.51.100.1", "a", e, 0)],
            &HashMap::new(),
            now,
            None,
        );
        let current: HashMap<_, _> = p.claims.into_iter().collect();
        let p = plan(
            &[
                block("198.51.100.1", "a", e + Duration::hours(1), 0), // extension: free
                block("198.51.100.2", "a", e, 0),                      // new: uses the budget
                block("198.51.100.2", "b", e, 1),                      // same target again: free
                block("198.51.100.3", "a", e, 1),                      // over budget: deferred
                block("198.51.100.4", "a", e, 2),                      // over budget: deferred
            ],
            &current,
            now,
            Some(1),
        );
        assert_eq!(p.new_blocks(), 1);
        assert_eq!(p.add.len(), 2);
        assert_eq!(p.deferred, [1, 2]);
    }

    mod properties {
        use super::*;
        use ipnet::IpNet;
        use proptest::prelude::*;
        use queue_message::{NeverBlock, Source};
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

        /// Addresses biased towards the interesting places: special-purpose space, the lab ranges, the
        /// allowlist, and public space.
        fn target() -> impl Strategy<Value = Target> {
            let v4 = prop_oneof![
                any::<u32>(),
                (0u32..=255).prop_map(|x| 0x0a00_0000 | (x << 8)), // 10/8
                (0u32..=255).prop_map(|x| 0xc633_6400 | x),        // 198.51.100/24
                (0u32..=255).prop_map(|x| 0xcb00_7100 | x),        // 203.0.113/24
                (0u32..=255).prop_map(|x| 0x7f00_0000 | x),        // 127/8
            ];
            prop_oneof![
                (v4.clone(), 8u8..=32).prop_map(|(a, len)| {
                    Target::from_net(
                        IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len)
                            .unwrap()
                            .trunc(),
                    )
                    .unwrap()
                }),
                v4.prop_map(|a| Target::from_addr(IpAddr::V4(Ipv4Addr::from(a)))),
                (any::<u128>(), prop::bool::ANY, 16u8..=128).prop_map(|(a, doc, len)| {
                    let a = if doc {
                        (0x2001_0db8u128 << 96) | (a >> 32)
                    } else {
                        a
                    };
                    let net = IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len)
                        .unwrap()
                        .trunc();
                    Target::from_net(net).unwrap()
                }),
            ]
        }

        fn message(
            targets: Vec<Target>,
            block: bool,
            source: u8,
            ttl_s: i64,
            now: DateTime<Utc>,
        ) -> BlockMessage {
            BlockMessage {
                id: uuid::Uuid::new_v4(),
                action: if block {
                    Action::Block
                } else {
                    Action::Unblock
                },
                targets,
                expires_at: now + chrono::Duration::seconds(ttl_s),
                reason: "prop".to_owned(),
                source: Source {
                    kind: if source == 0 {
                        "manual".to_owned()
                    } else {
                        "sentinel-incident".to_owned()
                    },
                    id: (source != 0).then(|| format!("i{source}")),
                    ..Source::default()
                },
                issued_at: now,
            }
        }

        fn policy(allow_doc: bool) -> NeverBlock {
            NeverBlock::new(
                vec![
                    "198.51.100.128/25".parse().unwrap(),
                    "203.0.113.7/32".parse().unwrap(),
                ],
                if allow_doc {
                    vec![
                        "198.51.100.0/24".parse().unwrap(),
                        "203.0.113.0/24".parse().unwrap(),
                        "2001:db8::/32".parse().unwrap(),
                    ]
                } else {
                    Vec::new()
                },
                16,
                32,
            )
        }

        proptest! {
            /// Whatever the messages say, nothing the policy refuses is ever staged on the firewall, and
            /// every target is either an operation or a recorded refusal.
            #[test]
            fn the_plan_never_contains_a_refused_address(
                batches in prop::collection::vec(
                    (prop::collection::vec(target(), 0..12), any::<bool>(), 0u8..4, -60i64..7200),
                    1..6,
                ),
                allow_doc in any::<bool>(),
            ) {
                let now = whole_millis(Utc::now());
                let never_block = policy(allow_doc);
                let policy = Policy::from(never_block.clone());
                let mut ops = Vec::new();
                for (group, (targets, block, source, ttl)) in batches.into_iter().enumerate() {
                    let m = message(targets.clone(), block, source, ttl, now);
                    let (o, refused) = message_ops(&m, group, &policy);
                    prop_assert_eq!(o.len() + refused.len(), m.targets.len());
                    for (t, _) in &refused {
                        prop_assert!(never_block.check(t).is_err());
                    }
                    ops.extend(o);
                }
                let plan = plan(&ops, &HashMap::new(), now, None);
                for entry in &plan.add {
                    prop_assert!(never_block.check(&entry.target).is_ok(), "{} was staged", entry.target);
                    prop_assert!(entry.expires_at > now);
                }
            }

            /// Planning the same operations on top of their own result changes nothing.
            #[test]
            fn planning_the_same_batch_twice_is_a_no_op(
                targets in prop::collection::vec(target(), 1..20),
                keys in prop::collection::vec(0u8..3, 1..20),
                blocks in prop::collection::vec(any::<bool>(), 1..20),
            ) {
                let now = whole_millis(Utc::now());
                let ops: Vec<Op> = targets.iter().zip(keys.iter().cycle()).zip(blocks.iter().cycle()).map(|((t, k), b)| Op {
                    target: *t,
                    key: Arc::from(format!("k{k}")),
                    intent: if *b { Intent::Block { expires_at: now + chrono::Duration::hours(1) } } else { Intent::Release },
                    meta: Arc::default(),
                    group: 0,
                }).collect();
                let first = plan(&ops, &HashMap::new(), now, None);
                let state: HashMap<Target, Claims> = first.claims.clone().into_iter().collect();
                let second = plan(&ops, &state, now, None);
                prop_assert!(second.add.is_empty(), "re-plan added {:?}", second.add);
                prop_assert!(second.remove.is_empty(), "re-plan removed {:?}", second.remove);
                prop_assert_eq!(second.claims, first.claims);
            }
        }
    }
}
