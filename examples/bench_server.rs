//! Benchmark P1 server (see BENCHMARKS.md): serves `portcullis::app` with in-memory queues and a bare axum
//! server answering every POST with a fixed body, in the same process, so one wrk run can hit both.
//!
//! `cargo run --release --example bench_server -- [--log] [--write-body FILE]`; prints
//! `handler=<port> bare=<port>` and serves until killed. `--write-body` writes the realistic 20-entity
//! incident used as the request body and exits. `--log` installs the production text logger writing to a
//! sink, to measure the cost of one log line per request.

#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use portcullis::{app, memory_state, MemoryQueues};
use queue_message::SigningKey;
use serde_json::{json, Value};

/// A realistic incident trigger body: the ARM incident example, 20 IP entities as the trigger sends them,
/// one alert.
pub fn incident_body(entities: usize) -> Value {
    let related: Vec<Value> = (0..entities)
        .map(|i| {
            let address = format!("{}.{}.{}.{}", 20 + i % 200, (i * 7) % 250, (i * 13) % 250, 1 + i % 250);
            json!({
                "id": format!("/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/Entities/{:08x}-e11f-478b-98e3-bb381539a8e1", i),
                "name": format!("{i:08x}-e11f-478b-98e3-bb381539a8e1"),
                "type": "Microsoft.SecurityInsights/Entities",
                "kind": "Ip",
                "properties": {"address": address, "friendlyName": address}
            })
        })
        .collect();
    json!({
        "eventUniqueId": "9d2cbd4e-7a0f-4c66-a1a2-cb6d6cbb3f51",
        "objectSchemaType": "Incident",
        "objectEventType": "Create",
        "workspaceInfo": {"SubscriptionId": "d0cfe6b2-9ac0-4464-9919-dccaee2e48c0", "ResourceGroupName": "myRg", "WorkspaceName": "myWorkspace"},
        "workspaceId": "c8c99641-985d-4e4e-8e91-fb3466cd0e5b",
        "object": {
            "id": "/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/Incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5",
            "name": "73e01a99-5cd7-4139-a149-9f2736ff2ab5",
            "etag": "\"0300bf09-0000-0000-0000-5c37296e0000\"",
            "type": "Microsoft.SecurityInsights/Incidents",
            "properties": {
                "title": "TI map IP entity to firewall traffic", "description": "A threat-intelligence indicator matched firewall traffic.",
                "severity": "High", "status": "New",
                "owner": {"objectId": null, "email": null, "assignedTo": null, "userPrincipalName": null},
                "labels": [], "firstActivityTimeUtc": "2026-11-26T06:01:16.9825705Z", "lastActivityTimeUtc": "2026-11-26T06:51:16.9825705Z",
                "lastModifiedTimeUtc": "2026-11-26T07:01:41.7433333Z", "createdTimeUtc": "2026-11-26T07:01:41.7433333Z",
                "incidentNumber": 3177,
                "additionalData": {"alertsCount": 1, "bookmarksCount": 0, "commentsCount": 0, "alertProductNames": ["Azure Sentinel"], "tactics": ["CommandAndControl"], "techniques": []},
                "relatedAnalyticRuleIds": ["/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/alertRules/fab3d2d4-747f-46a7-8ef0-9c0be8112bf7"],
                "incidentUrl": "https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/Incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5",
                "providerName": "Azure Sentinel", "providerIncidentId": "3177",
                "alerts": [{
                    "id": "/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/Entities/baa8a239-6fde-4ab7-a093-d09f7b75c58c",
                    "name": "baa8a239-6fde-4ab7-a093-d09f7b75c58c", "type": "Microsoft.SecurityInsights/Entities", "kind": "SecurityAlert",
                    "properties": {"systemAlertId": "baa8a239-6fde-4ab7-a093-d09f7b75c58c", "tactics": ["CommandAndControl"], "alertDisplayName": "TI map IP entity to firewall traffic",
                        "confidenceLevel": "Unknown", "severity": "High", "vendorName": "Microsoft", "productName": "Azure Sentinel", "alertType": "Scheduled_fab3d2d4",
                        "processingEndTime": "2026-11-26T07:01:21.6158361Z", "status": "New", "endTimeUtc": "2026-11-26T06:51:16.9825705Z", "startTimeUtc": "2026-11-26T06:01:16.9825705Z",
                        "timeGenerated": "2026-11-26T07:01:21.6158361Z",
                        "resourceIdentifiers": [{"type": "LogAnalytics", "workspaceId": "c8c99641-985d-4e4e-8e91-fb3466cd0e5b", "subscriptionId": "d0cfe6b2-9ac0-4464-9919-dccaee2e48c0", "resourceGroup": "myRg"}],
                        "additionalData": {"AlertMessageEnqueueTime": "2026-11-26T07:01:25.304Z", "Custom Details": "{\"ThreatType\":[\"botnet\"]}"},
                        "friendlyName": "TI map IP entity to firewall traffic"}
                }],
                "relatedEntities": related
            }
        }
    })
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write-body") {
        let path = args.get(i + 1).expect("--write-body FILE");
        let entities = args
            .iter()
            .position(|a| a == "--entities")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(20);
        return std::fs::write(path, incident_body(entities).to_string());
    }
    if args.iter().any(|a| a == "--log") {
        tracing_subscriber::fmt()
            .with_env_filter("portcullis=info")
            .with_ansi(false)
            .with_writer(std::io::sink)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let queues = Arc::new(MemoryQueues::new(&["portcullis"]));
            let key = SigningKey::from_bytes(vec![7; 32]).expect("32 bytes");
            let handler = app(Arc::new(memory_state(key, &queues)));
            let bare = axum::Router::new().route(
                "/api/alerts",
                post(|_body: Bytes| async {
                    (
                        [("content-type", "application/json")],
                        "{\"status\":\"queued\"}",
                    )
                }),
            );
            let handler_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!(
                "handler={} bare={}",
                handler_listener.local_addr()?.port(),
                bare_listener.local_addr()?.port()
            );
            // Bound memory: the in-memory queue would otherwise grow by every request.
            let cleaner = Arc::clone(&queues);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    cleaner.clear();
                }
            });
            tokio::spawn(async move { axum::serve(bare_listener, bare).await });
            axum::serve(handler_listener, handler).await
        })
}
