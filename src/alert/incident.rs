//! Sentinel incidents: the Logic App incident trigger body (`objectSchemaType: "Incident"`, the incident
//! resource under `object`) or the incident ARM resource itself.
//!
//! IPs come from `properties.relatedEntities` (`kind` "Ip", `properties.address`) and from the entities of
//! `properties.alerts` when the trigger includes them. A `Closed` incident classified `FalsePositive` or
//! `BenignPositive` asks to *unblock* its IPs; `Closed` with any other classification asks for nothing new.
//!
//! **Defender portal.** Correlation there can merge alerts of other rules (with unrelated public IPs) into
//! a Portcullis incident, and closes the incidents it merges away. So when `PORTCULLIS_RULE_IDS` is set and
//! the incident carries alerts, only the entities of alerts from those rules count, and `relatedEntities`
//! (the union of every alert's entities, so not attributable) is used only when every alert is from those
//! rules. An incident without alerts keeps the behaviour above. A closure that the merge made (status or
//! label `Redirected`, or a classification comment about a merge) never unblocks.
//!
//! Property names are matched case-insensitively: Microsoft's own playbooks spell `Alerts` as well as
//! `alerts`.

use queue_message::Source;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{clip, entities, Alert, Collector, Details, ExtractConfig, Intent, Kind, Severity};
use crate::lenient::{LList, LObj, LStr};

/// The incident resource (`object` in the trigger body).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Resource {
    pub(crate) id: LStr,
    pub(crate) properties: LObj<Properties>,
}

/// The incident's `properties`, as far as Portcullis cares. Keys match in any case (see
/// [`PropertiesVisitor`]).
#[derive(Debug, Default)]
pub(crate) struct Properties {
    title: LStr,
    severity: LStr,
    status: LStr,
    classification: LStr,
    classification_comment: LStr,
    incident_url: LStr,
    incident_number: LStr,
    labels: LList<Label>,
    related_entities: LList<RelatedEntity>,
    alerts: Value,
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PropertiesVisitor)
    }
}

/// Reads [`Properties`] with case-insensitive keys (issue 9 item 16: `Alerts` appears in Microsoft's
/// playbooks); serde's derive only knows fixed spellings. A key given twice in different cases: the last
/// one wins. Other keys are skipped without being built.
struct PropertiesVisitor;

impl<'de> Visitor<'de> for PropertiesVisitor {
    type Value = Properties;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the incident's properties")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Properties, A::Error> {
        let mut p = Properties::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.to_ascii_lowercase().as_str() {
                "title" => p.title = map.next_value()?,
                "severity" => p.severity = map.next_value()?,
                "status" => p.status = map.next_value()?,
                "classification" => p.classification = map.next_value()?,
                "classificationcomment" => p.classification_comment = map.next_value()?,
                "incidenturl" => p.incident_url = map.next_value()?,
                "incidentnumber" => p.incident_number = map.next_value()?,
                "labels" => p.labels = map.next_value()?,
                "relatedentities" => p.related_entities = map.next_value()?,
                "alerts" => p.alerts = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// One incident label.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Label {
    #[serde(rename = "labelName")]
    label_name: LStr,
}

/// One item of `relatedEntities` (an entity ARM resource).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RelatedEntity {
    kind: LStr,
    properties: LObj<EntityProperties>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EntityProperties {
    address: LStr,
}

/// Builds the [`Alert`] of an incident.
pub(crate) fn from_resource(resource: Resource, config: &ExtractConfig) -> Alert {
    let props = resource.properties.0.unwrap_or_default();
    let merged = is_merge(&props);
    let alerts: &[Value] = match &props.alerts {
        Value::Array(alerts) => alerts,
        _ => &[],
    };
    let mut candidates = Collector::new(config.max_candidates);
    let mut details = Details::default();
    // With rule ids and alerts, only alerts from those rules count (see the module doc).
    let filter = !config.rule_ids.is_empty() && !alerts.is_empty();
    let (ours, foreign): (Vec<&Value>, Vec<&Value>) = alerts
        .iter()
        .partition(|alert| !filter || is_from_rules(alert, &config.rule_ids));
    if foreign.is_empty() {
        for entity in props.related_entities.0 {
            if entity
                .kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("ip"))
            {
                if let Some(address) = entity.properties.0.and_then(|p| p.address.take()) {
                    candidates.push(&address, "relatedEntities");
                }
            }
        }
    } else {
        details.notes.push(format!(
            "{} of {} alerts are not from PORTCULLIS_RULE_IDS (merged by correlation?): their entities and relatedEntities are ignored",
            foreign.len(),
            alerts.len()
        ));
    }
    for alert in &ours {
        entities::collect(alert, "alerts", &mut candidates);
        scan_alert_details(alert, &mut details);
    }
    let (candidates, capped) = candidates.finish();

    let status = props.status.as_deref().unwrap_or("New");
    let classification = props.classification.as_deref();
    let intent = if merged {
        Intent::Nothing(
            "incident merged into another by correlation: its blocks stay (a merge never unblocks)"
                .to_owned(),
        )
    } else if status.eq_ignore_ascii_case("closed") {
        match classification {
            Some(c)
                if c.eq_ignore_ascii_case("FalsePositive")
                    || c.eq_ignore_ascii_case("BenignPositive") =>
            {
                Intent::Unblock
            }
            other => Intent::Nothing(format!(
                "incident closed as {}: nothing new to do",
                clip(other.unwrap_or("unclassified"), 40)
            )),
        }
    } else {
        Intent::Block
    };

    let title = props.title.as_deref().unwrap_or("untitled");
    let reason = match props.incident_number.as_deref() {
        Some(n) => format!("Sentinel incident {}: {}", clip(n, 20), clip(title, 200)),
        None => format!("Sentinel incident: {}", clip(title, 200)),
    };
    Alert {
        kind: Kind::SentinelIncident,
        intent,
        severity: props.severity.as_deref().and_then(Severity::parse),
        source: Source {
            kind: Kind::SentinelIncident.as_str().to_owned(),
            id: resource.id.take().map(|s| clip(&s, 512)),
            url: props.incident_url.take().map(|s| clip(&s, 1024)),
            rule: props.title.take().map(|s| clip(&s, 200)),
            severity: props.severity.take().map(|s| clip(&s, 40)),
        },
        reason,
        details,
        candidates,
        capped,
    }
}

/// True for a closure made by a correlation merge: status `Redirected` (the Defender/Graph status of an
/// incident merged into another), a `Redirected` or `Merged` label, or a classification comment that says
/// the incident was merged or redirected. Such an incident's alerts live on in the surviving incident, so
/// however it is classified, its closure must not lift blocks.
fn is_merge(props: &Properties) -> bool {
    let says_merge = |text: &str| {
        let text = text.to_ascii_lowercase();
        text.contains("merged") || text.contains("redirected")
    };
    props
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("redirected"))
        || props
            .labels
            .0
            .iter()
            .filter_map(|l| l.label_name.as_deref())
            .any(|l| l.eq_ignore_ascii_case("redirected") || l.eq_ignore_ascii_case("merged"))
        || props
            .classification_comment
            .as_deref()
            .is_some_and(says_merge)
}

/// True when `alert` was raised by one of `rule_ids` (lower-case GUIDs, [`normalise_rule_id`]): its
/// `AlertType` ends in `_<rule guid>` (scheduled and NRT rules), or its extended properties /
/// `additionalData` list the rule under `Analytic Rule Ids`.
fn is_from_rules(alert: &Value, rule_ids: &[String]) -> bool {
    let mut found = false;
    let mut consider = |text: &str| {
        if let Some(id) = normalise_rule_id(text.rsplit('_').next().unwrap_or(text)) {
            found |= rule_ids.contains(&id);
        }
    };
    let Value::Object(map) = alert else {
        return false;
    };
    let mut scan = |obj: &serde_json::Map<String, Value>| {
        if let Some(Value::String(kind)) = super::get_ci(obj, "AlertType") {
            consider(kind);
        }
        for bag in ["ExtendedProperties", "additionalData"] {
            let bag = match super::get_ci(obj, bag) {
                Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
                Some(other) => other.clone(),
                None => continue,
            };
            let Value::Object(bag) = bag else { continue };
            for key in ["Analytic Rule Ids", "AnalyticRuleIds"] {
                match super::get_ci(&bag, key) {
                    Some(Value::String(text)) => match serde_json::from_str::<Vec<String>>(text) {
                        Ok(ids) => ids.iter().for_each(|id| consider(id)),
                        Err(_) => text.split(',').for_each(&mut consider),
                    },
                    Some(Value::Array(ids)) => {
                        ids.iter().filter_map(Value::as_str).for_each(&mut consider);
                    }
                    _ => {}
                }
            }
        }
    };
    scan(map);
    if let Some(Value::Object(props)) = super::get_ci(map, "properties") {
        scan(props);
    }
    found
}

/// An analytics rule id as the lower-case hyphenated GUID, from the GUID itself or the rule's resource id
/// (`…/alertRules/<guid>`); `None` when it is neither.
pub fn normalise_rule_id(text: &str) -> Option<String> {
    let last = text.trim().trim_end_matches('/').rsplit('/').next()?;
    uuid::Uuid::parse_str(last.trim())
        .ok()
        .map(|id| id.hyphenated().to_string())
}

/// Custom details of one alert of an incident, wherever the trigger puts them.
fn scan_alert_details(alert: &Value, details: &mut Details) {
    let Value::Object(map) = alert else { return };
    let mut scan = |obj: &serde_json::Map<String, Value>| {
        for key in ["ExtendedProperties", "additionalData", "customDetails"] {
            if let Some(bag) = super::get_ci(obj, key) {
                details.scan_bag(bag);
            }
        }
    };
    scan(map);
    if let Some(Value::Object(props)) = super::get_ci(map, "properties") {
        scan(props);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ExtractConfig};
    use super::*;
    use serde_json::json;

    fn alert(body: &Value) -> Alert {
        parse(body.to_string().as_bytes(), &ExtractConfig::default()).unwrap()
    }

    #[test]
    fn an_active_incident_blocks_its_ips() {
        let a = alert(&crate::testdata::incident_trigger("Active", None));
        assert_eq!(a.kind, Kind::SentinelIncident);
        assert_eq!(a.intent, Intent::Block);
        let texts: Vec<_> = a.candidates.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "23.97.60.214",
                "10.3.2.8",
                "2a01:111:f400::/48",
                "52.178.17.2"
            ]
        );
        assert_eq!(a.severity, Some(Severity::High));
        assert_eq!(a.details.block_for, Some(chrono::Duration::days(2)));
        assert!(a
            .source
            .id
            .as_deref()
            .unwrap()
            .ends_with("/incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5"));
        assert!(a
            .source
            .url
            .as_deref()
            .unwrap()
            .starts_with("https://portal.azure.com/"));
        assert_eq!(a.source.rule.as_deref(), Some("My incident"));
        assert_eq!(a.reason, "Sentinel incident 3177: My incident");
    }

    #[test]
    fn closed_incidents() {
        for (classification, want) in [
            (Some("FalsePositive"), Some(Intent::Unblock)),
            (Some("BenignPositive"), Some(Intent::Unblock)),
            (Some("TruePositive"), None),
            (Some("Undetermined"), None),
            (None, None),
        ] {
            let a = alert(&crate::testdata::incident_trigger("Closed", classification));
            match want {
                Some(intent) => assert_eq!(a.intent, intent, "{classification:?}"),
                None => assert!(matches!(a.intent, Intent::Nothing(_)), "{classification:?}"),
            }
        }
    }

    #[test]
    fn the_arm_example_as_is_is_a_closed_false_positive() {
        let a = alert(&crate::testdata::incident_resource());
        assert_eq!(a.kind, Kind::SentinelIncident);
        assert_eq!(a.intent, Intent::Unblock);
        assert!(a.candidates.is_empty());
    }

    #[test]
    fn odd_shapes_do_not_fail() {
        for object in [
            json!(null),
            json!([]),
            json!({"properties": {"relatedEntities": "x", "alerts": {"a": 1}, "status": 5}}),
            json!({"properties": {"relatedEntities": [1, null, {"kind": 1}, {"kind": "Ip", "properties": []}]}}),
        ] {
            let body = json!({"objectSchemaType": "incident", "object": object});
            let a = alert(&body);
            assert_eq!(a.intent, Intent::Block);
            assert!(a.candidates.is_empty());
        }
    }

    const OUR_RULE: &str = "2f1e9c4a-8b0d-4f3e-9a57-1c2d3e4f5a6b";

    fn merged_fixture() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/sentinel/sentinel-incident-trigger.merged-alerts-capital-Alerts.constructed.json"
        ))
        .unwrap()
    }

    fn with_rules(body: &Value, rules: &[&str]) -> Alert {
        let config = ExtractConfig {
            rule_ids: rules
                .iter()
                .map(|r| normalise_rule_id(r).unwrap())
                .collect(),
            ..ExtractConfig::default()
        };
        parse(body.to_string().as_bytes(), &config).unwrap()
    }

    fn texts(a: &Alert) -> Vec<&str> {
        a.candidates.iter().map(|c| c.text.as_str()).collect()
    }

    /// Issue 9 item 16: `properties.Alerts` (Microsoft's playbooks spell it so) was not read at all; the
    /// custom detail below exists only inside the alert.
    #[test]
    fn alerts_spelled_with_a_capital_are_read() {
        let a = alert(&merged_fixture());
        assert_eq!(
            a.details.valid_until,
            Some(chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 30, 0, 0, 0).unwrap())
        );
        assert_eq!(texts(&a), ["52.178.17.2", "40.112.72.205"]);
        // Any other case of any property works too.
        let mut shouted = merged_fixture();
        let props = shouted["object"]["properties"].as_object_mut().unwrap();
        let alerts = props.remove("Alerts").unwrap();
        props.insert("ALERTS".into(), alerts);
        props.remove("status");
        props.insert("STATUS".into(), "Closed".into());
        props.insert("Classification".into(), "FalsePositive".into());
        let a = alert(&shouted);
        assert_eq!(a.intent, Intent::Unblock);
        assert!(a.details.valid_until.is_some());
    }

    /// Issue 9 item 17: with PORTCULLIS_RULE_IDS, an incident that correlation merged with an unrelated
    /// alert blocks only the entities of the Portcullis alert (before: every IP of the incident).
    #[test]
    fn only_alerts_of_the_configured_rules_block() {
        let arm_id = format!("/subscriptions/x/resourceGroups/y/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/alertRules/{}", OUR_RULE.to_uppercase());
        for rule in [OUR_RULE, arm_id.as_str()] {
            let a = with_rules(&merged_fixture(), &[rule]);
            assert_eq!(a.intent, Intent::Block);
            assert_eq!(texts(&a), ["52.178.17.2"], "{rule}");
            assert!(
                a.details.notes[0].contains("1 of 2 alerts"),
                "{:?}",
                a.details.notes
            );
        }
        // An alert that names the rule only under `Analytic Rule Ids` counts as well.
        let mut body = merged_fixture();
        body["object"]["properties"]["Alerts"][0]["properties"]["alertType"] = "Scheduled".into();
        assert_eq!(texts(&with_rules(&body, &[OUR_RULE])), ["52.178.17.2"]);
        // No alert from the rules: nothing to block.
        let other = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
        assert!(with_rules(&merged_fixture(), &[other])
            .candidates
            .is_empty());
        // The same closure, classified false positive, unblocks only the Portcullis alert's IP.
        let mut closed = merged_fixture();
        closed["object"]["properties"]["status"] = "Closed".into();
        closed["object"]["properties"]["classification"] = "FalsePositive".into();
        let a = with_rules(&closed, &[OUR_RULE]);
        assert_eq!(
            (&a.intent, texts(&a)),
            (&Intent::Unblock, vec!["52.178.17.2"])
        );
    }

    #[test]
    fn every_alert_from_the_rules_or_no_alerts_keeps_related_entities() {
        let mut body = merged_fixture();
        body["object"]["properties"]["Alerts"]
            .as_array_mut()
            .unwrap()
            .truncate(1);
        body["object"]["properties"]["relatedEntities"][1]["properties"]["address"] =
            "52.178.17.9".into();
        let a = with_rules(&body, &[OUR_RULE]);
        assert_eq!(texts(&a), ["52.178.17.2", "52.178.17.9"]);
        assert!(a.details.notes.is_empty());
        let a = with_rules(&crate::testdata::incident_resource(), &[OUR_RULE]);
        assert_eq!(a.intent, Intent::Unblock);
        let mut no_alerts = merged_fixture();
        no_alerts["object"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("Alerts");
        assert_eq!(
            texts(&with_rules(&no_alerts, &[OUR_RULE])),
            ["52.178.17.2", "40.112.72.205"]
        );
    }

    /// Issue 9 item 17: a closure made by a correlation merge never unblocks, however it is classified.
    #[test]
    fn a_merge_closure_never_unblocks() {
        let closed = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut body = merged_fixture();
            let props = body["object"]["properties"].as_object_mut().unwrap();
            props.insert("status".into(), "Closed".into());
            props.insert("classification".into(), "BenignPositive".into());
            edit(props);
            alert(&body).intent
        };
        assert_eq!(
            closed(&|_| {}),
            Intent::Unblock,
            "the control case unblocks"
        );
        for edit in [
            &(|p: &mut serde_json::Map<String, Value>| {
                p.insert(
                    "labels".into(),
                    json!([{"labelName": "Redirected", "labelType": "System"}]),
                );
            }) as &dyn Fn(&mut serde_json::Map<String, Value>),
            &|p| {
                p.insert(
                    "classificationComment".into(),
                    "Incident was merged into incident 4212".into(),
                );
            },
            &|p| {
                p.insert("status".into(), "Redirected".into());
            },
        ] {
            assert!(matches!(closed(edit), Intent::Nothing(_)));
        }
    }

    #[test]
    fn rule_ids_are_normalised() {
        assert_eq!(
            normalise_rule_id(" 2F1E9C4A-8B0D-4F3E-9A57-1C2D3E4F5A6B "),
            Some(OUR_RULE.to_owned())
        );
        assert_eq!(
            normalise_rule_id(&format!(".../alertRules/{OUR_RULE}/")),
            Some(OUR_RULE.to_owned())
        );
        assert_eq!(normalise_rule_id("my rule"), None);
    }
}
