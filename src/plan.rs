//! [`Alert`] → [`Plan`]: the policy applied before anything is queued.
//!
//! Every candidate text is parsed into a canonical [`Target`] (IPv4-mapped IPv6 becomes IPv4, host bits of a
//! network must be zero) and de-duplicated; each distinct target is then queued or skipped with a reason
//! (never-block ranges, allowlist, too broad, expired, covered by a network blocked by the same request).
//! More distinct targets (unparseable texts included) than `PORTCULLIS_MAX_TARGETS` refuses the whole
//! request, whatever its intent. The block's expiry comes from, in order:
//! `PortcullisBlockFor` (or the manual `ttl`), a threat-intelligence `ValidUntil`, the severity's default;
//! it is capped at `PORTCULLIS_MAX_TTL`. An unblock's expiry is now + `PORTCULLIS_MAX_TTL`: after that, every
//! block it could lift has expired anyway.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use queue_message::{format_duration, Action, NeverBlock, Target, TargetError};
use serde::Serialize;

use crate::alert::{Alert, Intent, Kind, Severity};

/// Block lifetimes per severity and the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlTable {
    /// Informational severity.
    pub informational: Duration,
    /// Low severity.
    pub low: Duration,
    /// Medium severity, and payloads without a severity we understand.
    pub medium: Duration,
    /// High severity.
    pub high: Duration,
    /// No block lasts longer; also the lifetime of unblock messages.
    pub max: Duration,
}

impl Default for TtlTable {
    fn default() -> Self {
        Self {
            informational: Duration::days(1),
            low: Duration::days(3),
            medium: Duration::days(7),
            high: Duration::days(30),
            max: Duration::days(90),
        }
    }
}

impl TtlTable {
    /// The default lifetime for a severity (unknown → Medium).
    pub fn for_severity(&self, severity: Option<Severity>) -> Duration {
        match severity {
            Some(Severity::Informational) => self.informational,
            Some(Severity::Low) => self.low,
            Some(Severity::Medium) | None => self.medium,
            Some(Severity::High) => self.high,
        }
    }
}

/// The whole policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Ranges that may never be blocked.
    pub never: NeverBlock,
    /// Lifetimes.
    pub ttl: TtlTable,
    /// Most distinct targets one request may name.
    pub max_targets: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            never: NeverBlock::default(),
            ttl: TtlTable::default(),
            max_targets: 1000,
        }
    }
}

/// Queued or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In a message (once the messages are in every queue).
    Queued,
    /// Not queued; see the reason.
    Skipped,
}

/// What happened to one target (or one unparseable text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetOutcome {
    /// The text as found in the payload (first occurrence).
    pub input: String,
    /// The canonical target, when the text parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Queued or skipped.
    pub status: Status,
    /// Machine-readable reason for a skip: `invalid`, `host-bits-set`, `special-purpose`, `allowlisted`,
    /// `too-broad`, `expired`, `no-action`, `covered` (a block of a network in the same request already
    /// blocks it; the detail names the network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Human-readable detail for a skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where the text was found.
    pub found_in: &'static str,
}

/// What will be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Block, unblock, or nothing to queue.
    pub action: Option<Action>,
    /// Targets to queue, canonical and distinct, in order of appearance.
    pub targets: Vec<Target>,
    /// One entry per distinct target or unparseable text.
    pub outcomes: Vec<TargetOutcome>,
    /// When the messages' blocks end (or the unblock stops mattering).
    pub expires_at: Option<DateTime<Utc>>,
    /// Where `expires_at` came from, for the response.
    pub expiry_basis: Option<String>,
    /// Why nothing is queued, for intents that queue nothing.
    pub no_action: Option<String>,
}

/// More distinct targets than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request names {found} distinct targets (unparseable texts included); at most {max} are allowed (PORTCULLIS_MAX_TARGETS)")]
pub struct TooManyTargets {
    /// Distinct targets and distinct unparseable texts found.
    pub found: usize,
    /// The limit.
    pub max: usize,
}

impl Policy {
    /// Applies the policy to `alert` at time `now` (whole seconds are used).
    pub fn plan(&self, alert: &Alert, now: DateTime<Utc>) -> Result<Plan, TooManyTargets> {
        let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        // De-duplicate: one outcome per canonical target, one per distinct unparseable text.
        let mut outcomes: Vec<TargetOutcome> = Vec::new();
        let mut valid: Vec<(Target, usize)> = Vec::new();
        let mut seen_targets: HashMap<Target, ()> = HashMap::new();
        let mut seen_invalid: HashMap<&str, ()> = HashMap::new();
        for candidate in &alert.candidates {
            match Target::parse(&candidate.text) {
                Ok(target) => {
                    if seen_targets.insert(target, ()).is_none() {
                        valid.push((target, outcomes.len()));
                        outcomes.push(TargetOutcome {
                            input: crate::alert::clip(candidate.text.trim(), 64),
                            target: Some(target.to_string()),
                            status: Status::Queued,
                            reason: None,
                            detail: None,
                            found_in: candidate.origin,
                        });
                    }
                }
                Err(err) => {
                    if seen_invalid.insert(candidate.text.as_str(), ()).is_none() {
                        let reason = match err {
                            TargetError::HostBitsSet { .. } => "host-bits-set",
                            TargetError::Syntax(_) => "invalid",
                        };
                        outcomes.push(TargetOutcome {
                            input: crate::alert::clip(&candidate.text, 64),
                            target: None,
                            status: Status::Skipped,
                            reason: Some(reason),
                            detail: Some(crate::alert::clip(&err.to_string(), 160)),
                            found_in: candidate.origin,
                        });
                    }
                }
            }
        }

        let mut plan = Plan {
            action: None,
            targets: Vec::new(),
            outcomes,
            expires_at: None,
            expiry_basis: None,
            no_action: None,
        };
        // Unparseable texts count too: each one is echoed in the answer, so they must be bounded as well.
        // A capped extraction stopped counting: the payload names more texts than any allowed request.
        let distinct = plan.outcomes.len();
        if distinct > self.max_targets || alert.capped {
            return Err(TooManyTargets {
                found: distinct.max(self.max_targets.saturating_add(1)),
                max: self.max_targets,
            });
        }
        let action = match &alert.intent {
            Intent::Nothing(why) => {
                for (_, i) in &valid {
                    skip(&mut plan.outcomes[*i], "no-action", why.clone());
                }
                plan.no_action = Some(why.clone());
                return Ok(plan);
            }
            Intent::Block => Action::Block,
            Intent::Unblock => Action::Unblock,
        };
        let (expires_at, basis) = match action {
            Action::Block => self.block_expiry(alert, now),
            Action::Unblock => (
                add(now, self.ttl.max),
                format!(
                    "unblock: PORTCULLIS_MAX_TTL {}, after which any block it could lift has expired",
                    format_duration(self.ttl.max)
                ),
            ),
        };
        plan.action = Some(action);
        plan.expires_at = Some(expires_at);
        plan.expiry_basis = Some(basis);
        let expired = expires_at <= now;
        let mut allowed = Vec::new();
        for (target, i) in valid {
            let outcome = &mut plan.outcomes[i];
            if expired {
                skip(
                    outcome,
                    "expired",
                    format!("the block would end at {expires_at}, which has passed"),
                );
                continue;
            }
            match self.never.check(&target) {
                Ok(()) => allowed.push((target, i)),
                Err(refusal) => skip(outcome, refusal.code(), refusal.to_string()),
            }
        }
        for &(target, i) in &allowed {
            // A block of a network already blocks its addresses: queue the network only. Not for an
            // unblock, which must lift a host block and a network block alike.
            let covering = (action == Action::Block)
                .then(|| {
                    allowed
                        .iter()
                        .find(|(other, _)| *other != target && other.contains(&target))
                })
                .flatten();
            match covering {
                Some((network, _)) => skip(
                    &mut plan.outcomes[i],
                    "covered",
                    format!("covered by {network}, also queued by this request"),
                ),
                None => plan.targets.push(target),
            }
        }
        Ok(plan)
    }

    fn block_expiry(&self, alert: &Alert, now: DateTime<Utc>) -> (DateTime<Utc>, String) {
        let cap = add(now, self.ttl.max);
        let capped = |basis: String| {
            (
                cap,
                format!(
                    "{basis}, capped by PORTCULLIS_MAX_TTL {}",
                    format_duration(self.ttl.max)
                ),
            )
        };
        // Durations are clamped to the cap BEFORE they are added to `now`: a payload's duration may be
        // far longer than a `DateTime` can hold.
        let relative = |d: Duration, basis: String| {
            if d > self.ttl.max {
                capped(basis)
            } else {
                (add(now, d), basis)
            }
        };
        if let Some(d) = alert.details.block_for {
            let name = if alert.kind == Kind::Manual {
                "ttl"
            } else {
                "PortcullisBlockFor"
            };
            return relative(d, format!("{name} {}", format_duration(d)));
        }
        if let Some(until) = alert.details.valid_until {
            // Whole seconds: the wire format has no fractions.
            let end = DateTime::from_timestamp(until.timestamp(), 0).unwrap_or(until);
            let basis = format!(
                "ValidUntil {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            return if end > cap {
                capped(basis)
            } else {
                (end, basis)
            };
        }
        let d = self.ttl.for_severity(alert.severity);
        let sev = alert
            .severity
            .map_or("unknown (as Medium)", Severity::as_str);
        relative(d, format!("severity {sev}: {}", format_duration(d)))
    }
}

/// `now + d`, saturating at the latest representable time instead of panicking. `now` is whole seconds
/// and durations from settings and payloads are whole milliseconds, so the result is truncated to seconds.
fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let end = now
        .checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    DateTime::from_timestamp(end.timestamp(), 0).unwrap_or(end)
}

fn skip(outcome: &mut TargetOutcome, reason: &'static str, detail: String) {
    outcome.status = Status::Skipped;
    outcome.reason = Some(reason);
    outcome.detail = Some(detail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Candidate, Details};
    use chrono::TimeZone;
    use queue_message::Source;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap()
    }

    fn alert(intent: Intent, texts: &[&str]) -> Alert {
        Alert {
            kind: Kind::SentinelIncident,
            intent,
            source: Source::default(),
            reason: "r".into(),
            severity: Some(Severity::High),
            details: Details::default(),
            candidates: texts
                .iter()
                .map(|t| Candidate {
                    text: t.to_string(),
                    origin: "test",
                })
                .collect(),
            capped: false,
        }
    }

    fn policy() -> Policy {
        Policy {
            never: NeverBlock::new(vec!["40.0.0.0/24".parse().unwrap()], vec![], 16, 32),
            ..Policy::default()
        }
    }

    #[test]
    fn normalises_deduplicates_and_explains() {
        let a = alert(
            Intent::Block,
            &[
                "23.97.60.214",
                "::ffff:23.97.60.214",
                " 23.97.60.214",
                "10.0.0.1",
                "40.0.0.9",
                "52.0.0.1/8",
                "52.0.0.0/8",
                "bogus",
                "bogus",
                "2603:1030::/48",
                "2603::/24",
            ],
        );
        let plan = policy().plan(&a, now()).unwrap();
        let queued: Vec<String> = plan.targets.iter().map(ToString::to_string).collect();
        assert_eq!(queued, ["23.97.60.214", "2603:1030::/48"]);
        let reasons: Vec<_> = plan
            .outcomes
            .iter()
            .map(|o| (o.input.as_str(), o.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("23.97.60.214", None),
                ("10.0.0.1", Some("special-purpose")),
                ("40.0.0.9", Some("allowlisted")),
                ("52.0.0.1/8", Some("host-bits-set")),
                ("52.0.0.0/8", Some("too-broad")),
                ("bogus", Some("invalid")),
                ("2603:1030::/48", None),
                ("2603::/24", Some("too-broad")),
            ]
        );
        assert_eq!(plan.action, Some(Action::Block));
        assert_eq!(plan.expires_at, Some(now() + Duration::days(30)));
    }

    #[test]
    fn expiry_precedence_and_cap() {
        let mut a = alert(Intent::Block, &["23.97.60.214"]);
        a.details.valid_until = Some(now() + Duration::days(10));
        assert_eq!(
            policy().plan(&a, now()).unwrap().expires_at,
            Some(now() + Duration::days(10))
        );
        a.details.block_for = Some(Duration::hours(6));
        assert_eq!(
            policy().plan(&a, now()).unwrap().expires_at,
            Some(now() + Duration::hours(6))
        );
        a.details.block_for = Some(Duration::days(365));
        let plan = policy().plan(&a, now()).unwrap();
        assert_eq!(plan.expires_at, Some(now() + Duration::days(90)));
        assert!(plan.expiry_basis.unwrap().contains("capped"));
        a.details.block_for = None;
        a.details.valid_until = None;
        a.severity = None;
        assert_eq!(
            policy().plan(&a, now()).unwrap().expires_at,
            Some(now() + Duration::days(7))
        );
    }

    #[test]
    fn huge_durations_are_capped_before_they_reach_the_clock() {
        // `now + d` overflowed chrono (a panic) before the cap was applied.
        let mut a = alert(Intent::Block, &["23.97.60.214"]);
        for d in [
            Duration::MAX,
            Duration::days(36_525),
            Duration::days(90) + Duration::seconds(1),
        ] {
            a.details.block_for = Some(d);
            let plan = policy().plan(&a, now()).unwrap();
            assert_eq!(plan.expires_at, Some(now() + Duration::days(90)));
            assert!(plan.expiry_basis.unwrap().contains("capped"));
        }
        a.details.block_for = None;
        a.details.valid_until = Some(DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            policy().plan(&a, now()).unwrap().expires_at,
            Some(now() + Duration::days(90))
        );
        let p = Policy {
            ttl: TtlTable {
                high: Duration::MAX,
                max: Duration::MAX,
                ..TtlTable::default()
            },
            ..policy()
        };
        a.details.valid_until = None;
        let plan = p.plan(&a, now()).unwrap();
        assert!(plan.expires_at.unwrap() > now());
        let plan = p
            .plan(&alert(Intent::Unblock, &["23.97.60.214"]), now())
            .unwrap();
        assert!(plan.expires_at.unwrap() > now());
    }

    #[test]
    fn a_past_valid_until_queues_nothing() {
        let mut a = alert(Intent::Block, &["23.97.60.214"]);
        a.details.valid_until = Some(now() - Duration::days(1));
        let plan = policy().plan(&a, now()).unwrap();
        assert!(plan.targets.is_empty());
        assert_eq!(plan.outcomes[0].reason, Some("expired"));
    }

    #[test]
    fn unblock_lasts_the_max_ttl_and_nothing_queues_nothing() {
        let plan = policy()
            .plan(&alert(Intent::Unblock, &["23.97.60.214"]), now())
            .unwrap();
        assert_eq!(plan.action, Some(Action::Unblock));
        assert_eq!(plan.expires_at, Some(now() + Duration::days(90)));
        assert_eq!(plan.targets.len(), 1);
        let plan = policy()
            .plan(
                &alert(Intent::Nothing("closed".into()), &["23.97.60.214"]),
                now(),
            )
            .unwrap();
        assert_eq!(plan.action, None);
        assert!(plan.targets.is_empty());
        assert_eq!(plan.outcomes[0].reason, Some("no-action"));
    }

    #[test]
    fn addresses_inside_a_queued_network_are_covered() {
        let a = alert(
            Intent::Block,
            &[
                "2a01:111:f400::1",
                "2a01:111:f400::/48",
                "23.97.60.214",
                "23.97.60.0/24",
                "23.97.61.0/24",
                "23.97.61.7",
                "40.0.0.9",
            ],
        );
        let plan = policy().plan(&a, now()).unwrap();
        let queued: Vec<String> = plan.targets.iter().map(ToString::to_string).collect();
        assert_eq!(
            queued,
            ["2a01:111:f400::/48", "23.97.60.0/24", "23.97.61.0/24"]
        );
        let covered: Vec<_> = plan
            .outcomes
            .iter()
            .filter(|o| o.reason == Some("covered"))
            .map(|o| (o.input.as_str(), o.detail.as_deref().unwrap()))
            .collect();
        assert_eq!(covered.len(), 3);
        assert!(covered[0].1.contains("2a01:111:f400::/48"), "{covered:?}");
        assert!(covered[2].1.contains("23.97.61.0/24"), "{covered:?}");
        // A network that is itself skipped covers nothing.
        let a = alert(
            Intent::Block,
            &["40.0.0.0/24", "40.0.0.9", "52.0.0.0/8", "52.1.2.3"],
        );
        let p = Policy {
            never: NeverBlock::new(vec!["40.0.0.0/24".parse().unwrap()], vec![], 16, 32),
            ..Policy::default()
        };
        let queued: Vec<String> = p
            .plan(&a, now())
            .unwrap()
            .targets
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(queued, ["52.1.2.3"]);
        // An unblock lifts both: a host may have been blocked on its own.
        let plan = policy()
            .plan(
                &alert(Intent::Unblock, &["23.97.60.214", "23.97.60.0/24"]),
                now(),
            )
            .unwrap();
        assert_eq!(plan.targets.len(), 2);
    }

    #[test]
    fn unparseable_texts_count_toward_the_limit_and_are_clipped() {
        // Review finding D5: 100,000 invalid texts made a 14 MB answer.
        let texts: Vec<String> = (0..5)
            .map(|i| format!("bogus-{i}-{}", "x".repeat(500)))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let p = Policy {
            max_targets: 4,
            ..policy()
        };
        assert_eq!(
            p.plan(&alert(Intent::Block, &refs), now()),
            Err(TooManyTargets { found: 5, max: 4 })
        );
        assert_eq!(
            p.plan(&alert(Intent::Nothing("closed".into()), &refs), now()),
            Err(TooManyTargets { found: 5, max: 4 })
        );
        let plan = p.plan(&alert(Intent::Block, &refs[..4]), now()).unwrap();
        for outcome in &plan.outcomes {
            assert!(outcome.input.chars().count() <= 100, "{}", outcome.input);
            assert!(outcome.detail.as_ref().unwrap().chars().count() <= 200);
        }
    }

    #[test]
    fn too_many_distinct_targets_refuse_the_request() {
        let texts: Vec<String> = (0..5).map(|i| format!("23.97.60.{i}")).collect();
        let refs: Vec<&str> = texts
            .iter()
            .map(String::as_str)
            .chain(["23.97.60.0"])
            .collect();
        let p = Policy {
            max_targets: 4,
            ..policy()
        };
        assert_eq!(
            p.plan(&alert(Intent::Block, &refs), now()),
            Err(TooManyTargets { found: 5, max: 4 })
        );
        let p = Policy {
            max_targets: 5,
            ..policy()
        };
        assert!(p.plan(&alert(Intent::Block, &refs), now()).is_ok());
    }

    /// Issue 9 item 10: an extraction that stopped at its cap is refused even though it handed over
    /// fewer than `max_targets` distinct texts.
    #[test]
    fn a_capped_extraction_is_refused() {
        let mut capped = alert(Intent::Block, &["23.97.60.1"]);
        capped.capped = true;
        assert_eq!(
            policy().plan(&capped, now()),
            Err(TooManyTargets {
                found: 1001,
                max: 1000
            })
        );
    }
}
