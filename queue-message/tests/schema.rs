//! The committed JSON Schema (`schema/block-message.v1.json`) against real encoded messages: everything
//! `BlockMessage::encode` writes is valid, and messages that break the format are not.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use queue_message::{Action, BlockMessage, SigningKey, Source, Target};
use serde_json::{json, Value};
use uuid::Uuid;

fn schema() -> Value {
    serde_json::from_str(include_str!("../schema/block-message.v1.json")).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema compiles")
}

fn key() -> SigningKey {
    SigningKey::from_bytes(vec![3; 32]).unwrap()
}

fn message(targets: &[&str], source: Source, action: Action) -> BlockMessage {
    BlockMessage {
        id: Uuid::new_v4(),
        action,
        targets: targets.iter().map(|t| Target::parse(t).unwrap()).collect(),
        expires_at: Utc.with_ymd_and_hms(2026, 12, 26, 7, 0, 0).unwrap(),
        reason: "Sentinel incident 3177: My incident <&> \"quoted\"".to_owned(),
        source,
        issued_at: Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap(),
    }
}

fn encoded(m: &BlockMessage) -> Value {
    serde_json::from_str(&m.encode(&key())).unwrap()
}

#[test]
fn the_schema_is_valid_draft_2020_12() {
    assert!(jsonschema::meta::is_valid(&schema()));
}

#[test]
fn real_messages_are_valid() {
    let v = validator();
    let full = Source {
        kind: "sentinel-incident".to_owned(),
        id: Some("/subscriptions/x/incidents/73e01a99".to_owned()),
        url: Some("https://portal.azure.com/#asset/x".to_owned()),
        rule: Some("My incident".to_owned()),
        severity: Some("High".to_owned()),
    };
    let manual = Source {
        kind: "manual".to_owned(),
        ..Source::default()
    };
    for m in [
        message(
            &["23.97.60.214", "2603:1030::/48", "198.51.100.0/24", "::1"],
            full,
            Action::Block,
        ),
        message(
            &[
                "0.0.0.0/0",
                "::/0",
                "255.255.255.255",
                "1.2.3.4/31",
                "2001:db8::1:0:0:1",
            ],
            manual.clone(),
            Action::Unblock,
        ),
        message(&[], manual, Action::Block),
    ] {
        let instance = encoded(&m);
        let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{instance}: {errors:?}");
    }
}

#[test]
fn packed_bulk_messages_are_valid() {
    let v = validator();
    let targets: Vec<Target> = (0..5000u32)
        .map(|i| {
            Target::from_addr(
                std::net::Ipv6Addr::from(
                    0x2603_1030_0000_0000_0000_0000_0000_0000u128 + u128::from(i) * 65_537,
                )
                .into(),
            )
        })
        .collect();
    let template = message(
        &[],
        Source {
            kind: "azure-monitor".to_owned(),
            ..Source::default()
        },
        Action::Block,
    );
    let messages = BlockMessage::pack(&template, &targets, &key());
    assert!(messages.len() > 1);
    for m in &messages {
        assert!(v.is_valid(&encoded(m)));
    }
}

/// A change that breaks an encoded message.
type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn broken_messages_are_invalid() {
    let v = validator();
    let good = encoded(&message(
        &["23.97.60.214"],
        Source {
            kind: "manual".to_owned(),
            ..Source::default()
        },
        Action::Block,
    ));
    assert!(v.is_valid(&good));
    let mutations: Vec<(&str, Mutation)> = vec![
        ("unknown field", Box::new(|m| m["extra"] = json!(1))),
        (
            "missing sig",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("sig");
            }),
        ),
        (
            "missing source",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("source");
            }),
        ),
        ("version 2", Box::new(|m| m["v"] = json!(2))),
        ("bad action", Box::new(|m| m["action"] = json!("drop"))),
        ("not a uuid", Box::new(|m| m["id"] = json!("42"))),
        (
            "bad target",
            Box::new(|m| m["targets"] = json!(["example.com"])),
        ),
        (
            "a /32 is written bare",
            Box::new(|m| m["targets"] = json!(["23.97.60.214/32"])),
        ),
        (
            "upper-case IPv6",
            Box::new(|m| m["targets"] = json!(["2603:DB8::/48"])),
        ),
        (
            "duplicate targets",
            Box::new(|m| m["targets"] = json!(["23.97.60.214", "23.97.60.214"])),
        ),
        (
            "leading zero",
            Box::new(|m| m["targets"] = json!(["023.97.60.214"])),
        ),
        (
            "fractional seconds",
            Box::new(|m| m["expires_at"] = json!("2026-12-26T07:00:00.5Z")),
        ),
        (
            "offset instead of Z",
            Box::new(|m| m["issued_at"] = json!("2026-11-26T07:00:00+00:00")),
        ),
        ("short kid", Box::new(|m| m["kid"] = json!("abc"))),
        (
            "sig of the wrong length",
            Box::new(|m| m["sig"] = json!("c2ln")),
        ),
        (
            "empty source kind",
            Box::new(|m| m["source"]["kind"] = json!("")),
        ),
        (
            "unknown source field",
            Box::new(|m| m["source"]["tenant"] = json!("t")),
        ),
        (
            "targets not an array",
            Box::new(|m| m["targets"] = json!("23.97.60.214")),
        ),
    ];
    for (what, mutate) in mutations {
        let mut m = good.clone();
        mutate(&mut m);
        assert!(!v.is_valid(&m), "{what} should be invalid: {m}");
    }
}

proptest! {
    #[test]
    fn any_encoded_message_is_valid(
        v4 in prop::collection::vec((any::<u32>(), 0u8..=32), 0..20),
        v6 in prop::collection::vec((any::<u128>(), 0u8..=128), 0..20),
        reason in ".{0,80}",
        kind in "[a-z-]{1,20}",
        id in proptest::option::of(".{0,40}"),
        unblock in any::<bool>(),
    ) {
        let mut targets: Vec<Target> = v4
            .into_iter()
            .map(|(a, len)| Target::from_net(ipnet::Ipv4Net::new(a.into(), len).unwrap().trunc().into()).unwrap())
            .chain(v6.into_iter().map(|(a, len)| {
                Target::from_net(ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(a), len).unwrap().trunc().into()).unwrap()
            }))
            .collect();
        targets.sort();
        targets.dedup();
        let m = BlockMessage {
            id: Uuid::new_v4(),
            action: if unblock { Action::Unblock } else { Action::Block },
            targets,
            expires_at: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            reason,
            source: Source { kind, id, ..Source::default() },
            issued_at: Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap(),
        };
        let instance = encoded(&m);
        let errors: Vec<String> = validator().iter_errors(&instance).map(|e| e.to_string()).collect();
        prop_assert!(errors.is_empty(), "{}: {:?}", instance, errors);
    }
}
