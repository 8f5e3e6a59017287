//! A fake pfSense with the REST API package (pfrest v2) and the pfSense tests.
//!
//! Fixture sources: pfrest/pfSense-pkg-RESTAPI — the envelope `{"code","status","response_id","message",
//! "data"}` and `AUTH_AUTHENTICATION_FAILED` (`docs/AUTHENTICATION_AND_AUTHORIZATION.md`, `X-API-Key`);
//! `Endpoints/FirewallAliasEndpoint.inc` / `FirewallAliasesEndpoint.inc` (one alias by `id`, many with
//! query filters such as `?name=`); `Models/FirewallAlias.inc` (`name`, `type` host|network|port, `descr`,
//! `address`, `detail`); `docs/COMMON_CONTROL_PARAMETERS.md` (`append` / `remove` on PATCH);
//! `Endpoints/FirewallApplyEndpoint.inc` (`GET` → `{"applied":false,"pending_subsystems":["aliases"]}`,
//! `POST` applies). The fake keeps config.xml and the live pf table apart: a change is live only after an
//! apply, so a backend that forgets to apply fails the contract.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use portcullis_agent::backends::{pfsense, Backend, BackendError};
use queue_message::Target;
use serde_json::{json, Value};

use super::server::{self, add, json, Counters, Faults, Request, Running};
use crate::contract::{self, Device, Options};

pub const KEY: &str = "4c7d2e1f0a9b8c7d6e5f4a3b2c1d0e9f";

#[derive(Debug, Clone)]
struct Alias {
    name: String,
    kind: String,
    address: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    /// config.xml; the index is the pfrest `id`.
    config: Vec<Alias>,
    /// The live pf table of our alias, as of the last apply.
    live: BTreeSet<String>,
    pending: bool,
    applies: usize,
}

/// The fake firewall.
#[derive(Debug, Default)]
pub struct FakePfsense {
    state: Mutex<State>,
    pub faults: Faults,
    pub counters: Counters,
    /// Fail the next N applies (filter reload errors).
    pub fail_applies: std::sync::atomic::AtomicUsize,
}

fn envelope(code: u16, response_id: &str, message: &str, data: impl Into<Value>) -> Response {
    let data: Value = data.into();
    let status_text = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_lowercase();
    json(
        StatusCode::from_u16(code).unwrap(),
        &json!({"code": code, "status": status_text, "response_id": response_id, "message": message, "data": data}),
    )
}

impl FakePfsense {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub async fn start(self: &Arc<Self>) -> Running {
        server::start(self, Self::handle).await
    }

    /// Another alias before ours, so ours does not have id 0.
    pub fn add_alias(&self, name: &str, kind: &str) {
        self.state.lock().unwrap().config.push(Alias {
            name: name.to_owned(),
            kind: kind.to_owned(),
            address: Vec::new(),
        });
    }

    /// Deletes an alias: every later alias's id shifts down by one, as in config.xml.
    pub fn delete_alias(&self, name: &str) {
        self.state.lock().unwrap().config.retain(|a| a.name != name);
    }

    pub fn live(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().live.clone()
    }

    pub fn pending(&self) -> bool {
        self.state.lock().unwrap().pending
    }

    pub fn applies(&self) -> usize {
        self.state.lock().unwrap().applies
    }

    fn alias_json(id: usize, a: &Alias) -> Value {
        json!({"id": id, "name": a.name, "type": a.kind, "descr": "", "address": a.address,
               "detail": vec![""; a.address.len()]})
    }

    fn handle(&self, req: &Request) -> Response {
        if req.headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
            return envelope(
                401,
                "AUTH_AUTHENTICATION_FAILED",
                "Authentication failed.",
                json!([]),
            );
        }
        if let Some(answer) = server::admit(&self.faults, &self.counters, req, req.is_write()) {
            return answer;
        }
        let mut state = self.state.lock().unwrap();
        match (req.method.clone(), req.path.as_str()) {
            (Method::GET, "/api/v2/firewall/aliases") => {
                let name = req.query_param("name");
                let data: Vec<Value> = state
                    .config
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| name.as_ref().is_none_or(|n| *n == a.name))
                    .map(|(id, a)| Self::alias_json(id, a))
                    .collect();
                envelope(200, "SUCCESS", "", Value::Array(data))
            }
            (Method::POST, "/api/v2/firewall/alias") => {
                let body = req.json();
                let name = body["name"].as_str().unwrap_or("").to_owned();
                if state.config.iter().any(|a| a.name == name) {
                    return envelope(
                        400,
                        "FIREWALL_ALIAS_NAME_EXISTS",
                        "Field `name` must be unique.",
                        json!([]),
                    );
                }
                state.config.push(Alias {
                    name,
                    kind: body["type"].as_str().unwrap_or("host").to_owned(),
                    address: Vec::new(),
                });
                state.pending = true;
                let id = state.config.len() - 1;
                let out = Self::alias_json(id, &state.config[id]);
                envelope(200, "SUCCESS", "", out)
            }
            (Method::PATCH, "/api/v2/firewall/alias") => {
                let body = req.json();
                let id = body["id"].as_u64().unwrap_or(u64::MAX) as usize;
                let Some(alias) = state.config.get_mut(id) else {
                    return envelope(
                        404,
                        "MODEL_OBJECT_NOT_FOUND",
                        "Object with ID does not exist.",
                        json!([]),
                    );
                };
                let values: Vec<String> = body["address"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if body["append"] == true {
                    for value in values {
                        if alias.address.contains(&value) {
                            return envelope(
                                400,
                                "FIREWALL_ALIAS_ADDRESS_DUPLICATE",
                                "Duplicate address.",
                                json!([]),
                            );
                        }
                        if Target::parse(&value).is_err() {
                            return envelope(
                                400,
                                "FIREWALL_ALIAS_NETWORK_INVALID",
                                "Invalid network.",
                                json!([]),
                            );
                        }
                        alias.address.push(value);
                    }
                } else if body["remove"] == true {
                    alias.address.retain(|a| !values.contains(a));
                } else {
                    alias.address = values;
                }
                state.pending = true;
                let out = Self::alias_json(id, &state.config[id]);
                envelope(200, "SUCCESS", "", out)
            }
            (Method::GET, "/api/v2/firewall/apply") => envelope(
                200,
                "SUCCESS",
                "",
                json!({"applied": !state.pending, "pending_subsystems": if state.pending { vec!["aliases"] } else { vec![] }}),
            ),
            (Method::POST, "/api/v2/firewall/apply") => {
                if self
                    .fail_applies
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return envelope(
                        500,
                        "FIREWALL_APPLY_FAILED",
                        "Filter reload failed.",
                        json!([]),
                    );
                }
                state.live = state
                    .config
                    .iter()
                    .find(|a| a.name == "portcullis")
                    .map(|a| a.address.iter().cloned().collect())
                    .unwrap_or_default();
                state.pending = false;
                state.applies += 1;
                envelope(
                    200,
                    "SUCCESS",
                    "",
                    json!({"applied": true, "pending_subsystems": []}),
                )
            }
            _ => envelope(404, "ENDPOINT_NOT_FOUND", "Endpoint not found.", json!([])),
        }
    }
}

#[async_trait]
impl Device for FakePfsense {
    async fn entries(&self, _backend: &mut dyn Backend) -> BTreeSet<Target> {
        server::targets(self.live())
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        // An admin's edit, applied.
        let mut state = self.state.lock().unwrap();
        let texts: Vec<String> = targets.iter().map(|t| t.net().to_string()).collect();
        for alias in &mut state.config {
            alias.address.retain(|a| !texts.contains(a));
        }
        state.live.retain(|a| !texts.contains(a));
        true
    }

    async fn fail_writes(&self, n: usize) -> bool {
        self.faults.fail_next_writes(n)
    }
}

pub fn config_text(running: &Running, extra: &str) -> String {
    format!(
        "url = \"{}\"\napi_key = \"{KEY}\"\nfingerprint = \"{}\"\n{extra}\n",
        running.url,
        running.cert.fingerprint()
    )
}

pub async fn backend(text: &str) -> Box<dyn Backend> {
    let config = pfsense::validate(Some(toml::from_str(text).unwrap())).unwrap();
    pfsense::build(config).await.unwrap()
}

#[tokio::test]
async fn pfsense_passes_the_contract_with_at_most_three_writes_per_commit() {
    let fake = FakePfsense::new();
    fake.add_alias("lan_hosts", "host");
    let running = fake.start().await;
    let text = config_text(&running, "create_alias = true");
    let make = contract::factory(text, |text| async move { backend(&text).await });
    let report = contract::run(&make, fake.as_ref(), Options::default()).await;
    assert!(report.lose_checked && report.failure_checked);
    assert_eq!(
        report.bulk.writes, 2,
        "one PATCH append and one apply for 10k addresses"
    );
    assert_eq!(report.replay.writes, 0);
    assert_eq!(report.bulk_remove.writes, 2);
    assert!(!fake.pending());
}

#[tokio::test]
async fn changes_are_applied_and_a_failed_apply_is_retried() {
    let fake = FakePfsense::new();
    fake.add_alias("portcullis", "network");
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    b.init().await.unwrap();
    add(b.as_mut(), "203.0.113.7");
    add(b.as_mut(), "2001:db8::/48");
    b.commit().await.unwrap();
    assert_eq!(
        fake.live(),
        ["203.0.113.7/32", "2001:db8::/48"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );

    // The PATCH lands but the filter reload fails: retryable, and the next commit applies even though
    // the alias already holds the address.
    fake.fail_applies.store(1, Ordering::SeqCst);
    add(b.as_mut(), "203.0.113.8");
    let err = b.commit().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(fake.pending() && !fake.live().contains("203.0.113.8/32"));
    add(b.as_mut(), "203.0.113.8");
    let stats = b.commit().await.unwrap();
    assert_eq!(stats.writes, 1, "only the apply");
    assert_eq!(
        fake.applies(),
        2,
        "init found nothing pending; one apply per successful commit"
    );
    assert!(!fake.pending() && fake.live().contains("203.0.113.8/32"));

    // A restarted agent applies what an earlier run left pending.
    fake.fail_applies.store(1, Ordering::SeqCst);
    add(b.as_mut(), "203.0.113.9");
    b.commit().await.unwrap_err();
    let mut fresh = backend(&config_text(&running, "")).await;
    fresh.init().await.unwrap();
    assert!(!fake.pending() && fake.live().contains("203.0.113.9/32"));
}

#[tokio::test]
async fn the_alias_id_is_read_again_before_each_change() {
    let fake = FakePfsense::new();
    fake.add_alias("old_alias", "host");
    fake.add_alias("portcullis", "network");
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    b.init().await.unwrap();
    // Deleting an alias before ours shifts our id from 1 to 0.
    fake.delete_alias("old_alias");
    add(b.as_mut(), "203.0.113.10");
    b.commit().await.unwrap();
    assert!(fake.live().contains("203.0.113.10/32"));
}

#[tokio::test]
async fn missing_alias_wrong_type_and_wrong_key() {
    let fake = FakePfsense::new();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("create_alias")),
        "{err}"
    );

    fake.add_alias("portcullis", "host");
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("Network alias")),
        "{err}"
    );

    let mut b = backend(&config_text(&running, "").replace(KEY, "0000")).await;
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("AUTH_AUTHENTICATION_FAILED")),
        "{err}"
    );
    assert_eq!(b.batch_window(), std::time::Duration::from_secs(5));
}
