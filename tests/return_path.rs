//! The return path end to end, offline: reports made with the shared crate (as the agent will) go into
//! the reports queue in a real Azurite; the emulated Functions host (`functions_host`) invokes the real
//! handler binary at `/reports`; the handler writes to the fake ARM and Logs Ingestion endpoints (`fakes`)
//! with tokens from the fake managed-identity endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use queue_message::testing::Azurite;
use queue_message::{
    CommitEvent, EventKind, FirewallAction, FirewallRow, Heartbeat, LogBatch, Report, ReportBody,
    SigningKey, Source, Target,
};
use serde_json::Value;
use uuid::Uuid;

use crate::fakes::{Arm, Identity, Ingestion, IDENTITY_SECRET, RULE_ID};
use crate::functions_host::{fire_timer, Host, QueueRest, Trigger};
use crate::util::{key, Handler};

const REPORTS: &str = "portcullis-reports";
const INCIDENT: &str = "/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/incidents/73e01a99-5cd7-4139-a149-9f2736ff2ab5";

struct Loop {
    azurite: Azurite,
    handler: Handler,
    arm: Arc<Arm>,
    ingestion: Arc<Ingestion>,
    identity: Arc<Identity>,
    rest: QueueRest,
}

impl Loop {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let azurite = Azurite::start();
        let (identity, identity_url) = Identity::start().await;
        let (arm, arm_url) = Arm::start().await;
        let (ingestion, ingestion_url) = Ingestion::start().await;
        let mut env = vec![
            ("IDENTITY_ENDPOINT", identity_url.as_str()),
            ("IDENTITY_HEADER", IDENTITY_SECRET),
            ("PORTCULLIS_ARM_ENDPOINT", arm_url.as_str()),
            ("PORTCULLIS_LOGS_ENDPOINT", ingestion_url.as_str()),
            ("PORTCULLIS_LOGS_RULE_ID", RULE_ID),
            ("PORTCULLIS_REPORTS_QUEUE", REPORTS),
            ("PORTCULLIS_QUEUES", "site-a,site-b"),
            (
                "PORTCULLIS_WORKBOOK_URL",
                "https://portal.azure.com/#workbook",
            ),
        ];
        env.extend_from_slice(extra);
        let handler = Handler::with_queue(&azurite.connection_string(), &env);
        let rest = QueueRest::new(&azurite.service_url("http"));
        rest.create(REPORTS).await;
        Self {
            azurite,
            handler,
            arm,
            ingestion,
            identity,
            rest,
        }
    }

    fn host(&self) -> Host {
        Host::start(
            &self.azurite.service_url("http"),
            &self.handler.url(""),
            Trigger {
                queue: REPORTS.to_owned(),
                function: "reports".to_owned(),
                binding: "report".to_owned(),
                max_dequeue_count: 5,
                polling: Duration::from_millis(100),
                lease_secs: 30,
                retry_after_secs: 0,
            },
        )
    }

    async fn send(&self, reports: &[Report], with: &SigningKey) {
        for r in reports {
            self.rest.add(REPORTS, &r.encode(with)).await;
        }
    }
}

/// Waits (bounded, not timed) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn at(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap()
}

fn template(site: &str) -> Report {
    Report {
        id: Uuid::new_v4(),
        site: site.to_owned(),
        agent_version: "0.1.0".to_owned(),
        created_at: at(6),
        body: ReportBody::Logs(LogBatch::default()),
    }
}

fn incident_source() -> Source {
    Source {
        kind: "sentinel-incident".to_owned(),
        id: Some(INCIDENT.to_owned()),
        url: None,
        rule: Some("TI map IP entity to firewall".to_owned()),
        severity: Some("High".to_owned()),
    }
}

fn block(targets: &[&str], event: EventKind, source: Source) -> CommitEvent {
    CommitEvent {
        event,
        targets: targets.iter().map(|t| Target::parse(t).unwrap()).collect(),
        expires_at: Some(at(9)),
        source: Some(source),
        reason: Some("Sentinel incident 3177: TI match".to_owned()),
        message_id: Some(Uuid::new_v4().to_string()),
    }
}

fn commit(site: &str, events: &[CommitEvent]) -> Vec<Report> {
    Report::pack_commit(&template(site), Uuid::new_v4(), at(6), events, &key())
}

fn events_of(ingestion: &Ingestion, event: &str) -> Vec<Value> {
    ingestion
        .rows("Custom-PortcullisEvents")
        .into_iter()
        .filter(|r| r["Event"] == event)
        .collect()
}

#[tokio::test]
async fn a_block_becomes_one_comment_and_rows_even_after_an_arm_outage() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    // ARM is down for the first two deliveries.
    l.arm.script.lock().unwrap().extend([503, 500]);
    let reports = commit(
        "site-a",
        &[
            block(
                &["203.0.113.7", "2001:db8:9::/48"],
                EventKind::Block,
                incident_source(),
            ),
            CommitEvent {
                reason: Some("special-purpose: private".to_owned()),
                expires_at: None,
                ..block(&["10.1.2.3"], EventKind::Refused, incident_source())
            },
        ],
    );
    assert_eq!(reports.len(), 1);
    l.send(&reports, &key()).await;
    let mut host = l.host();
    until("the comment", || !l.arm.comments_on(INCIDENT).is_empty()).await;
    until("the message to be deleted", || {
        host.invocations().iter().any(|i| i.status == 200)
    })
    .await;
    host.stop().await;

    let comments = l.arm.comments_on(INCIDENT);
    assert_eq!(
        comments.len(),
        1,
        "one comment, not one per attempt: {comments:?}"
    );
    let text = comments.values().next().unwrap();
    assert!(text.contains("site-a"), "{text}");
    assert!(
        text.contains("Blocked 2 addresses until 2026-12-01 09:00 UTC"),
        "{text}"
    );
    assert!(text.contains("203.0.113.7, 2001:db8:9::/48"), "{text}");
    assert!(
        text.contains("Refused to block 1 address — special-purpose: private: 10.1.2.3"),
        "{text}"
    );
    assert!(
        text.contains("[Portcullis workbook](https://portal.azure.com/#workbook)"),
        "{text}"
    );
    let puts = l.arm.puts();
    assert_eq!(
        puts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [503, 500, 201],
        "retried with the same comment id"
    );
    assert!(puts.iter().all(|p| p.comment == puts[0].comment));
    // Deliveries 1 and 2 failed, 3 succeeded; the queue is empty and nothing was poisoned.
    let statuses: Vec<(u32, u16)> = host_statuses(&l, &host);
    assert_eq!(statuses, [(1, 503), (2, 503), (3, 200)]);
    assert_eq!(l.rest.count(REPORTS).await, 0);
    assert_eq!(l.rest.count(&format!("{REPORTS}-poison")).await, 0);

    // Rows: one per target per event, with the fixed columns, written once although the report was
    // delivered three times.
    let blocks = events_of(&l.ingestion, "block");
    let refused = events_of(&l.ingestion, "refused");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(refused.len(), 1);
    let row = &blocks[0];
    assert_eq!(row["Site"], "site-a");
    assert_eq!(row["Target"], "203.0.113.7");
    assert_eq!(row["ExpiresAt"], "2026-12-01T09:00:00Z");
    assert_eq!(row["SourceKind"], "sentinel-incident");
    assert_eq!(row["SourceId"], INCIDENT);
    assert_eq!(row["Rule"], "TI map IP entity to firewall");
    assert_eq!(row["ReportId"], reports[0].id.to_string());
    assert_eq!(row["AgentVersion"], "0.1.0");
    assert_eq!(row["TimeGenerated"], "2026-12-01T06:00:00Z");
    assert!(row["Details"].is_object());
    assert_eq!(refused[0]["Reason"], "special-purpose: private");
    // Tokens for both audiences came from the managed identity.
    let resources = l.identity.resources.lock().unwrap().clone();
    assert!(
        resources
            .iter()
            .any(|r| r == "https://management.azure.com"),
        "{resources:?}"
    );
    assert!(
        resources.iter().any(|r| r == "https://monitor.azure.com"),
        "{resources:?}"
    );
    assert!(!l.handler.logs().contains(IDENTITY_SECRET));
}

fn host_statuses(_l: &Loop, host: &Host) -> Vec<(u32, u16)> {
    host.invocations()
        .iter()
        .map(|i| (i.dequeue_count, i.status))
        .collect()
}

#[tokio::test]
async fn a_deleted_incident_does_not_loop_and_an_unblock_comments_again() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    let deleted = INCIDENT.replace("73e01a99", "00000000");
    l.arm.deleted.lock().unwrap().push(deleted.clone());
    let gone = Source {
        id: Some(deleted.clone()),
        ..incident_source()
    };
    l.send(
        &commit("site-b", &[block(&["203.0.113.9"], EventKind::Block, gone)]),
        &key(),
    )
    .await;
    let first = commit(
        "site-a",
        &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
    );
    let second = commit(
        "site-a",
        &[CommitEvent {
            reason: Some("incident closed as FalsePositive".to_owned()),
            ..block(&["203.0.113.7"], EventKind::Unblock, incident_source())
        }],
    );
    l.send(&first, &key()).await;
    l.send(&second, &key()).await;
    let mut host = l.host();
    until("three reports handled", || {
        host.invocations()
            .iter()
            .filter(|i| i.status == 200)
            .count()
            == 3
    })
    .await;
    host.stop().await;

    // The deleted incident: one PUT answered 404, acknowledged (200), never retried, rows still written.
    let puts = l.arm.puts();
    let to_deleted: Vec<_> = puts.iter().filter(|p| p.incident == deleted).collect();
    assert_eq!(to_deleted.len(), 1);
    assert_eq!(to_deleted[0].status, 404);
    assert!(host
        .invocations()
        .iter()
        .all(|i| i.dequeue_count == 1 && i.status == 200));
    assert_eq!(l.rest.count(&format!("{REPORTS}-poison")).await, 0);
    assert!(events_of(&l.ingestion, "block")
        .iter()
        .any(|r| r["Target"] == "203.0.113.9"));
    assert!(l.handler.logs().contains("404"), "{}", l.handler.logs());

    // The live incident: a comment for the block and a second one for the unblock.
    let comments = l.arm.comments_on(INCIDENT);
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert!(comments
        .values()
        .any(|t| t.contains("Unblocked 1 address — incident closed as FalsePositive")));
    assert_eq!(events_of(&l.ingestion, "unblock").len(), 1);
}

#[tokio::test]
async fn a_persistent_outage_ends_in_the_poison_queue_and_watch_reports_it() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    l.arm.script.lock().unwrap().extend([500; 10]);
    l.send(
        &commit(
            "site-a",
            &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
        ),
        &key(),
    )
    .await;
    let mut host = l.host();
    until("the poison queue", || {
        host.poisoned.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    host.stop().await;
    let deliveries: Vec<u32> = host.invocations().iter().map(|i| i.dequeue_count).collect();
    assert_eq!(deliveries, [1, 2, 3, 4, 5]);
    let ids: std::collections::HashSet<String> = host
        .invocations()
        .into_iter()
        .map(|i| i.message_id)
        .collect();
    assert_eq!(ids.len(), 1, "one message delivered five times");
    assert!(host.invocations().iter().all(|i| i.status == 503));
    assert_eq!(l.rest.peek(&format!("{REPORTS}-poison")).await.len(), 1);
    // The events sink was not held back by the comment sink, and wrote its rows once.
    assert_eq!(events_of(&l.ingestion, "block").len(), 1);

    let (status, body) = fire_timer(&l.handler.url(""), "watch").await;
    assert_eq!(status, 200, "{body}");
    let rows = events_of(&l.ingestion, "poison-queue");
    let count_of = |queue: &str| {
        rows.iter()
            .find(|r| r["Target"] == queue)
            .map(|r| r["Count"].as_i64().unwrap())
    };
    assert_eq!(count_of("portcullis-reports-poison"), Some(1), "{rows:?}");
    assert_eq!(count_of("site-a-poison"), Some(0));
    assert_eq!(count_of("site-b-poison"), Some(0));
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn heartbeats_log_batches_and_throttling() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    // The first ingestion call is throttled: the handler waits Retry-After and tries again.
    l.ingestion.script.lock().unwrap().push_back(429);
    let heartbeat = Report {
        body: ReportBody::Heartbeat(Heartbeat {
            backend: "nftables".to_owned(),
            healthy: false,
            problems: vec!["last commit failed".to_owned()],
            active_blocks: 42,
            last_commit_at: Some(at(5)),
            outbox_depth: 0,
            poisoned_since_last: 2,
        }),
        ..template("site-a")
    };
    let rows: Vec<FirewallRow> = (0..3_000u32)
        .map(|i| FirewallRow {
            time_generated: at(6),
            site: "forged-site".to_owned(),
            device: "udm".to_owned(),
            format: "unifi".to_owned(),
            action: Some(FirewallAction::Drop),
            rule: Some("WAN_IN-3000-D".to_owned()),
            interface: Some("eth8".to_owned()),
            protocol: Some("tcp".to_owned()),
            src_ip: Some(std::net::Ipv4Addr::from(0xcb00_7100 + i).into()),
            src_port: Some(40_000),
            dst_ip: Some("192.0.2.1".parse().unwrap()),
            dst_port: Some(u16::try_from(i % 1000 + 1).unwrap()),
            count: u64::from(i % 7 + 1),
            first_seen: at(5),
            last_seen: at(6),
            dst_sample: vec!["192.0.2.1".parse().unwrap()],
            raw: None,
        })
        .collect();
    let batches = Report::pack_logs(&template("site-a"), &rows, &key());
    l.send(std::slice::from_ref(&heartbeat), &key()).await;
    l.send(&batches, &key()).await;
    let mut host = l.host();
    let expected = 1 + batches.len();
    until("every report handled", || {
        host.invocations()
            .iter()
            .filter(|i| i.status == 200)
            .count()
            == expected
    })
    .await;
    host.stop().await;
    assert!(
        host.invocations().iter().all(|i| i.status == 200),
        "429 was absorbed, not retried by the host"
    );

    let hb = events_of(&l.ingestion, "heartbeat");
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0]["Site"], "site-a");
    assert_eq!(hb[0]["Healthy"], false);
    assert_eq!(hb[0]["Count"], 42);
    assert_eq!(hb[0]["Reason"], "last commit failed");
    assert_eq!(hb[0]["Details"]["poisonedSinceLast"], 2);
    let firewall = l.ingestion.rows("Custom-PortcullisFirewall");
    assert_eq!(firewall.len(), rows.len());
    assert!(
        firewall.iter().all(|r| r["Site"] == "site-a"),
        "Site is the verified sender"
    );
    assert_eq!(firewall[5]["SrcIp"], "203.0.113.5");
    assert_eq!(firewall[5]["Action"], "drop");
    assert_eq!(firewall[5]["DstPort"], 6);
    assert!(l.ingestion.calls().iter().any(|c| c.status == 429));
}

#[tokio::test]
async fn forged_reports_are_acknowledged_and_recorded_as_poisoned() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    let forger = SigningKey::from_bytes(vec![1; 32]).unwrap();
    l.send(
        &commit(
            "site-a",
            &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
        ),
        &forger,
    )
    .await;
    l.rest.add(REPORTS, "not json at all").await;
    let mut host = l.host();
    until("both handled", || host.invocations().len() >= 2).await;
    host.stop().await;
    assert!(host
        .invocations()
        .iter()
        .all(|i| i.status == 200 && i.dequeue_count == 1));
    assert!(
        l.arm.puts().is_empty(),
        "no comment from an unverified report"
    );
    let poisoned = events_of(&l.ingestion, "poisoned");
    assert_eq!(poisoned.len(), 2, "{poisoned:?}");
    assert!(
        poisoned
            .iter()
            .any(|r| r["Site"] == "site-a"
                && r["Reason"].as_str().unwrap().contains("unknown key id"))
    );
    assert!(events_of(&l.ingestion, "block").is_empty());

    // A direct invocation: refused reports are counted, and the counters reach the invocation log.
    let response = reqwest::Client::new()
        .post(l.handler.url("/reports"))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({"Data": {"report": "{\"v\":1}"}, "Metadata": {"DequeueCount": 1, "Id": "direct"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let logs = body["Logs"].as_array().unwrap();
    assert!(
        logs[0].as_str().unwrap().starts_with("report refused"),
        "{body}"
    );
    assert!(
        logs.last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("\"reports_refused\":3"),
        "{body}"
    );
    assert_eq!(
        (&body["Outputs"], &body["ReturnValue"]),
        (&serde_json::json!({}), &Value::Null)
    );
}

#[tokio::test]
async fn without_sinks_reports_are_acknowledged_and_dropped() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[
        ("PORTCULLIS_SENTINEL_COMMENTS", "false"),
        ("PORTCULLIS_LOGS_ENDPOINT", ""),
        ("PORTCULLIS_LOGS_RULE_ID", ""),
    ])
    .await;
    l.send(
        &commit(
            "site-a",
            &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
        ),
        &key(),
    )
    .await;
    let mut host = l.host();
    until("handled", || !host.invocations().is_empty()).await;
    host.stop().await;
    assert_eq!(host.invocations()[0].status, 200);
    assert!(l.arm.puts().is_empty());
    assert!(l.ingestion.calls().is_empty());
    assert!(l.handler.logs().contains("NO sink"), "{}", l.handler.logs());
    assert!(l.handler.logs().contains("dropped"));
}

/// P12, second half, counted exactly: Logs Ingestion calls for the rows of a 10k-address commit.
#[tokio::test]
async fn a_10k_address_commit_costs_few_messages_and_few_ingestion_calls() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[("PORTCULLIS_SENTINEL_COMMENTS", "false")]).await;
    let targets: Vec<String> = (0..10_000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string())
        .collect();
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let reports = commit(
        "site-a",
        &[block(&refs, EventKind::Block, incident_source())],
    );
    l.send(&reports, &key()).await;
    let mut host = l.host();
    until("every part handled", || {
        host.invocations()
            .iter()
            .filter(|i| i.status == 200)
            .count()
            == reports.len()
    })
    .await;
    host.stop().await;
    assert_eq!(events_of(&l.ingestion, "block").len(), 10_000);
    let calls = l.ingestion.calls();
    let per_ip = reports.len() as f64 / 10_000.0;
    println!(
        "P12: {} report messages for 10,000 addresses ({per_ip:.4} per address); {} Logs Ingestion calls, {} bytes gzipped",
        reports.len(),
        calls.len(),
        calls.iter().map(|c| c.compressed_bytes).sum::<usize>()
    );
    assert!(per_ip <= 0.002);
    assert!(calls
        .iter()
        .all(|c| c.status == 204 && c.stream == "Custom-PortcullisEvents"));
    assert_eq!(calls.iter().map(|c| c.rows).sum::<usize>(), 10_000);
}

/// P11 (cloud half; the agent does not send reports yet): a report added to the reports queue →
/// comment accepted by the fake ARM endpoint, with the emulated host polling every 100 ms, on
/// loopback. Prints the median and its breakdown against the 300 ms ceiling; asserts nothing about
/// time. Run: `cargo test --test integration p11 -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark: run explicitly, see BENCHMARKS.md P11"]
async fn p11_report_to_comment_latency() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    let mut host = l.host();
    let mut total = Vec::new();
    let mut queue_wait = Vec::new();
    let mut to_arm = Vec::new();
    for i in 0..40 {
        let reports = commit(
            "site-a",
            &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
        );
        let before = l.arm.puts().len();
        let t0 = Instant::now();
        l.rest.add(REPORTS, &reports[0].encode(&key())).await;
        until("the comment", || l.arm.puts().len() > before).await;
        let done = Instant::now();
        let put = l.arm.puts()[before].at;
        let started = host.invocations().last().unwrap().started;
        if i >= 5 {
            // The first few warm up the token cache and connections.
            total.push(done - t0);
            queue_wait.push(started - t0);
            to_arm.push(put - started);
        }
    }
    host.stop().await;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "P11 cloud half over {} reports: median {:?} (ceiling 300 ms): enqueue -> host invocation {:?}, invocation -> ARM PUT {:?}",
        total.len(),
        median(&mut total),
        median(&mut queue_wait),
        median(&mut to_arm)
    );
}

#[tokio::test]
async fn permanent_failures_are_logged_acknowledged_and_not_retried() {
    queue_message::require!(queue_message::testing::azurite_available());
    let l = Loop::start(&[]).await;
    // The function has no Sentinel Responder role yet, and the rule refuses the rows.
    l.arm.script.lock().unwrap().push_back(403);
    l.ingestion.script.lock().unwrap().push_back(400);
    l.send(
        &commit(
            "site-a",
            &[block(&["203.0.113.7"], EventKind::Block, incident_source())],
        ),
        &key(),
    )
    .await;
    let mut host = l.host();
    until("handled", || !host.invocations().is_empty()).await;
    host.stop().await;
    let invocations = host.invocations();
    assert_eq!(invocations.len(), 1, "{invocations:?}");
    assert_eq!(invocations[0].status, 200);
    assert_eq!(l.arm.puts().len(), 1);
    assert!(l.arm.comments_on(INCIDENT).is_empty());
    assert_eq!(l.ingestion.calls().len(), 1);
    assert!(events_of(&l.ingestion, "block").is_empty());
    let logs = l.handler.logs();
    assert!(logs.contains("failed for good"), "{logs}");
    assert!(logs.contains("403") && logs.contains("400"), "{logs}");
    assert_eq!(l.rest.count(REPORTS).await, 0);
}
