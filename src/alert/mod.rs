//! Vendor payloads → [`Alert`]: which kind of payload arrived, what it asks for (block, unblock or
//! nothing), where it came from, and every IP-like text it names.
//!
//! Detection is one pass over the body into a `Probe` that names the few fields of every kind we know;
//! serde skips the rest without building it. The kind-specific modules then turn the probe into an
//! [`Alert`]: `incident` (Sentinel incident trigger body or incident ARM resource), `security_alert`
//! (Sentinel alert trigger body or `SecurityAlert` table row), `azure_monitor` (common alert schema).
//! `entities` walks Sentinel entity graphs; `details` reads custom details and extended properties.
//! Nothing here decides what may be blocked: that is [`crate::plan`].

pub mod azure_monitor;
pub mod details;
pub mod entities;
pub mod incident;
pub mod security_alert;

use std::collections::HashSet;
use std::fmt;

use queue_message::Source;
use serde::Deserialize;
use serde_json::Value;

use crate::lenient::{LObj, LStr};
pub use details::Details;

/// The payload kinds the handler understands, as named in a message's `source.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sentinel incident (automation rule → forwarder playbook), or an incident ARM resource.
    SentinelIncident,
    /// Sentinel alert trigger body or `SecurityAlert` table row.
    SentinelAlert,
    /// Azure Monitor common alert schema (log search alert v2 with dimensions).
    AzureMonitor,
    /// The `blocks` function's manual API.
    Manual,
}

impl Kind {
    /// The `source.kind` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SentinelIncident => "sentinel-incident",
            Self::SentinelAlert => "sentinel-alert",
            Self::AzureMonitor => "azure-monitor",
            Self::Manual => "manual",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the `alerts` function understands, for the 422 answer to anything else.
pub const UNDERSTOOD: &[&str] = &[
    "sentinel-incident: a Sentinel incident trigger body (`objectSchemaType: \"Incident\"`) or an incident ARM resource",
    "sentinel-alert: a Sentinel alert trigger body or SecurityAlert row (`SystemAlertId`, `Entities`)",
    "azure-monitor: an Azure Monitor common alert schema payload (`schemaId: \"azureMonitorCommonAlertSchema\"`)",
];

/// What the payload asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Block the targets.
    Block,
    /// Lift this source's blocks (incident closed as a false or benign positive, manual unblock).
    Unblock,
    /// Accepted, nothing to queue; the text says why.
    Nothing(String),
}

/// Alert severity, as far as block lifetimes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Informational (Azure Monitor Sev4).
    Informational,
    /// Low (Azure Monitor Sev3).
    Low,
    /// Medium (Azure Monitor Sev2).
    Medium,
    /// High (Azure Monitor Sev0 and Sev1).
    High,
}

impl Severity {
    /// Reads Sentinel (`High`, …) and Azure Monitor (`Sev0`…`Sev4`) spellings, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "informational" | "info" | "sev4" | "verbose" => Some(Self::Informational),
            "low" | "sev3" => Some(Self::Low),
            "medium" | "sev2" | "warning" => Some(Self::Medium),
            "high" | "sev1" | "sev0" | "critical" | "error" => Some(Self::High),
            _ => None,
        }
    }

    /// The name used in responses and setting names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "Informational",
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
        }
    }
}

/// One IP-like text found in a payload, before any parsing or policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The text as found.
    pub text: String,
    /// Where it was found (for the response), e.g. `relatedEntities`.
    pub origin: &'static str,
}

/// A payload, understood: the kind-independent input of [`crate::plan`].
#[derive(Debug, Clone)]
pub struct Alert {
    /// Payload kind.
    pub kind: Kind,
    /// What it asks for.
    pub intent: Intent,
    /// Origin, copied into every message.
    pub source: Source,
    /// Human-readable reason, copied into every message.
    pub reason: String,
    /// Severity, when the payload has one we understand.
    pub severity: Option<Severity>,
    /// Custom details that change the block's lifetime.
    pub details: Details,
    /// Every distinct IP-like text found, in order of first appearance.
    pub candidates: Vec<Candidate>,
    /// Extraction stopped at [`ExtractConfig::max_candidates`] distinct texts: the payload names more, and
    /// the plan refuses it as too many targets.
    pub capped: bool,
}

/// Knobs of extraction.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// Azure Monitor dimension names (lower case) whose values are targets; empty = any dimension whose
    /// value parses as an IP address or network.
    pub ip_dimensions: Vec<String>,
    /// Most distinct IP-like texts one payload may name before extraction stops ([`Alert::capped`]).
    /// Every distinct text becomes at most one outcome, so this is set well above
    /// `PORTCULLIS_MAX_TARGETS` ([`ExtractConfig::for_max_targets`]): a payload is only cut short when it
    /// would be refused anyway, unless it spells each target several different ways.
    pub max_candidates: usize,
    /// `PORTCULLIS_RULE_IDS`: analytics rule ids (lower-case GUIDs, [`incident::normalise_rule_id`]) whose
    /// alerts may block; empty = every alert of an incident counts.
    pub rule_ids: Vec<String>,
}

impl ExtractConfig {
    /// Distinct texts allowed per allowed target: room for a target spelled several ways
    /// (`1.2.3.4`, `1.2.3.4/32`, `::ffff:1.2.3.4`, with spaces).
    pub const TEXTS_PER_TARGET: usize = 4;

    /// The cap that goes with a target limit.
    pub fn for_max_targets(max_targets: usize) -> Self {
        Self {
            ip_dimensions: Vec::new(),
            rule_ids: Vec::new(),
            max_candidates: max_targets
                .saturating_mul(Self::TEXTS_PER_TARGET)
                .saturating_add(1),
        }
    }
}

impl Default for ExtractConfig {
    /// No dimension filter; the cap that goes with the default of 1000 targets.
    fn default() -> Self {
        Self::for_max_targets(crate::plan::Policy::default().max_targets)
    }
}

/// Collects candidates: each distinct text once (first origin wins), at most `cap` of them. Extraction
/// stops adding, and the walks stop early, once it is full.
#[derive(Debug)]
pub(crate) struct Collector {
    out: Vec<Candidate>,
    seen: HashSet<String>,
    cap: usize,
    capped: bool,
}

impl Collector {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            out: Vec::new(),
            seen: HashSet::new(),
            cap,
            capped: false,
        }
    }

    /// Adds `text` unless it was seen before; past the cap, only records that the payload names more.
    pub(crate) fn push(&mut self, text: &str, origin: &'static str) {
        if self.seen.contains(text) {
            return;
        }
        if self.out.len() >= self.cap {
            self.capped = true;
            return;
        }
        self.seen.insert(text.to_owned());
        self.out.push(Candidate {
            text: text.to_owned(),
            origin,
        });
    }

    /// True once a text was refused for the cap: further walking cannot change the outcome.
    pub(crate) fn is_full(&self) -> bool {
        self.capped
    }

    /// The candidates and whether the cap was hit.
    pub(crate) fn finish(self) -> (Vec<Candidate>, bool) {
        (self.out, self.capped)
    }
}

/// Why a body is not an alert.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON (syntax error, truncated body, duplicate key, nesting too deep).
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but none of the kinds in [`UNDERSTOOD`].
    #[error("unknown payload kind")]
    UnknownKind,
}

/// The fields of every kind, read in one pass. Field names are case-sensitive, as the vendors send them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Probe {
    #[serde(rename = "objectSchemaType")]
    object_schema_type: LStr,
    object: LObj<incident::Resource>,
    #[serde(rename = "schemaId")]
    schema_id: LStr,
    data: LObj<azure_monitor::Data>,
    // Incident ARM resource posted as is.
    #[serde(rename = "type")]
    arm_type: LStr,
    id: LStr,
    properties: LObj<incident::Properties>,
    // Sentinel alert (trigger body or SecurityAlert row). Not `#[serde(flatten)]`: that buffers the whole
    // document and would double the cost of extraction.
    #[serde(rename = "Type")]
    pub(crate) alert_type_name: LStr,
    #[serde(rename = "SystemAlertId")]
    pub(crate) system_alert_id: LStr,
    #[serde(rename = "AlertDisplayName")]
    pub(crate) alert_display_name: LStr,
    #[serde(rename = "AlertName")]
    pub(crate) alert_name: LStr,
    #[serde(rename = "Severity")]
    pub(crate) severity: LStr,
    #[serde(rename = "AlertLink")]
    pub(crate) alert_link: LStr,
    #[serde(rename = "Entities")]
    pub(crate) entities: Value,
    #[serde(rename = "ExtendedProperties")]
    pub(crate) extended_properties: Value,
}

impl Probe {
    fn looks_like_an_alert(&self) -> bool {
        self.alert_type_name
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("SecurityAlert"))
            || self.system_alert_id.0.is_some()
            || !self.entities.is_null()
    }
}

/// Detects the kind of `body` and extracts what it says.
pub fn parse(body: &[u8], config: &ExtractConfig) -> Result<Alert, ParseError> {
    let probe: LObj<Probe> = serde_json::from_slice(body)?;
    let probe = probe.0.ok_or(ParseError::UnknownKind)?;
    let is = |field: &LStr, want: &str| {
        field
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };
    if is(&probe.object_schema_type, "Incident") {
        return Ok(incident::from_resource(
            probe.object.0.unwrap_or_default(),
            config,
        ));
    }
    if is(&probe.schema_id, "azureMonitorCommonAlertSchema") {
        return Ok(azure_monitor::from_data(
            probe.data.0.unwrap_or_default(),
            config,
        ));
    }
    let arm_incident = probe.arm_type.as_deref().is_some_and(|t| {
        t.to_ascii_lowercase()
            .ends_with("securityinsights/incidents")
    });
    if arm_incident {
        return Ok(incident::from_resource(
            incident::Resource {
                id: probe.id,
                properties: probe.properties,
            },
            config,
        ));
    }
    if probe.looks_like_an_alert() {
        return Ok(security_alert::from_probe(probe, config));
    }
    Err(ParseError::UnknownKind)
}

/// A string field of a JSON object, matching the key case-insensitively.
pub(crate) fn get_ci<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Shortens free text taken from payloads to `max` characters.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_are_refused() {
        for body in [
            r#"{}"#,
            r#"[]"#,
            r#""text""#,
            r#"{"hello":"world"}"#,
            r#"{"schemaId":"somethingElse","data":{}}"#,
            r#"{"objectSchemaType":"Bookmark"}"#,
        ] {
            assert!(
                matches!(
                    parse(body.as_bytes(), &ExtractConfig::default()),
                    Err(ParseError::UnknownKind)
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let Err(ParseError::Json(err)) = parse(b"{\n  \"a\": [1,\n}", &ExtractConfig::default())
        else {
            panic!("expected a JSON error");
        };
        assert_eq!((err.line(), err.column()), (3, 1));
    }

    #[test]
    fn severities() {
        assert_eq!(Severity::parse("HIGH"), Some(Severity::High));
        assert_eq!(Severity::parse("Sev0"), Some(Severity::High));
        assert_eq!(Severity::parse("Sev2"), Some(Severity::Medium));
        assert_eq!(Severity::parse("Sev3"), Some(Severity::Low));
        assert_eq!(Severity::parse("sev4"), Some(Severity::Informational));
        assert_eq!(Severity::parse("bogus"), None);
    }

    #[test]
    fn clip_respects_characters() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
