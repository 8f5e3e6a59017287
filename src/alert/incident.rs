//! Sentinel incidents: the Logic App incident trigger body (`objectSchemaType: "Incident"`, the incident
//! resource under `object`) or the incident ARM resource itself.
//!
//! IPs come from `properties.relatedEntities` (`kind` "Ip", `properties.address`) and from the entities of
//! `properties.alerts` when the trigger includes them. A `Closed` incident classified `FalsePositive` or
//! `BenignPositive` asks to *unblock* its IPs; `Closed` with any other classification asks for nothing new.

use queue_message::Source;
use serde::Deserialize;
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

/// The incident's `properties`, as far as Portcullis cares.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Properties {
    title: LStr,
    severity: LStr,
    status: LStr,
    classification: LStr,
    incident_url: LStr,
    incident_number: LStr,
    related_entities: LList<RelatedEntity>,
    alerts: Value,
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
    let mut candidates = Collector::new(config.max_candidates);
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
    let mut details = Details::default();
    if let Value::Array(alerts) = &props.alerts {
        for alert in alerts {
            entities::collect(alert, "alerts", &mut candidates);
            scan_alert_details(alert, &mut details);
        }
    }
    let (candidates, capped) = candidates.finish();

    let status = props.status.as_deref().unwrap_or("New");
    let classification = props.classification.as_deref();
    let intent = if status.eq_ignore_ascii_case("closed") {
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
}
