//! Both invocation modes against Azurite, every payload kind, messages read back and verified.

use chrono::Duration;
use queue_message::testing::Azurite;
use queue_message::Action;
use serde_json::{json, Value};

use crate::util::{caller_view, drain, fixture, incident, Handler};

/// The answer without what differs between two requests: message ids, and `expires_at` (the binary's
/// clock is not pinned, so two requests may straddle a second; compared separately by [`same_expiry`]).
fn without_ids(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("messages");
    body.as_object_mut().unwrap().remove("expires_at");
    body
}

/// Both answers' `expires_at` parse and lie at most a second apart.
fn same_expiry(a: &Value, b: &Value) {
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
    };
    let apart = (parse(a) - parse(b)).num_seconds().abs();
    assert!(apart <= 1, "{a} vs {b}");
}

#[tokio::test]
async fn an_incident_blocks_in_both_modes_with_the_same_answer() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let handler = Handler::with_queue(&conn, &[("PORTCULLIS_QUEUES", "site-a,site-b")]);
    let body = incident(
        "New",
        None,
        &[
            "198.51.100.7",
            "10.0.0.5",
            "::ffff:198.51.100.7",
            "2001:db8:1::/48",
            "203.0.113.9",
        ],
    )
    .to_string();

    let (status, headers, direct) = handler
        .forward("/api/alerts", Some("application/json"), body.clone())
        .await;
    assert_eq!(status, 200, "{direct}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(direct["kind"], "sentinel-incident");
    assert_eq!(direct["action"], "block");
    assert_eq!(
        (direct["queued"].as_u64(), direct["skipped"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(direct["queues"], json!(["site-a", "site-b"]));
    let reasons: Vec<&str> = direct["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["special-purpose", "special-purpose"]);

    let (host_status, invocation) = handler
        .invoke("alerts", "application/json; charset=utf-8", &body)
        .await;
    assert_eq!(host_status, 200, "the host always gets 200");
    let (status, headers, via_host) = caller_view(&invocation);
    assert_eq!(status, 200);
    assert_eq!(headers["Content-Type"], "application/json");
    same_expiry(&via_host, &direct);
    assert_eq!(without_ids(via_host), without_ids(direct.clone()));
    assert!(invocation["Logs"][0].as_str().unwrap().contains("2 queued"));
    assert_eq!(invocation["ReturnValue"], Value::Null);

    for queue in ["site-a", "site-b"] {
        let messages = drain(&conn, queue).await;
        assert_eq!(messages.len(), 2, "one message per request in {queue}");
        for m in &messages {
            assert_eq!(m.action, Action::Block);
            let targets: Vec<String> = m.targets.iter().map(ToString::to_string).collect();
            assert_eq!(targets, ["198.51.100.7", "2001:db8:1::/48"]);
            assert_eq!(m.source.kind, "sentinel-incident");
            assert!(m
                .source
                .id
                .as_deref()
                .unwrap()
                .ends_with("73e01a99-5cd7-4139-a149-9f2736ff2ab5"));
            assert_eq!(m.source.severity.as_deref(), Some("High"));
            assert_eq!(m.expires_at - m.issued_at, Duration::days(30));
            assert_eq!(m.reason, "Sentinel incident 3177: My incident");
        }
        let ids: Vec<_> = messages.iter().map(|m| m.id.to_string()).collect();
        assert!(ids.contains(&direct["messages"][0].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn closed_incidents_unblock_or_do_nothing() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let handler = Handler::with_queue(&conn, &[]);
    let fp = incident("Closed", Some("FalsePositive"), &["198.51.100.7"]).to_string();
    let (status, body) = handler.invoke("alerts", "application/json", &fp).await;
    assert_eq!(status, 200);
    let (status, _, body) = caller_view(&body);
    assert_eq!((status, body["action"].as_str()), (200, Some("unblock")));
    let tp = incident("Closed", Some("TruePositive"), &["198.51.100.8"]).to_string();
    let (status, _, body) = handler
        .forward("/api/alerts", Some("application/json"), tp)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "nothing-queued");
    assert_eq!(body["targets"][0]["reason"], "no-action");

    let messages = drain(&conn, "portcullis").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].action, Action::Unblock);
    assert_eq!(
        messages[0].expires_at - messages[0].issued_at,
        Duration::days(90)
    );
}

#[tokio::test]
async fn alerts_monitor_payloads_and_the_manual_api() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let handler = Handler::with_queue(
        &conn,
        &[
            ("PORTCULLIS_TTL_LOW", "PT6H"),
            ("PORTCULLIS_ALLOWLIST", "198.51.100.200/29"),
        ],
    );

    // The real SecurityAlert row: Entities as a string; 203.0.113.1 is documentation space, not in the lab.
    let mut row = fixture("sentinel/sentinel-securityalert-table-row.two-ip-entities.msticpy.json");
    row["Entities"] = row["Entities"]
        .as_str()
        .unwrap()
        .replace("23.97.60.214", "198.51.100.214")
        .into();
    let (status, _, body) = handler
        .forward("/api/alerts", Some("application/json"), row.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "sentinel-alert");
    assert_eq!(body["expiry"], "severity Low: PT6H");

    // Azure Monitor log search alert v2 with an IP dimension and a PortcullisBlockFor custom property.
    let mut monitor = fixture("azure-monitor/azure-monitor-common-alert-schema.log-alerts-v2.test-action.docs-sample.json");
    monitor["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"] = json!([{"name": "Computer", "value": "test-computer"}, {"name": "SrcIP", "value": "198.51.100.33"}]);
    monitor["data"]["alertContext"]["properties"]["PortcullisBlockFor"] = "P2D".into();
    let (status, invocation) = handler
        .invoke("alerts", "application/json", &monitor.to_string())
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = caller_view(&invocation);
    assert_eq!(
        (status, body["kind"].as_str(), body["queued"].as_u64()),
        (200, Some("azure-monitor"), Some(1))
    );
    monitor["data"]["essentials"]["monitorCondition"] = "Resolved".into();
    let (status, _, body) = handler
        .forward("/api/alerts", Some("application/json"), monitor.to_string())
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("nothing-queued"))
    );

    // Manual API: block with a ttl (one target allowlisted), then unblock.
    let manual = json!({"action": "block", "targets": ["198.51.100.77", "198.51.100.201"], "ttl": "PT1H", "reason": "port scan"});
    let (status, invocation) = handler
        .invoke("blocks", "application/json", &manual.to_string())
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = caller_view(&invocation);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"][1]["reason"], "allowlisted");
    let unblock = json!({"action": "unblock", "targets": ["198.51.100.77"]});
    let (status, _, _) = handler
        .forward("/api/blocks", Some("application/json"), unblock.to_string())
        .await;
    assert_eq!(status, 200);

    let messages = drain(&conn, "portcullis").await;
    let summary: Vec<(String, Action, Vec<String>, i64)> = messages
        .iter()
        .map(|m| {
            (
                m.source.kind.clone(),
                m.action,
                m.targets.iter().map(ToString::to_string).collect(),
                (m.expires_at - m.issued_at).num_seconds(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "sentinel-alert".to_owned(),
                Action::Block,
                vec!["198.51.100.214".to_owned()],
                6 * 3600
            ),
            (
                "azure-monitor".to_owned(),
                Action::Block,
                vec!["198.51.100.33".to_owned()],
                2 * 86400
            ),
            (
                "manual".to_owned(),
                Action::Block,
                vec!["198.51.100.77".to_owned()],
                3600
            ),
            (
                "manual".to_owned(),
                Action::Unblock,
                vec!["198.51.100.77".to_owned()],
                90 * 86400
            ),
        ]
    );
    assert_eq!(
        messages[0].source.id.as_deref(),
        Some("8f622935-1422-41e6-b8f6-9119e681645c")
    );
    assert_eq!(messages[2].reason, "port scan");
}

#[tokio::test]
async fn a_bulk_incident_is_split_into_few_messages() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let handler = Handler::with_queue(
        &conn,
        &[
            ("PORTCULLIS_LAB_RANGES", "2001:db8::/32"),
            ("PORTCULLIS_MAX_TARGETS", "5000"),
        ],
    );
    let addresses: Vec<String> = (0..4000)
        .map(|i| format!("2001:db8:{:x}:{:x}::1", i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let (status, _, body) = handler
        .forward(
            "/api/alerts",
            Some("application/json"),
            incident("Active", None, &refs).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids = body["messages"].as_array().unwrap().len();
    assert!((2..=5).contains(&ids), "{ids} messages");
    let messages = drain(&conn, "portcullis").await;
    assert_eq!(messages.len(), ids);
    assert_eq!(
        messages.iter().map(|m| m.targets.len()).sum::<usize>(),
        4000
    );
}

#[tokio::test]
async fn json_logs_carry_the_invocation_id() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let handler = Handler::with_queue(
        &azurite.connection_string(),
        &[("PORTCULLIS_LOG_FORMAT", "json")],
    );
    let invocation_id = "5b9c8a1e-0000-4000-8000-00000000abcd";
    let response = reqwest::Client::new()
        .post(handler.url("/api/alerts"))
        .header("Content-Type", "application/json")
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .body(incident("New", None, &["198.51.100.7"]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let logs = handler.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "Alert processed.")
        .unwrap_or_else(|| panic!("no JSON summary line in:\n{logs}"));
    assert_eq!(line["span"]["invocation_id"], invocation_id);
    assert_eq!(line["fields"]["queued"], 1);
    assert_eq!(line["level"], "INFO");
}
