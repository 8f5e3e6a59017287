//! Unit tests of the report format: round trips, tampering, the golden known answers and packing.

use super::*;
use chrono::TimeZone;
use std::collections::HashSet;

fn key() -> SigningKey {
    SigningKey::from_bytes((0u8..32).collect()).unwrap()
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
}

fn incident() -> Source {
    Source {
        kind: "sentinel-incident".to_owned(),
        id: Some("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents/7d1e4b52-0a7e-4c47-9d0b-3a0f1f7f2c11".to_owned()),
        url: None,
        rule: Some("TI map IP to firewall".to_owned()),
        severity: Some("High".to_owned()),
    }
}

fn header(body: ReportBody) -> Report {
    Report {
        id: Uuid::from_u128(0x1111),
        site: "home-nas".to_owned(),
        agent_version: "0.1.0".to_owned(),
        created_at: at(6, 30),
        body,
    }
}

fn commit() -> Report {
    header(ReportBody::Commit(CommitReport {
        commit_id: Uuid::from_u128(0x2222),
        part: 1,
        parts: 1,
        committed_at: at(6, 29),
        totals: vec![EventTotal {
            event: EventKind::Block,
            source_kind: Some("sentinel-incident".to_owned()),
            source_id: incident().id,
            count: 2,
        }],
        events: vec![
            CommitEvent {
                event: EventKind::Block,
                targets: vec![
                    Target::parse("198.51.100.7").unwrap(),
                    Target::parse("2001:db8::/48").unwrap(),
                ],
                expires_at: Some(at(7, 29)),
                source: Some(incident()),
                reason: Some("Sentinel incident 42: TI <&> \"x\"".to_owned()),
                message_id: Some(Uuid::from_u128(0x3333).to_string()),
            },
            CommitEvent {
                event: EventKind::Refused,
                targets: vec![Target::parse("10.0.0.1").unwrap()],
                expires_at: None,
                source: Some(incident()),
                reason: Some("private".to_owned()),
                message_id: Some(Uuid::from_u128(0x3333).to_string()),
            },
            CommitEvent {
                event: EventKind::Poisoned,
                targets: Vec::new(),
                expires_at: None,
                source: None,
                reason: Some("bad signature".to_owned()),
                message_id: Some("b2c8a3e1-queue-message-id".to_owned()),
            },
        ],
    }))
}

fn heartbeat() -> Report {
    header(ReportBody::Heartbeat(Heartbeat {
        backend: "nftables".to_owned(),
        healthy: false,
        problems: vec!["last commit failed: nft exited 1".to_owned()],
        active_blocks: 1234,
        last_commit_at: Some(at(6, 0)),
        outbox_depth: 3,
        poisoned_since_last: 1,
    }))
}

fn row(i: u32) -> FirewallRow {
    let src = IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i));
    FirewallRow {
        time_generated: at(6, 29),
        site: "home-nas".to_owned(),
        device: "udm-pro".to_owned(),
        format: "unifi".to_owned(),
        action: Some(FirewallAction::Drop),
        rule: Some("WAN_IN-3000-D".to_owned()),
        interface: Some("eth8".to_owned()),
        protocol: Some("tcp".to_owned()),
        src_ip: Some(src),
        src_port: Some(40_000 + (i % 20_000) as u16),
        dst_ip: Some("203.0.113.10".parse().unwrap()),
        dst_port: Some((i % 65_535) as u16 + 1),
        count: u64::from(i % 50 + 1),
        first_seen: at(6, 28),
        last_seen: at(6, 29),
        dst_sample: vec!["203.0.113.10".parse().unwrap()],
        raw: None,
    }
}

fn logs(rows: Vec<FirewallRow>) -> Report {
    header(ReportBody::Logs(LogBatch { rows }))
}

#[test]
fn every_kind_round_trips_and_verifies() {
    for report in [commit(), heartbeat(), logs(vec![row(1), row(2)])] {
        let text = report.encode(&key());
        assert_eq!(Report::decode(&text, &[key()]).unwrap(), report);
        let wrapped = BASE64.encode(&text);
        assert_eq!(Report::decode(&wrapped, &[key()]).unwrap(), report);
    }
}

/// Known answer: a fixed key and report give exactly these bytes. A change here is a wire-format change
/// that every deployed agent and handler must agree on.
#[test]
fn golden_heartbeat() {
    let text = heartbeat().encode(&key());
    assert_eq!(text, GOLDEN_HEARTBEAT);
    assert_eq!(
        Report::decode(GOLDEN_HEARTBEAT, &[key()]).unwrap(),
        heartbeat()
    );
}

#[test]
fn golden_commit() {
    let text = commit().encode(&key());
    assert_eq!(text, GOLDEN_COMMIT);
    assert_eq!(Report::decode(GOLDEN_COMMIT, &[key()]).unwrap(), commit());
}

/// gzip output may change with the compressor's version, so the log-batch known answer is a decode: this
/// fixed text (written by this crate once) must keep decoding to exactly these rows.
#[test]
fn golden_log_batch_decodes() {
    let report = Report::decode(GOLDEN_LOGS, &[key()]).unwrap();
    assert_eq!(report, logs(vec![row(1), row(2)]));
}

const GOLDEN_HEARTBEAT: &str = r#"{"v":1,"id":"00000000-0000-0000-0000-000000001111","site":"home-nas","agent_version":"0.1.0","created_at":"2026-12-01T06:30:00Z","body":{"heartbeat":{"backend":"nftables","healthy":false,"problems":["last commit failed: nft exited 1"],"active_blocks":1234,"last_commit_at":"2026-12-01T06:00:00Z","outbox_depth":3,"poisoned_since_last":1}},"kid":"630dcd2966c43366","sig":"n/PDXXiXzfNbyrZI7u7BKPoCx66wbW8xtC9ShlR5QL0="}"#;
const GOLDEN_COMMIT: &str = r#"{"v":1,"id":"00000000-0000-0000-0000-000000001111","site":"home-nas","agent_version":"0.1.0","created_at":"2026-12-01T06:30:00Z","body":{"commit":{"commit_id":"00000000-0000-0000-0000-000000002222","part":1,"parts":1,"committed_at":"2026-12-01T06:29:00Z","totals":[{"event":"block","source_kind":"sentinel-incident","source_id":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents/7d1e4b52-0a7e-4c47-9d0b-3a0f1f7f2c11","count":2}],"events":[{"event":"block","targets":["198.51.100.7","2001:db8::/48"],"expires_at":"2026-12-01T07:29:00Z","source":{"kind":"sentinel-incident","id":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents/7d1e4b52-0a7e-4c47-9d0b-3a0f1f7f2c11","rule":"TI map IP to firewall","severity":"High"},"reason":"Sentinel incident 42: TI <&> \"x\"","message_id":"00000000-0000-0000-0000-000000003333"},{"event":"refused","targets":["10.0.0.1"],"source":{"kind":"sentinel-incident","id":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents/7d1e4b52-0a7e-4c47-9d0b-3a0f1f7f2c11","rule":"TI map IP to firewall","severity":"High"},"reason":"private","message_id":"00000000-0000-0000-0000-000000003333"},{"event":"poisoned","reason":"bad signature","message_id":"b2c8a3e1-queue-message-id"}]}},"kid":"630dcd2966c43366","sig":"BDbHWerRnUyYuLYLZyuj291MJwJ8YXDuDMobBPvFda4="}"#;
const GOLDEN_LOGS: &str = r#"{"v":1,"id":"00000000-0000-0000-0000-000000001111","site":"home-nas","agent_version":"0.1.0","created_at":"2026-12-01T06:30:00Z","body":{"logs":{"encoding":"gzip","rows":2,"data":"H4sIAAAAAAAA/9SQX0vDMBTFv0uem3KT6uj6NhyTgoxhB4JjSEjvWGBJSpr6In53b1oVVGRvg73l/nLun3N2b2xrLN6jw6AitqxiEuSMC8lBbGFWyXkF8Mwy1piI9Hv0FrlTPZElvhqd2NBa3gVPaOWDVTEhZw6GwEJH4x2BNviO6sfhlDqeFuuXes0LAOBLwrWLGA5qnIbxWBLaBB+99iciUafWJui6o0rMy/xW5AIgFxPe+EA7b2iYoKv6OMokFDkpREFKNuJJJjN25wc3vVYm9LFBdH99l5++H9R/iq9kaHSjbJeM7X6u3b9nV52v/J2vPJ9v8Z1vcYF89x8AAAD//wMAAf+N4cECAAA="}},"kid":"630dcd2966c43366","sig":"zx65SXN7C6Qm82bckxBjHVXn98Lygc/87nzYYV6W2K0="}"#;

#[test]
fn tampering_unknown_keys_and_extra_fields_are_refused() {
    let text = commit().encode(&key());
    assert_eq!(
        Report::decode(&text.replace("198.51.100.7", "198.51.100.8"), &[key()]),
        Err(DecodeError::BadSignature)
    );
    assert_eq!(
        Report::decode(&text.replace("home-nas", "other-site"), &[key()]),
        Err(DecodeError::BadSignature)
    );
    let other = SigningKey::from_bytes(vec![9; 32]).unwrap();
    assert_eq!(
        Report::decode(&commit().encode(&other), &[key()]),
        Err(DecodeError::UnknownKey(other.id().to_owned()))
    );
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["body"]["commit"]["extra"] = true.into();
    assert!(matches!(
        Report::decode(&value.to_string(), &[key()]),
        Err(DecodeError::Malformed(_))
    ));
    // A non-canonical timestamp inside the body is refused, not re-spelled.
    let loose = text.replace(
        "\"committed_at\":\"2026-12-01T06:29:00Z\"",
        "\"committed_at\":\"2026-12-01T06:29:00+00:00\"",
    );
    assert_ne!(loose, text);
    assert!(matches!(
        Report::decode(&loose, &[key()]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn block_messages_and_reports_are_not_interchangeable() {
    let block = crate::BlockMessage {
        id: Uuid::from_u128(1),
        action: crate::Action::Block,
        targets: vec![Target::parse("198.51.100.7").unwrap()],
        expires_at: at(8, 0),
        reason: "r".to_owned(),
        source: incident(),
        issued_at: at(6, 0),
    };
    assert!(matches!(
        Report::decode(&block.encode(&key()), &[key()]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        crate::BlockMessage::decode(&heartbeat().encode(&key()), &[key()]),
        Err(DecodeError::Malformed(_))
    ));
}

/// A log batch whose data is re-signed by someone holding the key but inflates beyond the bound is refused
/// before it is parsed.
#[test]
fn log_batches_that_inflate_too_far_or_lie_about_rows_are_refused() {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(b"[").unwrap();
    encoder
        .write_all(&vec![b' '; MAX_LOG_BATCH_JSON_BYTES + 10])
        .unwrap();
    encoder.write_all(b"]").unwrap();
    let bomb = WireLogs {
        encoding: GZIP.to_owned(),
        rows: 0,
        data: BASE64.encode(encoder.finish().unwrap()),
    };
    let text = logs(Vec::new()).encode_body(WireBody::Logs(bomb), &key());
    let err = Report::decode(&text, &[key()]).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed(m) if m.contains("inflates")),
        "{err}"
    );

    let mut lying = logs(vec![row(1)]).wire_body();
    if let WireBody::Logs(l) = &mut lying {
        l.rows = 5;
    }
    let err = Report::decode(&logs(Vec::new()).encode_body(lying, &key()), &[key()]).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed(m) if m.contains("says 5 rows")),
        "{err}"
    );

    let not_gzip = WireLogs {
        encoding: GZIP.to_owned(),
        rows: 0,
        data: BASE64.encode(b"[]"),
    };
    let text = logs(Vec::new()).encode_body(WireBody::Logs(not_gzip), &key());
    assert!(matches!(
        Report::decode(&text, &[key()]),
        Err(DecodeError::Malformed(_))
    ));
}

fn targets(n: u32) -> Vec<Target> {
    (0..n)
        .map(|i| Target::from_addr(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
        .collect()
}

/// P12's first half: a 10k-address commit costs at most 20 report messages (≤ 0.002 per address), every
/// part fits, every target arrives once in order, parts are numbered and part 1 has the totals.
#[test]
fn a_10k_commit_packs_into_few_messages_that_fit_and_keep_every_target() {
    let all = targets(10_000);
    let events = vec![
        CommitEvent {
            event: EventKind::Block,
            targets: all[..9_000].to_vec(),
            expires_at: Some(at(9, 0)),
            source: Some(incident()),
            reason: Some("bulk".to_owned()),
            message_id: Some("m1".to_owned()),
        },
        CommitEvent {
            event: EventKind::Poisoned,
            targets: Vec::new(),
            expires_at: None,
            source: None,
            reason: Some("bad signature".to_owned()),
            message_id: Some("m2".to_owned()),
        },
        CommitEvent {
            event: EventKind::Extend,
            targets: all[9_000..].to_vec(),
            expires_at: Some(at(10, 0)),
            source: Some(incident()),
            reason: Some("bulk".to_owned()),
            message_id: Some("m3".to_owned()),
        },
    ];
    let reports = Report::pack_commit(&commit(), Uuid::from_u128(7), at(6, 29), &events, &key());
    assert!(reports.len() > 1, "10k addresses do not fit one message");
    assert!(
        reports.len() as f64 / 10_000.0 <= 0.002,
        "{} messages for 10k addresses",
        reports.len()
    );
    let mut seen: Vec<(EventKind, Target)> = Vec::new();
    let mut poisoned = 0;
    let ids: HashSet<Uuid> = reports.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), reports.len());
    for (i, report) in reports.iter().enumerate() {
        let text = report.encode(&key());
        assert!(
            xml_escaped_len(&text) <= MAX_MESSAGE_BYTES,
            "part {i}: {} bytes",
            xml_escaped_len(&text)
        );
        let ReportBody::Commit(c) = Report::decode(&text, &[key()]).unwrap().body else {
            panic!("not a commit report");
        };
        assert_eq!(c.commit_id, Uuid::from_u128(7));
        assert_eq!(c.part as usize, i + 1);
        assert_eq!(c.parts as usize, reports.len());
        if i == 0 {
            let block = c
                .totals
                .iter()
                .find(|t| t.event == EventKind::Block)
                .unwrap();
            assert_eq!(block.count, 9_000);
            assert_eq!(block.source_id, incident().id);
            let extend = c
                .totals
                .iter()
                .find(|t| t.event == EventKind::Extend)
                .unwrap();
            assert_eq!(extend.count, 1_000);
        } else {
            assert!(c.totals.is_empty());
        }
        for e in c.events {
            if e.event == EventKind::Poisoned {
                poisoned += 1;
                assert_eq!(e.message_id.as_deref(), Some("m2"));
            } else {
                assert_eq!(e.source, Some(incident()), "a split event keeps its claim");
            }
            seen.extend(e.targets.iter().map(|t| (e.event, *t)));
        }
    }
    assert_eq!(poisoned, 1);
    let expected: Vec<(EventKind, Target)> = all[..9_000]
        .iter()
        .map(|t| (EventKind::Block, *t))
        .chain(all[9_000..].iter().map(|t| (EventKind::Extend, *t)))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn an_empty_commit_is_one_report() {
    let reports = Report::pack_commit(&commit(), Uuid::from_u128(7), at(6, 29), &[], &key());
    assert_eq!(reports.len(), 1);
    let ReportBody::Commit(c) = &reports[0].body else {
        panic!("not a commit report");
    };
    assert_eq!((c.part, c.parts, c.events.len()), (1, 1, 0));
}

#[test]
fn log_rows_pack_under_both_limits_in_order() {
    let rows: Vec<FirewallRow> = (0..6_000).map(row).collect();
    let reports = Report::pack_logs(&commit(), &rows, &key());
    assert!(reports.len() > 1);
    let mut back = Vec::new();
    for report in &reports {
        let text = report.encode(&key());
        assert!(xml_escaped_len(&text) <= MAX_MESSAGE_BYTES);
        let ReportBody::Logs(batch) = Report::decode(&text, &[key()]).unwrap().body else {
            panic!("not a log batch");
        };
        assert!(serde_json::to_vec(&batch.rows).unwrap().len() <= MAX_LOG_BATCH_JSON_BYTES);
        back.extend(batch.rows);
    }
    assert_eq!(back, rows);
    // Compression is what makes this cheap: many rows per message, not one.
    assert!(
        rows.len() / reports.len() > 100,
        "{} messages for {} rows",
        reports.len(),
        rows.len()
    );
}

#[test]
fn a_single_oversized_raw_row_is_cut_to_fit_not_lost() {
    let mut big = row(1);
    // Text gzip cannot shrink much: printable characters from a linear congruential generator.
    let mut state = 12_345u64;
    big.raw = Some(
        (0..200_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                char::from(b'!' + ((state >> 33) % 94) as u8)
            })
            .collect(),
    );
    let reports = Report::pack_logs(&commit(), std::slice::from_ref(&big), &key());
    assert_eq!(reports.len(), 1);
    assert!(reports[0].encoded_len(&key()) <= MAX_MESSAGE_BYTES);
    let ReportBody::Logs(batch) = &reports[0].body else {
        panic!("not a log batch");
    };
    let raw = batch.rows[0].raw.as_deref().unwrap();
    assert!(!raw.is_empty() && raw.len() < 200_000);
    assert!(big.raw.as_deref().unwrap().starts_with(raw));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text is refused with an error, never a panic.
        #[test]
        fn arbitrary_text(text in ".{0,400}") {
            let _ = Report::decode(&text, &[key()]);
        }

        /// Any single-byte change of a real report (commit, heartbeat, log batch) is refused or, if the
        /// change is invisible after parsing, decodes to the same report; never a panic.
        #[test]
        fn mutated_reports(which in 0usize..3, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let report = [commit(), heartbeat(), logs(vec![row(1)])][which].clone();
            let mut bytes = report.encode(&key()).into_bytes();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                if let Ok(decoded) = Report::decode(&text, &[key()]) {
                    prop_assert_eq!(decoded, report);
                }
            }
        }
    }
}
