//! Property tests: whatever the payload, no special-purpose or allowlisted address is ever queued, and no
//! input makes extraction, planning, packing or signing panic.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use ipnet::IpNet;
use portcullis::alert::{self, ExtractConfig};
use portcullis::plan::Policy;
use portcullis::service::{process, Function};
use portcullis::MemoryQueues;
use proptest::prelude::*;
use queue_message::policy::{SPECIAL_IPV4, SPECIAL_IPV6};
use queue_message::{BlockMessage, NeverBlock, SigningKey, Target};
use serde_json::{json, Value};

const ALLOW: &str = "20.30.0.0/16";

fn policy() -> Policy {
    Policy {
        never: NeverBlock::new(vec![ALLOW.parse().unwrap()], vec![], 16, 32),
        ..Policy::default()
    }
}

/// Addresses inside special-purpose ranges, the allowlist, or anywhere; in every spelling we accept.
fn address() -> impl Strategy<Value = String> {
    let special =
        (0..SPECIAL_IPV4.len() + SPECIAL_IPV6.len(), any::<u128>()).prop_map(|(i, bits)| {
            let range = SPECIAL_IPV4.iter().chain(SPECIAL_IPV6).nth(i).unwrap();
            let net: IpNet = range.cidr.parse().unwrap();
            inside(net, bits)
        });
    let allowed = any::<u128>().prop_map(|bits| inside(ALLOW.parse().unwrap(), bits));
    let v4 = any::<u32>().prop_map(|v| std::net::Ipv4Addr::from(v).to_string());
    let v6 = any::<u128>().prop_map(|v| std::net::Ipv6Addr::from(v).to_string());
    let mapped = any::<u32>().prop_map(|v| format!("::ffff:{}", std::net::Ipv4Addr::from(v)));
    let cidr = (any::<u32>(), 0u8..=32).prop_map(|(v, len)| {
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(v), len)
            .unwrap()
            .trunc();
        net.to_string()
    });
    let cidr6 = (any::<u128>(), 0u8..=128).prop_map(|(v, len)| {
        ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(v), len)
            .unwrap()
            .trunc()
            .to_string()
    });
    prop_oneof![special, allowed, v4, v6, mapped, cidr, cidr6, "[ -~]{0,20}"]
}

fn inside(net: IpNet, bits: u128) -> String {
    match net {
        IpNet::V4(n) => {
            let host = (bits as u32) & !u32::from(n.netmask());
            std::net::Ipv4Addr::from(u32::from(n.network()) | host).to_string()
        }
        IpNet::V6(n) => {
            let host = bits & !u128::from(n.netmask());
            std::net::Ipv6Addr::from(u128::from(n.network()) | host).to_string()
        }
    }
}

/// One payload of any kind naming `addresses`.
fn payload(kind: u8, addresses: &[String]) -> Value {
    match kind % 4 {
        0 => {
            json!({"objectSchemaType": "Incident", "object": {"id": "i", "properties": {"severity": "High",
            "relatedEntities": addresses.iter().map(|a| json!({"kind": "Ip", "properties": {"address": a}})).collect::<Vec<_>>()}}})
        }
        1 => json!({"SystemAlertId": "a", "Entities": serde_json::to_string(
            &addresses.iter().enumerate().map(|(i, a)| json!({"$id": i.to_string(), "Type": "ip", "Address": a})).collect::<Vec<_>>()).unwrap()}),
        2 => json!({"SystemAlertId": "a", "Entities": [{"$id": "1", "Type": "host",
            "IpInterfaces": addresses.iter().map(|a| json!({"Type": "IP", "Address": a})).collect::<Vec<_>>()}]}),
        _ => {
            json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {"monitorCondition": "Fired"},
            "alertContext": {"condition": {"allOf": [{"dimensions":
                addresses.iter().map(|a| json!({"name": "ip", "value": a})).collect::<Vec<_>>()}]}}}})
        }
    }
}

/// Duration texts, valid and not: huge numbers, repeated and out-of-order units, fractions, garbage.
fn duration_text() -> impl Strategy<Value = String> {
    let component = (
        prop_oneof![
            Just("1".to_owned()),
            Just("11574074".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("0.5".to_owned()),
            Just("1e300".to_owned()),
            "[0-9]{1,12}",
        ],
        prop_oneof![
            Just('W'),
            Just('D'),
            Just('H'),
            Just('M'),
            Just('S'),
            Just('Y')
        ],
    )
        .prop_map(|(n, u)| format!("{n}{u}"));
    let iso = (
        prop::collection::vec(component.clone(), 0..12),
        prop::option::of(prop::collection::vec(component, 1..6)),
    )
        .prop_map(|(date, time)| {
            let mut text = format!("P{}", date.concat());
            if let Some(time) = time {
                text.push('T');
                text.push_str(&time.concat());
            }
            text
        });
    prop_oneof![iso, "[PTWDHMS0-9.,]{0,30}"]
}

fn pinned_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap()
}

/// Runs one body through the whole request path (parse, plan, pack, sign, in-memory queue, reply) and
/// checks every queued message decodes and ends no later than the cap.
fn through_the_service(function: Function, body: &[u8]) -> Result<(), TestCaseError> {
    let key = SigningKey::from_bytes(vec![7; 32]).unwrap();
    let queues = Arc::new(MemoryQueues::new(&["q"]));
    let mut state = portcullis::memory_state(key.clone(), &queues);
    state.policy = policy();
    state.clock = pinned_now;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let processed = runtime.block_on(process(&state, function, Some("application/json"), body));
    prop_assert!(
        processed.reply.status.as_u16() < 500,
        "{:?}",
        processed.reply
    );
    let cap = pinned_now() + state.policy.ttl.max;
    for stored in queues.messages("q") {
        let message = BlockMessage::decode(&stored.text, std::slice::from_ref(&key)).unwrap();
        prop_assert!(message.expires_at <= cap);
        prop_assert!(message.targets.iter().all(|t| !is_protected(t)));
        prop_assert_eq!(
            stored.ttl_secs,
            (message.expires_at - pinned_now()).num_seconds()
        );
    }
    Ok(())
}

/// Representative addresses of every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries
/// (RFC 6890 and updates), plus multicast, link-local and reserved space, written out by hand from the
/// registries, NOT derived from `SPECIAL_IPV4`/`SPECIAL_IPV6`: a range dropped from those tables fails
/// [`every_registry_entry_is_refused`]. First and last addresses where a range is easy to get wrong.
const MUST_REFUSE: &[(&str, &str)] = &[
    ("0.0.0.0", "this host on this network, RFC 1122"),
    ("0.255.255.255", "this network, RFC 791"),
    ("10.0.0.0", "private-use, RFC 1918"),
    ("10.255.255.255", "private-use, RFC 1918"),
    ("100.64.0.1", "shared address space, RFC 6598"),
    ("100.127.255.254", "shared address space, RFC 6598"),
    ("127.0.0.1", "loopback, RFC 1122"),
    ("127.255.255.255", "loopback, RFC 1122"),
    ("169.254.0.1", "link-local, RFC 3927"),
    ("169.254.169.254", "link-local (cloud metadata), RFC 3927"),
    ("172.16.0.1", "private-use, RFC 1918"),
    ("172.31.255.255", "private-use, RFC 1918"),
    (
        "192.0.0.1",
        "IPv4 service continuity prefix (DS-Lite), RFC 7335",
    ),
    ("192.0.0.8", "IPv4 dummy address, RFC 7600"),
    ("192.0.0.9", "port control protocol anycast, RFC 7723"),
    (
        "192.0.0.10",
        "traversal using relays around NAT anycast, RFC 8155",
    ),
    ("192.0.0.170", "NAT64/DNS64 discovery, RFC 8880"),
    ("192.0.0.171", "NAT64/DNS64 discovery, RFC 8880"),
    ("192.0.0.255", "IETF protocol assignments, RFC 6890"),
    ("192.0.2.1", "documentation TEST-NET-1, RFC 5737"),
    ("192.31.196.1", "AS112-v4, RFC 7535"),
    ("192.52.193.1", "AMT, RFC 7450"),
    ("192.88.99.1", "deprecated 6to4 relay anycast, RFC 7526"),
    ("192.168.0.1", "private-use, RFC 1918"),
    ("192.168.255.255", "private-use, RFC 1918"),
    ("192.175.48.1", "direct delegation AS112 service, RFC 7534"),
    ("198.18.0.1", "benchmarking, RFC 2544"),
    ("198.19.255.254", "benchmarking, RFC 2544"),
    ("198.51.100.7", "documentation TEST-NET-2, RFC 5737"),
    ("203.0.113.10", "documentation TEST-NET-3, RFC 5737"),
    ("224.0.0.1", "multicast, RFC 5771"),
    ("239.255.255.250", "multicast (SSDP), RFC 5771"),
    ("240.0.0.1", "reserved, RFC 1112"),
    ("255.255.255.254", "reserved, RFC 1112"),
    ("255.255.255.255", "limited broadcast, RFC 919"),
    ("::", "unspecified address, RFC 4291"),
    ("::1", "loopback, RFC 4291"),
    ("::102:304", "IPv4-compatible (deprecated), RFC 4291"),
    ("::ffff:10.0.0.1", "IPv4-mapped private-use, RFC 4291"),
    ("64:ff9b::808:808", "IPv4-IPv6 translation, RFC 6052"),
    ("64:ff9b:1::1", "local-use IPv4-IPv6 translation, RFC 8215"),
    ("100::1", "discard-only, RFC 6666"),
    ("100:0:0:1::1", "dummy IPv6 prefix, RFC 9780"),
    ("2001::1", "TEREDO, RFC 4380"),
    ("2001:1::1", "port control protocol anycast, RFC 7723"),
    (
        "2001:1::2",
        "traversal using relays around NAT anycast, RFC 8155",
    ),
    (
        "2001:1::3",
        "DNS-SD service registration protocol anycast, RFC 9665",
    ),
    ("2001:2::1", "benchmarking, RFC 5180"),
    ("2001:3::1", "AMT, RFC 7450"),
    ("2001:4:112::1", "AS112-v6, RFC 7535"),
    ("2001:20::1", "ORCHIDv2, RFC 7343"),
    (
        "2001:30::1",
        "drone remote ID protocol entity tags, RFC 9374",
    ),
    ("2001:db8::1", "documentation, RFC 3849"),
    ("2002::1", "6to4, RFC 3056"),
    (
        "2620:4f:8000::1",
        "direct delegation AS112 service, RFC 7534",
    ),
    ("3fff::1", "documentation, RFC 9637"),
    ("5f00::1", "segment routing SIDs, RFC 9602"),
    ("fc00::1", "unique-local, RFC 4193"),
    ("fdff:ffff::1", "unique-local, RFC 4193"),
    ("fe80::1", "link-local unicast, RFC 4291"),
    ("febf:ffff::1", "link-local unicast, RFC 4291"),
    ("ff02::1", "multicast, RFC 4291"),
    ("ff05::1:3", "multicast, RFC 4291"),
];

#[test]
fn every_registry_entry_is_refused() {
    let never = NeverBlock::default();
    for (address, entry) in MUST_REFUSE {
        let target = Target::parse(address).unwrap_or_else(|e| panic!("{address}: {e}"));
        match never.check(&target) {
            Err(queue_message::Refusal::SpecialPurpose(_)) => {}
            other => {
                panic!("{address} ({entry}) must be refused as special-purpose, got {other:?}")
            }
        }
    }
    // And the oracle is not trivially true: ordinary public addresses pass.
    for address in ["52.1.1.1", "8.8.8.8", "2a01:111:f400::1", "2603:1030::1"] {
        assert!(
            never.check(&Target::parse(address).unwrap()).is_ok(),
            "{address}"
        );
    }
}

const LABS: [&str; 3] = ["198.51.100.0/24", "10.1.0.0/16", "2001:db8:1::/48"];
const LAB_ALLOW: &str = "10.1.2.0/24";

fn lab_policy() -> Policy {
    Policy {
        never: NeverBlock::new(
            vec![LAB_ALLOW.parse().unwrap()],
            LABS.iter().map(|l| l.parse().unwrap()).collect(),
            16,
            32,
        ),
        ..Policy::default()
    }
}

fn is_protected(target: &Target) -> bool {
    SPECIAL_IPV4
        .iter()
        .chain(SPECIAL_IPV6)
        .chain(std::iter::once(&queue_message::SpecialRange {
            cidr: ALLOW,
            name: "",
            rfc: "",
        }))
        .any(|r| target.overlaps(&r.cidr.parse().unwrap()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_protected_address_is_ever_queued(kind in any::<u8>(), addresses in prop::collection::vec(address(), 0..40)) {
        let body = payload(kind, &addresses).to_string();
        let alert = alert::parse(body.as_bytes(), &ExtractConfig::default()).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap();
        let plan = policy().plan(&alert, now).unwrap();
        for target in &plan.targets {
            prop_assert!(!is_protected(target), "{target} was queued");
            let min = if target.is_ipv4() { 16 } else { 32 };
            prop_assert!(target.net().prefix_len() >= min, "{} is too broad", target);
        }
        // Every distinct valid address is accounted for, queued or skipped.
        let distinct: std::collections::HashSet<Target> = addresses.iter().filter_map(|a| Target::parse(a).ok()).collect();
        let accounted = plan.outcomes.iter().filter(|o| o.target.is_some()).count();
        prop_assert_eq!(accounted, distinct.len());
    }

    #[test]
    fn manual_requests_never_queue_protected_addresses(addresses in prop::collection::vec(address(), 1..20)) {
        let body = json!({"action": "block", "targets": addresses}).to_string();
        if let Ok(alert) = portcullis::manual::parse(body.as_bytes()) {
            let plan = policy().plan(&alert, Utc::now()).unwrap();
            prop_assert!(plan.targets.iter().all(|t| !is_protected(t)));
        }
    }

    #[test]
    fn durations_in_custom_details_never_panic(kind in any::<u8>(), addresses in prop::collection::vec(address(), 1..5),
                                               block_for in duration_text(), as_string in any::<bool>()) {
        let mut value = payload(kind, &addresses);
        let details = json!({"PortcullisBlockFor": [block_for]});
        let details = if as_string { Value::String(details.to_string()) } else { details };
        match kind % 4 {
            0 => value["object"]["properties"]["alerts"] = json!([{"properties": {"additionalData": {"Custom Details": details}}}]),
            1 | 2 => value["ExtendedProperties"] = json!({"Custom Details": details}),
            _ => value["data"]["customProperties"] = json!({"PortcullisBlockFor": block_for}),
        }
        through_the_service(Function::Alerts, value.to_string().as_bytes())?;
    }

    #[test]
    fn manual_ttls_never_panic(addresses in prop::collection::vec(address(), 1..5), ttl in duration_text()) {
        let body = json!({"action": "block", "targets": addresses, "ttl": ttl}).to_string();
        through_the_service(Function::Blocks, body.as_bytes())?;
    }

    #[test]
    fn lab_ranges_carve_out_but_the_allowlist_still_wins(lab in 0..LABS.len(), bits in any::<u128>(),
                                                          pick in 0..MUST_REFUSE.len()) {
        let in_lab = inside(LABS[lab].parse().unwrap(), bits);
        let (special, _) = MUST_REFUSE[pick];
        let body = json!({"action": "block", "targets": [in_lab, special]}).to_string();
        let alert = portcullis::manual::parse(body.as_bytes()).unwrap();
        let plan = lab_policy().plan(&alert, pinned_now()).unwrap();
        let queued = |text: &str| {
            let target = Target::parse(text).unwrap();
            plan.targets.contains(&target)
        };
        let lab_target = Target::parse(&in_lab).unwrap();
        let allowlisted = lab_target.overlaps(&LAB_ALLOW.parse().unwrap());
        // Inside a lab range: blocked, unless allowlisted.
        prop_assert_eq!(queued(&in_lab), !allowlisted, "{}", in_lab);
        // Outside every lab range: a special-purpose address is still refused.
        let special_target = Target::parse(special).unwrap();
        let in_any_lab = LABS.iter().any(|l| special_target.overlaps(&l.parse().unwrap()));
        if !in_any_lab {
            prop_assert!(!queued(special), "{} was queued", special);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = alert::parse(&bytes, &ExtractConfig::default());
        let _ = portcullis::manual::parse(&bytes);
    }

    #[test]
    fn mutated_payloads_never_panic(kind in any::<u8>(), addresses in prop::collection::vec(address(), 0..5),
                                    cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = payload(kind, &addresses).to_string().into_bytes();
        for (at, byte) in cuts {
            let i = at.index(bytes.len());
            match byte % 3 {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, b"{}[]\",:0\\"[usize::from(byte) % 9]),
            }
        }
        if let Ok(alert) = alert::parse(&bytes, &ExtractConfig::default()) {
            let _ = policy().plan(&alert, Utc::now());
        }
        let _ = portcullis::manual::parse(&bytes);
        through_the_service(Function::Alerts, &bytes)?;
        through_the_service(Function::Blocks, &bytes)?;
    }

    #[test]
    fn arbitrary_json_values_never_panic(value in arb_json()) {
        for wrapped in [
            value.clone(),
            json!({"objectSchemaType": "Incident", "object": value}),
            json!({"schemaId": "azureMonitorCommonAlertSchema", "data": value}),
            json!({"SystemAlertId": "x", "Entities": value, "ExtendedProperties": value}),
            json!({"SystemAlertId": "x", "Entities": value.to_string()}),
        ] {
            if let Ok(alert) = alert::parse(wrapped.to_string().as_bytes(), &ExtractConfig::default()) {
                let _ = policy().plan(&alert, Utc::now());
            }
            through_the_service(Function::Alerts, wrapped.to_string().as_bytes())?;
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z$ 0-9.:/]{0,12}".prop_map(Value::String),
        address().prop_map(Value::String),
        duration_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("Type".to_owned()),
                    Just("kind".to_owned()),
                    Just("Address".to_owned()),
                    Just("$id".to_owned()),
                    Just("$ref".to_owned()),
                    Just("properties".to_owned()),
                    Just("relatedEntities".to_owned()),
                    Just("alerts".to_owned()),
                    Just("Custom Details".to_owned()),
                    Just("PortcullisBlockFor".to_owned()),
                    Just("ValidUntil".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
