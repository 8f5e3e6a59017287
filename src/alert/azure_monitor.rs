//! Azure Monitor common alert schema (`schemaId: "azureMonitorCommonAlertSchema"`).
//!
//! Log search alerts v2 split by dimension put one dimension combination in each alert:
//! `data.alertContext.condition.allOf[].dimensions[] = {"name", "value"}`; the older log alert shape has
//! `data.alertContext.Dimensions[]`. Targets are the values of the configured dimensions
//! (`PORTCULLIS_IP_DIMENSIONS`), or, when none are configured, of every dimension whose value parses as an
//! IP address or network. `monitorCondition: "Resolved"` is accepted and queues nothing.

use queue_message::{Source, Target};
use serde::Deserialize;
use serde_json::Value;

use super::{clip, Alert, Collector, Details, ExtractConfig, Intent, Kind, Severity};
use crate::lenient::{LList, LObj, LStr};

/// `data` of the common alert schema.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Data {
    essentials: LObj<Essentials>,
    alert_context: LObj<AlertContext>,
    custom_properties: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Essentials {
    alert_id: LStr,
    alert_rule: LStr,
    severity: LStr,
    monitor_condition: LStr,
    investigation_link: LStr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AlertContext {
    properties: Value,
    condition: LObj<Condition>,
    /// The older log alert shape.
    #[serde(rename = "Dimensions")]
    dimensions_v1: LList<Dimension>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Condition {
    #[serde(rename = "allOf")]
    all_of: LList<Criterion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Criterion {
    dimensions: LList<Dimension>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Dimension {
    name: LStr,
    value: LStr,
}

/// Builds the [`Alert`] of a common-schema payload.
pub(crate) fn from_data(data: Data, config: &ExtractConfig) -> Alert {
    let essentials = data.essentials.0.unwrap_or_default();
    let context = data.alert_context.0.unwrap_or_default();
    let mut candidates = Collector::new(config.max_candidates);
    let dimensions = context
        .condition
        .0
        .into_iter()
        .flat_map(|c| c.all_of.0)
        .flat_map(|c| c.dimensions.0)
        .chain(context.dimensions_v1.0);
    for dim in dimensions {
        let (Some(name), Some(value)) = (dim.name.as_deref(), dim.value.as_deref()) else {
            continue;
        };
        let wanted = if config.ip_dimensions.is_empty() {
            Target::parse(value).is_ok()
        } else {
            config
                .ip_dimensions
                .iter()
                .any(|d| d.eq_ignore_ascii_case(name.trim()))
        };
        if wanted {
            candidates.push(value, "dimensions");
        }
    }
    let (candidates, capped) = candidates.finish();
    let mut details = Details::default();
    details.scan_bag(&data.custom_properties);
    details.scan_bag(&context.properties);

    let resolved = essentials
        .monitor_condition
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("Resolved"));
    let intent = if resolved {
        Intent::Nothing("alert resolved: nothing to do".to_owned())
    } else {
        Intent::Block
    };
    let rule = essentials
        .alert_rule
        .as_deref()
        .map_or_else(|| "unnamed alert rule".to_owned(), |r| clip(r, 200));
    Alert {
        kind: Kind::AzureMonitor,
        intent,
        severity: essentials.severity.as_deref().and_then(Severity::parse),
        reason: format!("Azure Monitor alert: {rule}"),
        source: Source {
            kind: Kind::AzureMonitor.as_str().to_owned(),
            id: essentials.alert_id.take().map(|s| clip(&s, 512)),
            url: essentials.investigation_link.take().map(|s| clip(&s, 1024)),
            rule: essentials.alert_rule.take().map(|s| clip(&s, 200)),
            severity: essentials.severity.take().map(|s| clip(&s, 40)),
        },
        details,
        candidates,
        capped,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use serde_json::json;

    fn alert(body: &Value, dims: &[&str]) -> Alert {
        let config = ExtractConfig {
            ip_dimensions: dims.iter().map(|d| d.to_string()).collect(),
            ..ExtractConfig::default()
        };
        parse(body.to_string().as_bytes(), &config).unwrap()
    }

    fn with_dimensions(dims: Value) -> Value {
        let mut body = crate::testdata::monitor_v2();
        body["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"] = dims;
        body
    }

    #[test]
    fn the_docs_sample_has_no_ip_dimension() {
        let a = alert(&crate::testdata::monitor_v2(), &[]);
        assert_eq!(a.kind, Kind::AzureMonitor);
        assert_eq!(a.intent, Intent::Block);
        assert!(
            a.candidates.is_empty(),
            "`Computer: test-computer` is not an IP"
        );
        assert_eq!(a.severity, Some(Severity::Low));
        assert_eq!(a.source.rule.as_deref(), Some("test-logAlertRule-v2"));
        assert!(a
            .source
            .id
            .as_deref()
            .unwrap()
            .contains("Microsoft.AlertsManagement/alerts/"));
    }

    #[test]
    fn ip_dimensions_any_or_configured() {
        let body = with_dimensions(json!([
            {"name": "Computer", "value": "test-computer"},
            {"name": "SourceIP", "value": "40.112.72.205"},
            {"name": "DestIP", "value": "13.107.4.52"},
            {"name": "Note", "value": "n/a"}
        ]));
        let any: Vec<_> = alert(&body, &[])
            .candidates
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(any, ["40.112.72.205", "13.107.4.52"]);
        let only: Vec<_> = alert(&body, &["sourceip", "note"])
            .candidates
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(
            only,
            ["40.112.72.205", "n/a"],
            "configured names are taken even when invalid"
        );
    }

    #[test]
    fn resolved_queues_nothing_and_custom_properties_count() {
        let mut body = with_dimensions(json!([{"name": "IP", "value": "40.112.72.205"}]));
        body["data"]["customProperties"] = json!({"PortcullisBlockFor": "PT4H"});
        let a = alert(&body, &[]);
        assert_eq!(a.details.block_for, Some(chrono::Duration::hours(4)));
        body["data"]["essentials"]["monitorCondition"] = "Resolved".into();
        assert!(matches!(alert(&body, &[]).intent, Intent::Nothing(_)));
    }

    #[test]
    fn the_older_dimensions_shape() {
        let context = crate::testdata::monitor_v1_context();
        let body = json!({"schemaId": "azureMonitorCommonAlertSchema",
            "data": {"essentials": {"monitorCondition": "Fired", "severity": "Sev1"}, "alertContext": context["alertContext"]}});
        let a = alert(&body, &[]);
        assert_eq!(a.candidates[0].text, "1.1.1.1");
        assert_eq!(a.severity, Some(Severity::High));
    }
}
