//! A fake RouterOS 7 REST API (address lists with timeouts) and the MikroTik tests.
//!
//! Fixture sources: help.mikrotik.com "REST API" (below `/rest`, HTTP Basic, every value a string, GET =
//! print with `?prop=value` filters and `.proplist`, PUT = add answering the new object with its `.id`,
//! PATCH = set, DELETE = remove answering 204; errors `{"error":404,"message":"Not Found"}` and
//! `{"error":400,"message":"Bad Request","detail":"…"}`); help.mikrotik.com "Address-lists" (`list`,
//! `address`, `timeout`, `comment`, `dynamic`; entries with a timeout are kept in RAM and lost on
//! reboot); the duplicate answer `failure: already have such entry` as clients handle it (e.g.
//! fail2ban-style scripts and RouterOS bouncers, `shared/reference/firewalls.md` §9); IPv6 entries print
//! with their prefix length (`2001:db8::7/128`); `/rest/system/resource` carries `version`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use portcullis_agent::backends::mikrotik::{self, format_timeout, parse_timeout};
use portcullis_agent::backends::{Backend, BackendError};
use queue_message::Target;
use serde_json::{json, Value};

use super::server::{self, entry, json, Counters, Faults, Request, Running};
use crate::contract::{self, Device, Options};

pub const USER: &str = "portcullis";
pub const PASSWORD: &str = "Rb!7kq2Pz";

#[derive(Debug, Clone)]
pub struct Entry {
    pub family: &'static str,
    pub list: String,
    pub address: String,
    pub comment: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    next: u64,
    raw_rule: bool,
}

/// The fake router.
#[derive(Debug, Default)]
pub struct FakeRouter {
    state: Mutex<State>,
    pub faults: Faults,
    pub counters: Counters,
}

fn err(status: StatusCode, detail: &str) -> Response {
    let message = status.canonical_reason().unwrap_or("Error");
    json(
        status,
        &json!({"error": status.as_u16(), "message": message, "detail": detail}),
    )
}

impl FakeRouter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub async fn start(self: &Arc<Self>) -> Running {
        server::start(self, Self::handle).await
    }

    /// Adds an entry by hand (someone else's, or ours from an earlier run).
    pub fn insert(&self, family: &'static str, list: &str, address: &str, comment: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        state.next += 1;
        let id = state.next;
        state.entries.insert(
            id,
            Entry {
                family,
                list: list.to_owned(),
                address: address.to_owned(),
                comment: comment.map(str::to_owned),
                expires: None,
            },
        );
    }

    /// A reboot: entries with a timeout are gone.
    pub fn reboot(&self) {
        self.state
            .lock()
            .unwrap()
            .entries
            .retain(|_, e| e.expires.is_none());
    }

    pub fn entries(&self) -> Vec<Entry> {
        let now = Utc::now();
        let mut state = self.state.lock().unwrap();
        state
            .entries
            .retain(|_, e| e.expires.is_none_or(|x| x > now));
        state.entries.values().cloned().collect()
    }

    pub fn add_raw_rule(&self) {
        self.state.lock().unwrap().raw_rule = true;
    }

    fn print(id: u64, e: &Entry, now: DateTime<Utc>) -> Value {
        let mut out = json!({
            ".id": format!("*{id:X}"), "list": e.list, "address": e.address,
            "creation-time": "2025-01-01 10:00:00", "disabled": "false",
            "dynamic": if e.expires.is_some() { "true" } else { "false" },
        });
        if let Some(comment) = &e.comment {
            out["comment"] = json!(comment);
        }
        if let Some(expires) = e.expires {
            let left = (expires - now).to_std().unwrap_or_default();
            out["timeout"] = json!(format_timeout(left));
        }
        out
    }

    fn handle(&self, req: &Request) -> Response {
        if !req.has_basic_auth(USER, PASSWORD) {
            return json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": 401, "message": "Unauthorized"}),
            );
        }
        if let Some(answer) = server::admit(&self.faults, &self.counters, req, req.is_write()) {
            return answer;
        }
        let now = Utc::now();
        let segments = req.segments();
        let mut state = self.state.lock().unwrap();
        state
            .entries
            .retain(|_, e| e.expires.is_none_or(|x| x > now));
        let (family, rest) = match segments.as_slice() {
            ["rest", "system", "resource"] => {
                return json(
                    StatusCode::OK,
                    &json!({"version": "7.15.3 (stable)", "board-name": "hEX", "architecture-name": "mmips", "uptime": "3d2h"}),
                )
            }
            ["rest", family @ ("ip" | "ipv6"), "firewall", table @ ("raw" | "filter")] => {
                let rule = json!([{".id": "*1", "chain": "prerouting", "action": "drop",
                    "src-address-list": req.query_param("src-address-list"), "comment": "portcullis"}]);
                let _ = family;
                let has = state.raw_rule && *table == "raw";
                return json(StatusCode::OK, &if has { rule } else { json!([]) });
            }
            ["rest", family @ ("ip" | "ipv6"), "firewall", "address-list", rest @ ..] => {
                (if *family == "ip" { "ip" } else { "ipv6" }, rest.to_vec())
            }
            _ => return err(StatusCode::NOT_FOUND, "no such command or directory"),
        };
        match (req.method.clone(), rest.as_slice()) {
            (Method::GET, []) => {
                let list = req.query_param("list");
                let address = req.query_param("address");
                let out: Vec<Value> = state
                    .entries
                    .iter()
                    .filter(|(_, e)| e.family == family)
                    .filter(|(_, e)| list.as_ref().is_none_or(|l| *l == e.list))
                    .filter(|(_, e)| address.as_ref().is_none_or(|a| *a == e.address))
                    .map(|(id, e)| Self::print(*id, e, now))
                    .collect();
                json(StatusCode::OK, &Value::Array(out))
            }
            (Method::PUT, []) => {
                let body = req.json();
                let (Some(list), Some(address)) = (body["list"].as_str(), body["address"].as_str())
                else {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "failure: list and address required",
                    );
                };
                let Ok(target) = Target::parse(address) else {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "invalid value for argument address",
                    );
                };
                if target.is_ipv4() != (family == "ip") {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "invalid value for argument address",
                    );
                }
                // RouterOS prints IPv6 entries with their prefix length.
                let stored = if family == "ipv6" {
                    target.net().to_string()
                } else {
                    target.to_string()
                };
                if state
                    .entries
                    .values()
                    .any(|e| e.family == family && e.list == list && e.address == stored)
                {
                    return err(StatusCode::BAD_REQUEST, "failure: already have such entry");
                }
                let expires = match body["timeout"].as_str() {
                    Some(text) => match parse_timeout(text) {
                        Some(d) if !d.is_zero() => Some(now + Duration::from_std(d).unwrap()),
                        _ => {
                            return err(
                                StatusCode::BAD_REQUEST,
                                "invalid value for argument timeout",
                            )
                        }
                    },
                    None => None,
                };
                state.next += 1;
                let id = state.next;
                let entry = Entry {
                    family,
                    list: list.to_owned(),
                    address: stored,
                    comment: body["comment"].as_str().map(str::to_owned),
                    expires,
                };
                let out = Self::print(id, &entry, now);
                state.entries.insert(id, entry);
                json(StatusCode::CREATED, &out)
            }
            (method @ (Method::PATCH | Method::DELETE), [id]) => {
                let key = id
                    .strip_prefix('*')
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                let Some(key) =
                    key.filter(|k| state.entries.get(k).is_some_and(|e| e.family == family))
                else {
                    return err(StatusCode::NOT_FOUND, "no such item");
                };
                if method == Method::DELETE {
                    state.entries.remove(&key);
                    return StatusCode::NO_CONTENT.into_response();
                }
                let body = req.json();
                let entry = state.entries.get_mut(&key).unwrap();
                if let Some(text) = body["timeout"].as_str() {
                    let Some(d) = parse_timeout(text) else {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "invalid value for argument timeout",
                        );
                    };
                    entry.expires = Some(now + Duration::from_std(d).unwrap());
                }
                let out = Self::print(key, &entry.clone(), now);
                json(StatusCode::OK, &out)
            }
            _ => err(StatusCode::BAD_REQUEST, "no such command"),
        }
    }
}

#[async_trait]
impl Device for FakeRouter {
    async fn entries(&self, _backend: &mut dyn Backend) -> BTreeSet<Target> {
        self.entries()
            .into_iter()
            .filter(|e| e.list == "portcullis")
            .map(|e| Target::parse(&e.address).unwrap())
            .collect()
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        let mut state = self.state.lock().unwrap();
        state
            .entries
            .retain(|_, e| !targets.contains(&Target::parse(&e.address).unwrap()));
        true
    }

    async fn fail_writes(&self, n: usize) -> bool {
        self.faults.fail_next_writes(n)
    }
}

pub fn config_text(running: &Running) -> String {
    format!(
        "url = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nfingerprint = \"{}\"\n",
        running.url,
        running.cert.fingerprint()
    )
}

pub async fn backend(text: &str) -> Result<Box<dyn Backend>, BackendError> {
    let config = mikrotik::validate(Some(toml::from_str(text).unwrap())).unwrap();
    mikrotik::build(config).await
}

#[tokio::test]
async fn mikrotik_passes_the_contract_with_one_call_per_new_address() {
    let fake = FakeRouter::new();
    let running = fake.start().await;
    let text = config_text(&running);
    let make = contract::factory(text, |text| async move { backend(&text).await.unwrap() });
    let report = contract::run(&make, fake.as_ref(), Options::default()).await;
    assert!(report.lose_checked && report.failure_checked);
    assert_eq!(report.bulk.writes, 10_000);
    assert_eq!(report.replay.writes, 0, "same expiry: nothing to extend");
    assert_eq!(
        report.extend.writes, 1,
        "a longer block is one PATCH of the timeout"
    );
}

#[tokio::test]
async fn native_timeouts_duplicates_and_foreign_entries() {
    let fake = FakeRouter::new();
    // An entry of ours left by an earlier run, and an admin's entry for another address in our list.
    fake.insert("ip", "portcullis", "203.0.113.1", Some("portcullis"));
    fake.insert("ip", "portcullis", "203.0.113.2", Some("added by hand"));
    let running = fake.start().await;
    let mut b = backend(&config_text(&running)).await.unwrap();
    b.init().await.unwrap();
    assert_eq!(
        b.list().await.unwrap(),
        vec![Target::parse("203.0.113.1").unwrap()],
        "only entries with our comment are ours"
    );

    let in_an_hour = Utc::now() + Duration::hours(1);
    b.stage_add(entry("203.0.113.2", in_an_hour)); // the router answers "already have such entry"
    b.stage_add(entry("2001:db8::9", in_an_hour));
    b.commit().await.unwrap();
    let entries = fake.entries();
    let hand = entries.iter().find(|e| e.address == "203.0.113.2").unwrap();
    assert_eq!(hand.expires, None, "someone else's entry is left alone");
    let v6 = entries
        .iter()
        .find(|e| e.address == "2001:db8::9/128")
        .unwrap();
    let left = (v6.expires.unwrap() - Utc::now()).num_seconds();
    assert!(
        (3500..=3600).contains(&left),
        "native timeout of about an hour, got {left}s"
    );

    // A new backend (agent restart) whose cache is empty gets "already have such entry" for its own entry
    // and extends it with a PATCH.
    let mut fresh = backend(&config_text(&running)).await.unwrap();
    fresh.init().await.unwrap();
    fake.lose(&[]).await;
    let in_a_day = Utc::now() + Duration::days(1);
    fresh.stage_add(entry("203.0.113.1", in_a_day));
    fresh.commit().await.unwrap();
    let ours = fake
        .entries()
        .into_iter()
        .find(|e| e.address == "203.0.113.1")
        .unwrap();
    assert!(ours.expires.unwrap() > Utc::now() + Duration::hours(23));

    // Removing the admin's address leaves their entry in place.
    fresh.stage_remove(Target::parse("203.0.113.2").unwrap());
    fresh.commit().await.unwrap();
    assert!(fake.entries().iter().any(|e| e.address == "203.0.113.2"));
}

#[tokio::test]
async fn a_reboot_loses_timed_entries_and_reconcile_sees_it() {
    let fake = FakeRouter::new();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running)).await.unwrap();
    b.init().await.unwrap();
    let day = Utc::now() + Duration::days(1);
    b.stage_add(entry("203.0.113.5", day));
    b.stage_add(entry("198.51.100.0/24", day));
    b.commit().await.unwrap();
    fake.reboot();
    assert!(
        b.list().await.unwrap().is_empty(),
        "list reads the router, not a cache"
    );
    b.stage_add(entry("203.0.113.5", day));
    b.stage_add(entry("198.51.100.0/24", day));
    let stats = b.commit().await.unwrap();
    assert_eq!(stats.writes, 2);
    assert_eq!(b.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn long_blocks_are_capped_to_the_routeros_maximum() {
    let fake = FakeRouter::new();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running)).await.unwrap();
    b.init().await.unwrap();
    b.stage_add(entry("203.0.113.6", Utc::now() + Duration::days(3650)));
    b.commit().await.unwrap();
    let e = fake.entries().pop().unwrap();
    let left = (e.expires.unwrap() - Utc::now()).to_std().unwrap();
    assert!(
        left <= mikrotik::MAX_TIMEOUT && left > mikrotik::MAX_TIMEOUT - StdDuration::from_secs(60)
    );
}

#[tokio::test]
async fn wrong_password_and_missing_rule() {
    let fake = FakeRouter::new();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running).replace(PASSWORD, "nope"))
        .await
        .unwrap();
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("rest-api")),
        "{err}"
    );
    // The health check passes (with a warning about the missing drop rule) and again once it exists.
    let mut b = backend(&config_text(&running)).await.unwrap();
    b.init().await.unwrap();
    b.healthcheck().await.unwrap();
    fake.add_raw_rule();
    b.healthcheck().await.unwrap();
}
