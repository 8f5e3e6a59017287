//! Sentinel alerts: the Logic App alert trigger body (`Entities` as an array) and the `SecurityAlert` table
//! row (`Entities` and `ExtendedProperties` as JSON strings).
//!
//! Every IP entity in `Entities` counts, including entities nested in others and `$ref` references
//! ([`super::entities`]). Lifetime overrides come from `ExtendedProperties` and its `Custom Details`.

use queue_message::Source;

use super::{
    clip, entities, Alert, Collector, Details, ExtractConfig, Intent, Kind, Probe, Severity,
};

/// Builds the [`Alert`] of a Sentinel alert.
pub(crate) fn from_probe(probe: Probe, config: &ExtractConfig) -> Alert {
    let mut candidates = Collector::new(config.max_candidates);
    let mut details = Details::default();
    if let Some(note) = entities::collect_field(&probe.entities, "Entities", &mut candidates) {
        details.notes.push(note);
    }
    details.scan_bag(&probe.extended_properties);
    let (candidates, capped) = candidates.finish();
    let name = probe
        .alert_display_name
        .as_deref()
        .or(probe.alert_name.as_deref())
        .unwrap_or("unnamed alert")
        .to_owned();
    Alert {
        kind: Kind::SentinelAlert,
        intent: Intent::Block,
        severity: probe.severity.as_deref().and_then(Severity::parse),
        reason: format!("Sentinel alert: {}", clip(&name, 200)),
        source: Source {
            kind: Kind::SentinelAlert.as_str().to_owned(),
            id: probe.system_alert_id.take().map(|s| clip(&s, 512)),
            url: probe.alert_link.take().map(|s| clip(&s, 1024)),
            rule: Some(clip(&name, 200)),
            severity: probe.severity.take().map(|s| clip(&s, 40)),
        },
        details,
        candidates,
        capped,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ExtractConfig};
    use super::*;
    use serde_json::{json, Value};

    fn alert(body: &Value) -> Alert {
        parse(body.to_string().as_bytes(), &ExtractConfig::default()).unwrap()
    }

    #[test]
    fn the_real_table_row_with_entities_as_a_string() {
        let a = alert(&crate::testdata::security_alert_row());
        assert_eq!(a.kind, Kind::SentinelAlert);
        let texts: Vec<_> = a.candidates.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["23.97.60.214", "203.0.113.1"]);
        assert_eq!(a.severity, Some(Severity::Low));
        assert_eq!(
            a.source.id.as_deref(),
            Some("8f622935-1422-41e6-b8f6-9119e681645c")
        );
        assert_eq!(a.source.url, None, "empty AlertLink is no link");
        assert_eq!(a.source.rule.as_deref(), Some("SSH Anomalous Login ML"));
        assert_eq!(a.details, Details::default());
    }

    #[test]
    fn the_trigger_form_with_an_entity_array_refs_and_custom_details() {
        let mut body = crate::testdata::security_alert_row();
        let entities: Value = serde_json::from_str(body["Entities"].as_str().unwrap()).unwrap();
        let mut entities = entities.as_array().unwrap().clone();
        entities.push(json!({"$id": "7", "Type": "host", "HostName": "h",
            "IpInterfaces": [{"$ref": "3"}, {"$id": "8", "Type": "IP", "Address": "2603:1030::5"}]}));
        body["Entities"] = Value::Array(entities);
        body["ExtendedProperties"] = json!({
            "Custom Details": "{\"PortcullisBlockFor\":[\"PT36H\"],\"PortcullisValidUntil\":[\"2031-01-01T00:00:00Z\"]}"
        });
        let a = alert(&body);
        let texts: Vec<_> = a.candidates.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["23.97.60.214", "203.0.113.1", "2603:1030::5"]);
        assert_eq!(a.details.block_for, Some(chrono::Duration::hours(36)));
        assert!(a.details.valid_until.is_some());
    }

    #[test]
    fn broken_entities_string_is_a_note_not_a_failure() {
        let a = alert(&json!({"SystemAlertId": "x", "Entities": "[{\"Type\":"}));
        assert!(a.candidates.is_empty());
        assert_eq!(a.details.notes.len(), 1);
    }
}
