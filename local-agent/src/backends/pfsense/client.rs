//! pfSense REST API package (pfrest, v2) calls on one firewall alias.
//!
//! `X-API-Key` auth. Every answer is `{"code","status","response_id","message","data"}`. Aliases:
//! `GET /api/v2/firewall/aliases?name=…` (query filter), `POST|PATCH /api/v2/firewall/alias`; PATCH with
//! `"append": true` / `"remove": true` adds or removes array values without a prior read. Changes go to
//! config.xml and take effect with `POST /api/v2/firewall/apply`; `GET` on it tells whether changes are
//! pending. Sources: pfrest/pfSense-pkg-RESTAPI `docs/COMMON_CONTROL_PARAMETERS.md`,
//! `docs/AUTHENTICATION_AND_AUTHORIZATION.md`, `Endpoints/FirewallAlias*.inc`,
//! `Endpoints/FirewallApplyEndpoint.inc`, `Models/FirewallAlias.inc`; `shared/reference/firewalls.md` §10.

use std::fmt;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backends::http::{self, Endpoint, Reply, Secret};
use crate::backends::BackendError;

/// An alias as pfrest returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    /// Index in config.xml; changes when an alias before it is deleted, so it is read before every change.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `host`, `network` or `port`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Entries as stored (`198.51.100.7/32`).
    #[serde(default)]
    pub address: Vec<String>,
}

/// The pfrest API.
pub struct RestClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    key: Secret,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("url", &self.endpoint.url.as_str())
            .finish_non_exhaustive()
    }
}

fn message(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .map(|v| {
            let id = v.get("response_id").and_then(Value::as_str).unwrap_or("");
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            format!("{id}: {msg}")
        })
        .unwrap_or_else(|| reply.excerpt())
}

impl RestClient {
    /// A client for `endpoint`.
    pub fn new(http: reqwest::Client, endpoint: Endpoint, key: Secret) -> Self {
        Self {
            http,
            endpoint,
            key,
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
            r.header("X-API-Key", self.key.expose())
                .header(reqwest::header::ACCEPT, "application/json")
        })
        .await?;
        match reply.status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                return Err(BackendError::Config(format!(
                    "{what}: pfSense refused the API key (HTTP {}: {}). Enable key authentication under \
                     System → REST API → Settings; the key's user needs the privileges for \
                     firewall aliases and apply.",
                    reply.status,
                    message(&reply)
                )))
            }
            400 | 409 | 422 => {
                return Err(BackendError::Rejected(format!(
                    "{what}: pfSense refused the change (HTTP {}): {}",
                    reply.status,
                    message(&reply)
                )))
            }
            _ => return Err(http::status_error(&what, &reply)),
        }
        let envelope: Value = http::json_body(&what, &reply)?;
        Ok(envelope.get("data").cloned().unwrap_or(Value::Null))
    }

    /// The alias named `name`, if any.
    pub async fn alias(&self, name: &str) -> Result<Option<Alias>, BackendError> {
        let path = format!("/api/v2/firewall/aliases?name={name}");
        let data = self.call(Method::GET, &path, None).await?;
        let aliases: Vec<Alias> = serde_json::from_value(data).map_err(|err| {
            BackendError::Rejected(format!("GET {path}: unexpected answer: {err}"))
        })?;
        Ok(aliases.into_iter().find(|alias| alias.name == name))
    }

    /// Creates an empty network alias.
    pub async fn create_alias(&self, name: &str) -> Result<(), BackendError> {
        let body = json!({
            "name": name,
            "type": "network",
            "descr": "Blocks managed by Portcullis (do not edit by hand)",
            "address": [],
        });
        self.call(Method::POST, "/api/v2/firewall/alias", Some(&body))
            .await?;
        Ok(())
    }

    /// Appends (`append`) or removes (`remove`) entries of the alias `id`, without applying.
    pub async fn patch(
        &self,
        id: u64,
        control: &str,
        address: &[String],
    ) -> Result<(), BackendError> {
        let mut body = json!({ "id": id, "address": address });
        body[control] = Value::Bool(true);
        self.call(Method::PATCH, "/api/v2/firewall/alias", Some(&body))
            .await?;
        Ok(())
    }

    /// True when firewall changes wait for an apply.
    pub async fn pending(&self) -> Result<bool, BackendError> {
        let data = self
            .call(Method::GET, "/api/v2/firewall/apply", None)
            .await?;
        Ok(data.get("applied").and_then(Value::as_bool) == Some(false))
    }

    /// Applies pending firewall changes (filter reload).
    pub async fn apply(&self) -> Result<(), BackendError> {
        self.call(Method::POST, "/api/v2/firewall/apply", Some(&json!({})))
            .await?;
        Ok(())
    }
}
