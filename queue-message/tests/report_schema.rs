//! The committed report schema (`schema/report.v1.json`) against real encoded reports: everything
//! `Report::encode`, `pack_commit` and `pack_logs` write is valid (log rows too, once inflated), and
//! reports that break the format are not.

use std::io::Read as _;

use base64::Engine as _;
use chrono::{TimeZone, Utc};
use queue_message::{
    CommitEvent, EventKind, FirewallAction, FirewallRow, Heartbeat, LogBatch, Report, ReportBody,
    SigningKey, Source, Target,
};
use serde_json::{json, Value};
use uuid::Uuid;

fn schema() -> Value {
    serde_json::from_str(include_str!("../schema/report.v1.json")).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("the schema compiles")
}

fn key() -> SigningKey {
    SigningKey::from_bytes(vec![5; 32]).unwrap()
}

fn report(body: ReportBody) -> Report {
    Report {
        id: Uuid::new_v4(),
        site: "home".to_owned(),
        agent_version: "0.1.0".to_owned(),
        created_at: Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap(),
        body,
    }
}

fn encoded(r: &Report) -> Value {
    serde_json::from_str(&r.encode(&key())).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{instance}: {errors:?}");
}

fn events(n: u32) -> Vec<CommitEvent> {
    let source = Source {
        kind: "sentinel-incident".to_owned(),
        id: Some("/subscriptions/s/incidents/1".to_owned()),
        url: Some("https://portal.azure.com/#x".to_owned()),
        rule: Some("TI map".to_owned()),
        severity: Some("High".to_owned()),
    };
    vec![
        CommitEvent {
            event: EventKind::Block,
            targets: (0..n)
                .map(|i| Target::from_addr(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
                .collect(),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap()),
            source: Some(source.clone()),
            reason: Some("incident <&>".to_owned()),
            message_id: Some(Uuid::new_v4().to_string()),
        },
        CommitEvent {
            event: EventKind::Refused,
            targets: vec![Target::parse("2001:db8::/32").unwrap()],
            expires_at: None,
            source: Some(source),
            reason: Some("documentation".to_owned()),
            message_id: None,
        },
        CommitEvent {
            event: EventKind::Discarded,
            targets: Vec::new(),
            expires_at: None,
            source: None,
            reason: Some("expired".to_owned()),
            message_id: Some("q-1".to_owned()),
        },
    ]
}

fn rows(n: u32) -> Vec<FirewallRow> {
    (0..n)
        .map(|i| FirewallRow {
            time_generated: Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap(),
            site: "home".to_owned(),
            device: "opnsense".to_owned(),
            format: "filterlog".to_owned(),
            action: Some(if i % 3 == 0 {
                FirewallAction::Reject
            } else {
                FirewallAction::Drop
            }),
            rule: Some("77".to_owned()),
            interface: Some("igb0".to_owned()),
            protocol: Some("udp".to_owned()),
            src_ip: Some(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).into()),
            src_port: Some(53),
            dst_ip: Some("192.0.2.1".parse().unwrap()),
            dst_port: Some(u16::try_from(i % 65_535).unwrap()),
            count: 1,
            first_seen: Utc.with_ymd_and_hms(2026, 12, 1, 5, 59, 0).unwrap(),
            last_seen: Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap(),
            dst_sample: vec!["192.0.2.1".parse().unwrap()],
            raw: (i == 0).then(|| "filterlog: something odd".to_owned()),
        })
        .collect()
}

fn inflated_rows(instance: &Value) -> Value {
    let data = instance["body"]["logs"]["data"].as_str().unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut json)
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn the_schema_is_valid_draft_2020_12() {
    assert!(jsonschema::meta::is_valid(&schema()));
}

#[test]
fn shared_definitions_match_the_block_message_schema() {
    let block: Value =
        serde_json::from_str(include_str!("../schema/block-message.v1.json")).unwrap();
    let report = schema();
    for def in ["timestamp", "target"] {
        assert_eq!(report["$defs"][def], block["$defs"][def], "$defs/{def}");
    }
    for field in ["kid", "sig"] {
        assert_eq!(
            report["properties"][field], block["properties"][field],
            "{field}"
        );
    }
}

#[test]
fn real_reports_are_valid() {
    let v = validator();
    let heartbeat = |healthy: bool| {
        report(ReportBody::Heartbeat(Heartbeat {
            backend: "ipset".to_owned(),
            healthy,
            problems: if healthy {
                Vec::new()
            } else {
                vec!["backend unreachable".to_owned()]
            },
            active_blocks: 0,
            last_commit_at: healthy.then(|| Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap()),
            outbox_depth: 0,
            poisoned_since_last: 0,
        }))
    };
    for r in [heartbeat(true), heartbeat(false)] {
        assert_valid(&v, &encoded(&r));
    }
    let template = report(ReportBody::Logs(LogBatch::default()));
    let commits = Report::pack_commit(
        &template,
        Uuid::new_v4(),
        Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap(),
        &events(5_000),
        &key(),
    );
    assert!(commits.len() > 1);
    for r in commits.iter().chain(&Report::pack_commit(
        &template,
        Uuid::new_v4(),
        Utc::now(),
        &[],
        &key(),
    )) {
        assert_valid(&v, &encoded(r));
    }
    // The row definition lives in the report schema: validate inflated arrays against a copy of it whose
    // root is an array of rows.
    let mut rows_schema = schema();
    rows_schema["type"] = json!("array");
    rows_schema["items"] = json!({ "$ref": "#/$defs/firewallRow" });
    for k in ["required", "properties", "additionalProperties"] {
        rows_schema.as_object_mut().unwrap().remove(k);
    }
    let rows_validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&rows_schema)
        .unwrap();
    let batches = Report::pack_logs(&template, &rows(3_000), &key());
    for r in &batches {
        let instance = encoded(r);
        assert_valid(&v, &instance);
        assert_valid(&rows_validator, &inflated_rows(&instance));
    }
}

/// A change that breaks an encoded report.
type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn broken_reports_are_invalid() {
    let v = validator();
    let good = encoded(
        &Report::pack_commit(
            &report(ReportBody::Logs(LogBatch::default())),
            Uuid::new_v4(),
            Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap(),
            &events(3),
            &key(),
        )[0],
    );
    assert_valid(&v, &good);
    let mutations: Vec<(&str, Mutation)> = vec![
        ("unknown field", Box::new(|m| m["extra"] = json!(1))),
        (
            "missing site",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("site");
            }),
        ),
        (
            "two bodies",
            Box::new(|m| m["body"]["heartbeat"] = json!({})),
        ),
        (
            "unknown body",
            Box::new(|m| m["body"] = json!({"other": {}})),
        ),
        (
            "unknown event",
            Box::new(|m| m["body"]["commit"]["events"][0]["event"] = json!("allow")),
        ),
        (
            "bad target",
            Box::new(|m| m["body"]["commit"]["events"][0]["targets"] = json!(["10.0.0.1/32"])),
        ),
        (
            "part 0",
            Box::new(|m| m["body"]["commit"]["part"] = json!(0)),
        ),
        (
            "offset instead of Z",
            Box::new(|m| m["created_at"] = json!("2026-12-01T06:00:00+00:00")),
        ),
        (
            "null instead of omitted",
            Box::new(|m| m["body"]["commit"]["events"][0]["reason"] = Value::Null),
        ),
        (
            "unknown event field",
            Box::new(|m| m["body"]["commit"]["events"][0]["count"] = json!(1)),
        ),
    ];
    for (what, mutate) in mutations {
        let mut m = good.clone();
        mutate(&mut m);
        assert!(!v.is_valid(&m), "{what} should be invalid: {m}");
    }
}
