//! OPNsense API calls: the alias model (`firewall/alias`) and the runtime pf-table utility
//! (`firewall/alias_util`).
//!
//! Auth is the API key and secret as HTTP Basic. `alias_util/add|delete` change only the pf table of an
//! "External (advanced)" alias (no config.xml write), one address per call, and answer
//! `{"status":"done"}`; `add` answers `{"status":"failed","status_msg":"non existing alias …"}` for an
//! unknown alias and `{"status":"not_an_address"}` for anything outside `[0-9a-f:./_]`. `list` pages with
//! `current`/`rowCount` and answers `{"total","rowCount","current","rows":[{"ip":…}]}` (older releases: a
//! plain sorted array). Sources: opnsense/core
//! `src/opnsense/mvc/app/controllers/OPNsense/Firewall/Api/AliasUtilController.php` and
//! `AliasController.php` (`getAliasUUID` answers `{"uuid":…}` or `[]`), docs.opnsense.org
//! "development/api/core/firewall"; `shared/reference/firewalls.md` §8.

use std::fmt;

use queue_message::Target;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backends::http::{self, Endpoint, Secret};
use crate::backends::BackendError;

/// Rows per `alias_util/list` page.
const PAGE: usize = 5000;

/// The firewall's API.
pub struct ApiClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    key: Secret,
    secret: Secret,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.endpoint.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Outcome of a per-address change.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Done.
    Done,
    /// The alias does not exist (any more).
    NoSuchAlias(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListAnswer {
    Paged {
        total: usize,
        #[serde(default)]
        rows: Vec<Row>,
    },
    Plain(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Row {
    ip: String,
}

impl ApiClient {
    /// A client for `endpoint`.
    pub fn new(http: reqwest::Client, endpoint: Endpoint, key: Secret, secret: Secret) -> Self {
        Self {
            http,
            endpoint,
            key,
            secret,
        }
    }

    /// The firewall's base URL.
    pub fn url(&self) -> &str {
        self.endpoint.url.as_str()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, BackendError> {
        let (what, reply) = http::call(&self.http, &self.endpoint, method, path, body, |r| {
            r.basic_auth(self.key.expose(), Some(self.secret.expose()))
        })
        .await?;
        if matches!(reply.status.as_u16(), 401 | 403) {
            return Err(BackendError::Config(format!(
                "{what}: OPNsense refused the API key (HTTP {}). The key's user needs the privileges \
                 \"Firewall: Alias: Edit\" and \"Diagnostics: Tables\" (or \"Firewall: Aliases\").",
                reply.status
            )));
        }
        if !reply.status.is_success() {
            return Err(http::status_error(&what, &reply));
        }
        http::json_body(&what, &reply)
    }

    /// The alias's UUID, `None` when there is no alias of that name.
    pub async fn alias_uuid(&self, alias: &str) -> Result<Option<String>, BackendError> {
        let answer = self
            .call(
                Method::GET,
                &format!("/api/firewall/alias/getAliasUUID/{alias}"),
                None,
            )
            .await?;
        Ok(answer
            .get("uuid")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// The alias's type key (`external`, `host`, …), from the option map `getItem` returns.
    pub async fn alias_type(&self, uuid: &str) -> Result<Option<String>, BackendError> {
        let answer = self
            .call(
                Method::GET,
                &format!("/api/firewall/alias/getItem/{uuid}"),
                None,
            )
            .await?;
        let selected = answer
            .pointer("/alias/type")
            .and_then(Value::as_object)
            .and_then(|options| {
                options.iter().find_map(|(key, option)| {
                    let on = option.get("selected").is_some_and(|s| {
                        s.as_i64() == Some(1)
                            || s.as_str() == Some("1")
                            || s.as_bool() == Some(true)
                    });
                    on.then(|| key.clone())
                })
            });
        Ok(selected)
    }

    /// Creates an "External (advanced)" alias and applies the alias configuration.
    pub async fn create_external_alias(&self, alias: &str) -> Result<(), BackendError> {
        let body = json!({"alias": {
            "enabled": "1",
            "name": alias,
            "type": "external",
            "description": "Blocks managed by Portcullis (do not edit by hand)",
            "content": "",
        }});
        let answer = self
            .call(Method::POST, "/api/firewall/alias/addItem", Some(&body))
            .await?;
        if answer.get("result").and_then(Value::as_str) != Some("saved") {
            return Err(BackendError::Rejected(format!(
                "POST /api/firewall/alias/addItem: alias {alias} not created: {answer}"
            )));
        }
        let answer = self
            .call(
                Method::POST,
                "/api/firewall/alias/reconfigure",
                Some(&json!({})),
            )
            .await?;
        if answer.get("status").and_then(Value::as_str) != Some("ok") {
            return Err(BackendError::Rejected(format!(
                "POST /api/firewall/alias/reconfigure: {answer}"
            )));
        }
        Ok(())
    }

    /// What the alias's pf table holds now (all pages).
    pub async fn list(&self, alias: &str) -> Result<Vec<String>, BackendError> {
        let path = format!("/api/firewall/alias_util/list/{alias}");
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let body = json!({"current": page, "rowCount": PAGE});
            let answer = self.call(Method::POST, &path, Some(&body)).await?;
            let answer: ListAnswer = serde_json::from_value(answer).map_err(|err| {
                BackendError::Rejected(format!("POST {path}: unexpected answer: {err}"))
            })?;
            match answer {
                ListAnswer::Plain(entries) => return Ok(entries),
                ListAnswer::Paged { total, rows } => {
                    let got = rows.len();
                    out.extend(rows.into_iter().map(|row| row.ip));
                    if got == 0 || out.len() >= total {
                        return Ok(out);
                    }
                }
            }
            page += 1;
        }
    }

    /// Adds (`add`) or deletes (`delete`) one address in the alias's pf table.
    pub async fn change(
        &self,
        verb: &str,
        alias: &str,
        target: &Target,
    ) -> Result<Change, BackendError> {
        let path = format!("/api/firewall/alias_util/{verb}/{alias}");
        let answer = self
            .call(
                Method::POST,
                &path,
                Some(&json!({"address": target.to_string()})),
            )
            .await?;
        match answer.get("status").and_then(Value::as_str) {
            Some("done") => Ok(Change::Done),
            Some("failed") => {
                let why = answer
                    .get("status_msg")
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_owned();
                if why.contains("non existing alias") {
                    Ok(Change::NoSuchAlias(why))
                } else {
                    Err(BackendError::Rejected(format!(
                        "POST {path} {target}: {why}"
                    )))
                }
            }
            _ => Err(BackendError::Rejected(format!(
                "POST {path} {target}: unexpected answer {answer}"
            ))),
        }
    }
}
