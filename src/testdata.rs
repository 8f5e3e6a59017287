//! Test data: the real samples in `tests/fixtures/` (provenance in `tests/fixtures/SOURCES.md`).

use serde_json::{json, Value};

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// The incident resource of the `GetIncidentById` ARM example (closed as a false positive).
pub(crate) fn incident_resource() -> Value {
    load(include_str!(
        "../tests/fixtures/sentinel/sentinel-incident.get-incident.arm-example.json"
    ))["responses"]["200"]["body"]
        .clone()
}

/// The IP entity of the `GetIpEntityById` ARM example with another address.
pub(crate) fn ip_entity(address: &str) -> Value {
    let mut entity = load(include_str!(
        "../tests/fixtures/sentinel/sentinel-entity-ip.get-entity.arm-example.json"
    ))["responses"]["200"]["body"]
        .clone();
    entity["properties"]["address"] = address.into();
    entity["properties"]["friendlyName"] = address.into();
    entity
}

/// The real `SecurityAlert` row from msticpy.
pub(crate) fn security_alert_row() -> Value {
    load(include_str!(
        "../tests/fixtures/sentinel/sentinel-securityalert-table-row.two-ip-entities.msticpy.json"
    ))
}

/// The common-alert-schema log search alert v2 docs sample.
pub(crate) fn monitor_v2() -> Value {
    load(include_str!(
        "../tests/fixtures/azure-monitor/azure-monitor-common-alert-schema.log-alerts-v2.test-action.docs-sample.json"
    ))
}

/// The older log alert `alertContext` docs sample with an `IP` dimension.
pub(crate) fn monitor_v1_context() -> Value {
    load(include_str!(
        "../tests/fixtures/azure-monitor/azure-monitor-common-alert-schema.log-alert-appinsights-ip-dimension.alertcontext.docs-sample.json"
    ))
}

/// The ARM incident example (`GetIncidentById`), wrapped as the Logic App incident trigger sends it, with
/// `relatedEntities` and `alerts` added as the trigger does.
pub(crate) fn incident_trigger(status: &str, classification: Option<&str>) -> Value {
    let mut incident = incident_resource();
    let props = incident["properties"].as_object_mut().unwrap();
    props.insert("status".into(), status.into());
    match classification {
        Some(c) => props.insert("classification".into(), c.into()),
        None => props.remove("classification"),
    };
    props.insert(
        "relatedEntities".into(),
        json!([
            ip_entity("23.97.60.214"),
            ip_entity("10.3.2.8"),
            {"kind": "Host", "properties": {"hostName": "vm1"}},
            ip_entity("23.97.60.214"),
            {"kind": "IP", "properties": {"address": "2a01:111:f400::/48"}}
        ]),
    );
    props.insert(
        "alerts".into(),
        json!([{
            "kind": "SecurityAlert",
            "properties": {
                "systemAlertId": "baa8a239-6fde-4ab7-a093-d09f7b75c58c",
                "alertDisplayName": "myAlert",
                "severity": "Low",
                "additionalData": {
                    "Custom Details": "{\"PortcullisBlockFor\":[\"P2D\"]}"
                },
                "entities": [{"$id": "1", "Type": "ip", "Address": "52.178.17.2"}]
            }
        }]),
    );
    json!({
        "eventUniqueId": "4a3c7e3b-0000-0000-0000-000000000000",
        "objectSchemaType": "Incident",
        "objectEventType": "Create",
        "workspaceInfo": {"SubscriptionId": "d0cfe6b2-9ac0-4464-9919-dccaee2e48c0",
                          "ResourceGroupName": "myRg", "WorkspaceName": "myWorkspace"},
        "workspaceId": "c8c99641-985d-4e4e-8e91-fb3466cd0e5b",
        "object": incident
    })
}
