//! The `blocks` function's manual API → [`Alert`].
//!
//! `{"action": "block"|"unblock", "targets": ["198.51.100.7", "2001:db8::/48", …], "ttl": "P1D",
//! "reason": "…"}`. Stricter than the alert kinds, because a person wrote it: unknown fields, an empty or
//! malformed target list, a bad `ttl` or a `ttl` on an unblock are refused with 422 and nothing is queued.
//! Targets that parse but may not be blocked (private space, allowlist) are skipped with a reason, as for
//! alerts.

use queue_message::{parse_duration, Source, Target};
use serde::Deserialize;

use crate::alert::{clip, Alert, Candidate, Details, Intent, Kind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    action: RequestAction,
    targets: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RequestAction {
    Block,
    Unblock,
}

/// Why a manual request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// Not JSON at all (400).
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    /// JSON, but not a valid request (422); each problem is listed.
    #[error("invalid block request: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Longest reason kept, in characters.
const MAX_REASON: usize = 500;

/// Parses and validates a manual request.
pub fn parse(body: &[u8]) -> Result<Alert, ManualError> {
    let request: Request = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            ManualError::Invalid(vec![err.to_string()])
        } else {
            ManualError::Json(err)
        }
    })?;
    let mut problems = Vec::new();
    if request.targets.is_empty() {
        problems.push("`targets` is empty".to_owned());
    }
    for text in &request.targets {
        if let Err(err) = Target::parse(text) {
            problems.push(format!("targets: {}", clip(&err.to_string(), 160)));
        }
    }
    let mut details = Details::default();
    match (request.action, &request.ttl) {
        (RequestAction::Unblock, Some(_)) => {
            problems.push("`ttl` has no meaning for an unblock".to_owned())
        }
        (RequestAction::Block, Some(ttl)) => match parse_duration(ttl) {
            Ok(d) if d > chrono::Duration::zero() => details.block_for = Some(d),
            Ok(_) => problems.push("`ttl` must be positive".to_owned()),
            Err(err) => problems.push(format!("ttl: {err}")),
        },
        (_, None) => {}
    }
    if !problems.is_empty() {
        problems.truncate(50);
        return Err(ManualError::Invalid(problems));
    }
    let (intent, verb) = match request.action {
        RequestAction::Block => (Intent::Block, "block"),
        RequestAction::Unblock => (Intent::Unblock, "unblock"),
    };
    let reason = match request.reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() => clip(r, MAX_REASON),
        _ => format!("manual {verb}"),
    };
    Ok(Alert {
        kind: Kind::Manual,
        intent,
        source: Source {
            kind: Kind::Manual.as_str().to_owned(),
            ..Source::default()
        },
        reason,
        severity: None,
        details,
        candidates: request
            .targets
            .into_iter()
            .map(|text| Candidate {
                text,
                origin: "targets",
            })
            .collect(),
        // The manual API names its targets directly; the plan bounds them (PORTCULLIS_MAX_TARGETS).
        capped: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(body: &str) -> Vec<String> {
        match parse(body.as_bytes()) {
            Err(ManualError::Invalid(problems)) => problems,
            other => panic!("expected Invalid for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_block_with_ttl() {
        let a = parse(br#"{"action":"block","targets":["198.51.100.7","2001:db8::/48"],"ttl":"P1D","reason":"scanner"}"#).unwrap();
        assert_eq!(a.intent, Intent::Block);
        assert_eq!(a.details.block_for, Some(chrono::Duration::days(1)));
        assert_eq!(a.reason, "scanner");
        assert_eq!(a.source.kind, "manual");
        assert_eq!(a.candidates.len(), 2);
    }

    #[test]
    fn an_unblock_without_reason() {
        let a = parse(br#"{"action":"unblock","targets":["198.51.100.7"]}"#).unwrap();
        assert_eq!(a.intent, Intent::Unblock);
        assert_eq!(a.reason, "manual unblock");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(
            invalid(r#"{"action":"drop","targets":["1.2.3.4"]}"#)[0].contains("unknown variant")
        );
        assert!(
            invalid(r#"{"action":"block","targets":["1.2.3.4"],"extra":1}"#)[0]
                .contains("unknown field")
        );
        assert!(invalid(r#"{"targets":["1.2.3.4"]}"#)[0].contains("missing field `action`"));
        assert_eq!(
            invalid(r#"{"action":"block","targets":[]}"#),
            ["`targets` is empty"]
        );
        let p = invalid(r#"{"action":"block","targets":["1.2.3.4/24","x"],"ttl":"P1M"}"#);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("host bits"));
        assert!(
            invalid(r#"{"action":"unblock","targets":["1.2.3.4"],"ttl":"P1D"}"#)[0]
                .contains("no meaning")
        );
        assert!(
            invalid(r#"{"action":"block","targets":["1.2.3.4"],"ttl":"PT0S"}"#)[0]
                .contains("positive")
        );
    }

    #[test]
    fn syntax_errors_are_not_validation_errors() {
        assert!(matches!(parse(b"{\"action\":"), Err(ManualError::Json(_))));
        assert!(matches!(parse(b"nope"), Err(ManualError::Json(_))));
    }
}
