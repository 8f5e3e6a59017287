//! The official integration API (`X-API-KEY`) and its traffic matching lists, replaced whole by PUT; an
//! emptied list keeps a placeholder.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use queue_message::Target;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{remote_group, Family, GroupApi, RemoteGroup, LIST_SHAPE};
use crate::backends::http::{self, Endpoint, Secret};
use crate::backends::BackendError;

const INTEGRATION: &str = "/proxy/network/integration/v1";
const PAGE: usize = 200;

/// The official integration API (`X-API-KEY`) and its traffic matching lists.
pub struct IntegrationApi {
    http: reqwest::Client,
    endpoint: Endpoint,
    site: String,
    key: Secret,
    site_id: Option<String>,
}

impl fmt::Debug for IntegrationApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationApi")
            .field("url", &self.endpoint.url.as_str())
            .field("site", &self.site)
            .field("site_id", &self.site_id)
            .finish_non_exhaustive()
    }
}

/// A page of the integration API: `{"offset","limit","count","totalCount","data":[…]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    total_count: Option<usize>,
    #[serde(default)]
    data: Vec<Value>,
}

impl IntegrationApi {
    /// A client for `endpoint`; nothing is sent until [`GroupApi::connect`].
    pub fn new(http: reqwest::Client, endpoint: Endpoint, site: String, key: Secret) -> Self {
        Self {
            http,
            endpoint,
            site,
            key,
            site_id: None,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, BackendError> {
        let (what, reply) = http::call(&self.http, &self.endpoint, method, path, body, |r| {
            r.header("X-API-KEY", self.key.expose())
                .header(reqwest::header::ACCEPT, "application/json")
        })
        .await?;
        if reply.status.is_success() {
            if reply.body.is_empty() {
                return Ok(Value::Null);
            }
            return http::json_body(&what, &reply);
        }
        // Error body: {"statusCode":400,"statusName":"BAD_REQUEST","message":"…"} (integration API docs).
        let message = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned));
        Err(match (reply.status.as_u16(), message) {
            (401 | 403, _) => BackendError::Config(format!(
                "{what}: the console refused the API key (HTTP {}); create one under Network → Settings → \
                 Control Plane → Integrations",
                reply.status
            )),
            (400 | 409 | 422, Some(message)) => BackendError::Rejected(format!(
                "{what}: the console refused the change (HTTP {}): {message}",
                reply.status
            )),
            _ => http::status_error(&what, &reply),
        })
    }

    fn site_id(&self) -> Result<&str, BackendError> {
        self.site_id
            .as_deref()
            .ok_or_else(|| BackendError::Unreachable("site not resolved yet".to_owned()))
    }

    async fn paged(&self, path: &str) -> Result<Vec<Value>, BackendError> {
        let mut all = Vec::new();
        loop {
            let page: Value = self
                .call(
                    Method::GET,
                    &format!("{path}?offset={}&limit={PAGE}", all.len()),
                    None,
                )
                .await?;
            let page: Page = serde_json::from_value(page).map_err(|err| {
                BackendError::Rejected(format!("GET {path}: unexpected page shape: {err}"))
            })?;
            let got = page.data.len();
            all.extend(page.data);
            let total = page.total_count.unwrap_or(all.len());
            if got == 0 || all.len() >= total {
                return Ok(all);
            }
        }
    }

    fn lists_path(&self) -> Result<String, BackendError> {
        Ok(format!(
            "{INTEGRATION}/sites/{}/traffic-matching-lists",
            self.site_id()?
        ))
    }

    fn list_from(value: Value) -> Option<RemoteGroup> {
        remote_group(value, &LIST_SHAPE)
    }

    fn body(name: &str, family: Family, members: &BTreeSet<Target>, foreign: &[Value]) -> Value {
        let mut items: Vec<Value> = members
            .iter()
            .map(|target| {
                let kind = if target.is_host() {
                    "IP_ADDRESS"
                } else {
                    "SUBNET"
                };
                json!({"type": kind, "value": target.to_string()})
            })
            .collect();
        items.extend(foreign.iter().cloned());
        if items.is_empty() {
            // "A list must keep at least one IP" (swissmakers/fail2ban-ui PR #206): hold a placeholder.
            items.push(json!({"type": "IP_ADDRESS", "value": family.placeholder().to_string()}));
        }
        let list_type = match family {
            Family::V4 => "IPV4_ADDRESSES",
            Family::V6 => "IPV6_ADDRESSES",
        };
        json!({"type": list_type, "name": name, "items": items})
    }
}

#[async_trait]
impl GroupApi for IntegrationApi {
    async fn connect(&mut self) -> Result<(), BackendError> {
        if self.site_id.is_some() {
            return Ok(());
        }
        let sites = self.paged(&format!("{INTEGRATION}/sites")).await?;
        let wanted = self.site.as_str();
        let found = sites.iter().find_map(|site| {
            let field = |key: &str| site.get(key).and_then(Value::as_str);
            let matches = field("id") == Some(wanted)
                || field("internalReference") == Some(wanted)
                || field("name").is_some_and(|name| name.eq_ignore_ascii_case(wanted));
            matches.then(|| field("id").map(str::to_owned)).flatten()
        });
        let Some(id) = found else {
            let names: Vec<String> = sites
                .iter()
                .filter_map(|s| s.get("internalReference").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            return Err(BackendError::Config(format!(
                "site {wanted:?} not found on the console (sites: {})",
                names.join(", ")
            )));
        };
        self.site_id = Some(id);
        Ok(())
    }

    async fn list_groups(&mut self) -> Result<Vec<RemoteGroup>, BackendError> {
        let path = self.lists_path()?;
        let mut out = Vec::new();
        for value in self.paged(&path).await? {
            // The list endpoint may leave the items out; read those lists one by one.
            let full = if value.get("items").is_some() {
                value
            } else {
                let Some(id) = value.get("id").and_then(Value::as_str) else {
                    continue;
                };
                if !matches!(
                    value.get("type").and_then(Value::as_str),
                    Some("IPV4_ADDRESSES" | "IPV6_ADDRESSES")
                ) {
                    continue;
                }
                self.call(Method::GET, &format!("{path}/{id}"), None)
                    .await?
            };
            if let Some(group) = Self::list_from(full) {
                out.push(group);
            }
        }
        Ok(out)
    }

    async fn create_group(
        &mut self,
        name: &str,
        family: Family,
        members: &BTreeSet<Target>,
    ) -> Result<RemoteGroup, BackendError> {
        let path = self.lists_path()?;
        let body = Self::body(name, family, members, &[]);
        let created = self.call(Method::POST, &path, Some(&body)).await?;
        Self::list_from(created).ok_or_else(|| {
            BackendError::Rejected(format!(
                "POST {path}: the console did not return the new list {name}"
            ))
        })
    }

    async fn replace_members(
        &mut self,
        group: &RemoteGroup,
        members: &BTreeSet<Target>,
    ) -> Result<(), BackendError> {
        let path = format!("{}/{}", self.lists_path()?, group.id);
        let body = Self::body(&group.name, group.family, members, &group.foreign);
        self.call(Method::PUT, &path, Some(&body)).await?;
        Ok(())
    }

    fn object_kind(&self) -> &'static str {
        "traffic matching list"
    }

    fn describe(&self) -> String {
        format!(
            "UniFi integration API {} site {}",
            self.endpoint.url, self.site
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_traffic_matching_list_keeps_a_placeholder() {
        let body = IntegrationApi::body("portcullis-v6-0", Family::V6, &BTreeSet::new(), &[]);
        assert_eq!(body["type"], "IPV6_ADDRESSES");
        assert_eq!(body["items"][0]["value"], "100::");
        let parsed = IntegrationApi::list_from(json!({
            "id": "0b4e…", "name": "portcullis-v6-0", "type": "IPV6_ADDRESSES", "items": body["items"].clone()
        }))
        .unwrap();
        assert!(parsed.members.is_empty() && parsed.foreign.is_empty());
    }
}
