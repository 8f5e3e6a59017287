//! A fake OPNsense (alias model + `alias_util` on pf tables) and the OPNsense tests.
//!
//! Fixture sources: opnsense/core `src/opnsense/mvc/app/controllers/OPNsense/Firewall/Api/
//! AliasUtilController.php` (`add` → `{"status":"done"}`, `{"status":"not_an_address"}` outside
//! `[0-9a-f:./_]`, `{"status":"failed","status_msg":"non existing alias …"}`; `delete` → done even when the
//! address is absent; `list` pages with `current`/`rowCount` → `{"total","rowCount","current","rows":
//! [{"ip":…}]}`); `AliasController.php` (`getAliasUUID` → `{"uuid":…}` or `[]`; `getItem` → the alias
//! with `type` as an option map `{"external":{"value":"External (advanced)","selected":1},…}`; `addItem` →
//! `{"result":"saved","uuid":…}`; `reconfigure` → `{"status":"ok"}`); docs.opnsense.org "development/api"
//! (key and secret as HTTP Basic).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use portcullis_agent::backends::{opnsense, Backend, BackendError};
use queue_message::Target;
use serde_json::{json, Value};

use super::server::{self, add, json, Counters, Faults, Request, Running};
use crate::contract::{self, Device, Options};

pub const KEY: &str = "w86XNZob/8Oq8aC5r0kbNarNtdpoQU781fyoeaOBQsBwkXUt";
pub const SECRET: &str = "XeD26XVrJ5ilAc/EmglCRC+0j2e57tRsjHwFepOseySWLM53pJASeTA3";
const TYPES: [(&str, &str); 5] = [
    ("host", "Host(s)"),
    ("network", "Network(s)"),
    ("port", "Port(s)"),
    ("urltable", "URL Table (IPs)"),
    ("external", "External (advanced)"),
];

#[derive(Debug)]
struct Alias {
    uuid: String,
    kind: String,
    table: BTreeSet<String>,
}

/// The fake firewall.
#[derive(Debug, Default)]
pub struct FakeOpnsense {
    aliases: Mutex<BTreeMap<String, Alias>>,
    pub faults: Faults,
    pub counters: Counters,
}

impl FakeOpnsense {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub async fn start(self: &Arc<Self>) -> Running {
        server::start(self, Self::handle).await
    }

    pub fn add_alias(&self, name: &str, kind: &str) {
        self.aliases.lock().unwrap().insert(
            name.to_owned(),
            Alias {
                uuid: uuid::Uuid::new_v4().to_string(),
                kind: kind.to_owned(),
                table: BTreeSet::new(),
            },
        );
    }

    pub fn delete_alias(&self, name: &str) {
        self.aliases.lock().unwrap().remove(name);
    }

    pub fn table(&self, name: &str) -> BTreeSet<String> {
        self.aliases
            .lock()
            .unwrap()
            .get(name)
            .map(|a| a.table.clone())
            .unwrap_or_default()
    }

    fn handle(&self, req: &Request) -> Response {
        if !req.has_basic_auth(KEY, SECRET) {
            return json(
                StatusCode::UNAUTHORIZED,
                &json!({"status": 401, "message": "Authentication Failed"}),
            );
        }
        let segments = req.segments();
        let write = matches!(
            segments.as_slice(),
            ["api", "firewall", "alias_util", "add" | "delete", ..]
        ) || matches!(
            segments.as_slice(),
            ["api", "firewall", "alias", "addItem" | "reconfigure"]
        );
        if let Some(answer) = server::admit(&self.faults, &self.counters, req, write) {
            return answer;
        }
        let mut aliases = self.aliases.lock().unwrap();
        match (req.method.clone(), segments.as_slice()) {
            (Method::GET, ["api", "firewall", "alias", "getAliasUUID", name]) => {
                match aliases.get(*name) {
                    Some(alias) => json(StatusCode::OK, &json!({"uuid": alias.uuid})),
                    None => json(StatusCode::OK, &json!([])),
                }
            }
            (Method::GET, ["api", "firewall", "alias", "getItem", uuid]) => {
                let Some((name, alias)) = aliases.iter().find(|(_, a)| a.uuid == *uuid) else {
                    return json(StatusCode::OK, &json!([]));
                };
                let types: serde_json::Map<String, Value> = TYPES
                    .iter()
                    .map(|(key, label)| {
                        (
                            key.to_string(),
                            json!({"value": label, "selected": i32::from(*key == alias.kind)}),
                        )
                    })
                    .collect();
                json(
                    StatusCode::OK,
                    &json!({"alias": {"enabled": "1", "name": name, "type": types, "content": {}, "description": ""}}),
                )
            }
            (Method::POST, ["api", "firewall", "alias", "addItem"]) => {
                let body = req.json();
                let name = body["alias"]["name"].as_str().unwrap_or("").to_owned();
                if aliases.contains_key(&name) {
                    return json(
                        StatusCode::OK,
                        &json!({"result": "failed", "validations": {"alias.name": "An alias with this name already exists."}}),
                    );
                }
                let uuid = uuid::Uuid::new_v4().to_string();
                aliases.insert(
                    name,
                    Alias {
                        uuid: uuid.clone(),
                        kind: body["alias"]["type"].as_str().unwrap_or("host").to_owned(),
                        table: BTreeSet::new(),
                    },
                );
                json(StatusCode::OK, &json!({"result": "saved", "uuid": uuid}))
            }
            (Method::POST, ["api", "firewall", "alias", "reconfigure"]) => {
                json(StatusCode::OK, &json!({"status": "ok"}))
            }
            (Method::GET | Method::POST, ["api", "firewall", "alias_util", "list", name]) => {
                let body = req.json();
                let rows_per_page = body["rowCount"].as_u64().unwrap_or(9999) as usize;
                let current = body["current"].as_u64().unwrap_or(1) as usize;
                let table = aliases
                    .get(*name)
                    .map(|a| a.table.clone())
                    .unwrap_or_default();
                let rows: Vec<Value> = table
                    .iter()
                    .skip((current - 1) * rows_per_page)
                    .take(rows_per_page)
                    .map(|ip| json!({"ip": ip}))
                    .collect();
                json(
                    StatusCode::OK,
                    &json!({"total": table.len(), "rowCount": rows_per_page, "current": current, "rows": rows}),
                )
            }
            (Method::POST, ["api", "firewall", "alias_util", verb @ ("add" | "delete"), name]) => {
                let address = req.json()["address"].as_str().unwrap_or("").to_owned();
                if *verb == "add" && address.chars().any(|c| !"0123456789abcdef:./_".contains(c)) {
                    return json(StatusCode::OK, &json!({"status": "not_an_address"}));
                }
                let Some(alias) = aliases.get_mut(*name) else {
                    if *verb == "add" {
                        return json(
                            StatusCode::OK,
                            &json!({"status": "failed", "status_msg": format!("non existing alias {name}")}),
                        );
                    }
                    return json(StatusCode::OK, &json!({"status": "done"}));
                };
                // pfctl prints hosts without a prefix length.
                let text = address
                    .strip_suffix("/32")
                    .or_else(|| address.strip_suffix("/128"))
                    .unwrap_or(&address)
                    .to_owned();
                if *verb == "add" {
                    alias.table.insert(text);
                } else {
                    alias.table.remove(&text);
                }
                json(StatusCode::OK, &json!({"status": "done"}))
            }
            _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
        }
    }
}

#[async_trait]
impl Device for FakeOpnsense {
    async fn entries(&self, _backend: &mut dyn Backend) -> BTreeSet<Target> {
        server::targets(self.table("portcullis"))
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        let mut aliases = self.aliases.lock().unwrap();
        if let Some(alias) = aliases.get_mut("portcullis") {
            for target in targets {
                alias.table.remove(&target.to_string());
            }
        }
        true
    }

    async fn fail_writes(&self, n: usize) -> bool {
        self.faults.fail_next_writes(n)
    }
}

pub fn config_text(running: &Running, extra: &str) -> String {
    format!(
        "url = \"{}\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"\nfingerprint = \"{}\"\n{extra}\n",
        running.url,
        running.cert.fingerprint()
    )
}

pub async fn backend(text: &str) -> Box<dyn Backend> {
    let config = opnsense::validate(Some(toml::from_str(text).unwrap())).unwrap();
    opnsense::build(config).await.unwrap()
}

#[tokio::test]
async fn opnsense_passes_the_contract_with_one_call_per_new_address() {
    let fake = FakeOpnsense::new();
    let running = fake.start().await;
    let text = config_text(&running, "create_alias = true");
    let make = contract::factory(text, |text| async move { backend(&text).await });
    let report = contract::run(&make, fake.as_ref(), Options::default()).await;
    assert!(report.lose_checked && report.failure_checked);
    assert_eq!(report.bulk.writes, 10_000);
    assert_eq!(
        report.replay.writes, 0,
        "a replay must not call the firewall"
    );
    assert_eq!(report.extend.writes, 0);
    assert_eq!(report.bulk_remove.writes, 10_000);
}

#[tokio::test]
async fn a_missing_alias_is_explained_or_created_once() {
    let fake = FakeOpnsense::new();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("External (advanced)") && m.contains("create_alias")),
        "{err}"
    );
    let mut b = backend(&config_text(&running, "create_alias = true")).await;
    b.init().await.unwrap();
    b.init().await.unwrap();
    assert_eq!(fake.counters.writes(), 2, "addItem and reconfigure, once");
}

#[tokio::test]
async fn an_alias_that_vanishes_is_a_retryable_error() {
    let fake = FakeOpnsense::new();
    fake.add_alias("portcullis", "external");
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    b.init().await.unwrap();
    fake.delete_alias("portcullis");
    add(b.as_mut(), "203.0.113.7");
    let err = b.commit().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("vanished")),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_host_alias_is_refused() {
    let fake = FakeOpnsense::new();
    fake.add_alias("portcullis", "host");
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "")).await;
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("\"host\"")),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_key_html_and_404_are_clear_errors() {
    let fake = FakeOpnsense::new();
    fake.add_alias("portcullis", "external");
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, "").replace(SECRET, "nope")).await;
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("API key")),
        "{err}"
    );

    let mut b = backend(&config_text(&running, "")).await;
    b.init().await.unwrap();
    fake.faults.html.store(true, Ordering::SeqCst);
    add(b.as_mut(), "203.0.113.8");
    let err = b.commit().await.unwrap_err();
    assert!(
        err.to_string().contains("HTML page") && err.is_retryable(),
        "{err}"
    );
    fake.faults.html.store(false, Ordering::SeqCst);
    fake.faults.not_found.store(true, Ordering::SeqCst);
    let err = b.list().await.unwrap_err();
    assert!(
        err.to_string().contains("404") && err.is_retryable(),
        "{err}"
    );
    fake.faults.not_found.store(false, Ordering::SeqCst);
    add(b.as_mut(), "203.0.113.8");
    b.commit().await.unwrap();
    assert!(
        fake.table("portcullis").contains("203.0.113.8"),
        "block lost"
    );
}
