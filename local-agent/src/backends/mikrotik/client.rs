//! RouterOS 7 REST calls on address lists.
//!
//! REST since RouterOS v7.1beta4, below `/rest`, HTTP Basic with a RouterOS user; every value in the JSON
//! is a string. Verbs: GET = print, PUT = add, PATCH = set, DELETE = remove. Errors come as
//! `{"error":400,"message":"Bad Request","detail":"failure: already have such entry"}`; a duplicate
//! (same list and address) is that 400. Sources: help.mikrotik.com "REST API" and "Address-lists";
//! `shared/reference/firewalls.md` §9.

use std::fmt;
use std::time::Duration;

use queue_message::Target;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backends::http::{self, Endpoint, Reply, Secret};
use crate::backends::BackendError;

/// One address-list entry as RouterOS prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    /// Internal id (`*1A`).
    #[serde(rename = ".id")]
    pub id: String,
    /// Address, network or DNS name (`203.0.113.7`, `2001:db8::1/128`).
    pub address: String,
    /// Comment (our ownership tag).
    #[serde(default)]
    pub comment: Option<String>,
    /// Remaining time (`23h59m50s`), absent for permanent entries.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The two address-list menus. Like UniFi's `Family` in shape only: this one names RouterOS menus, that one
/// group tags and placeholders, so each vendor keeps its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Menu {
    /// `/ip/firewall/address-list`.
    V4,
    /// `/ipv6/firewall/address-list`.
    V6,
}

impl Menu {
    /// The menu a target belongs in.
    pub fn of(target: &Target) -> Self {
        if target.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::V4 => "/rest/ip/firewall/address-list",
            Self::V6 => "/rest/ipv6/firewall/address-list",
        }
    }
}

/// How an add ended.
#[derive(Debug)]
pub enum Added {
    /// A new entry with this id.
    New(String),
    /// "failure: already have such entry".
    Duplicate,
}

/// The router's REST API.
pub struct RestClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    username: String,
    password: Secret,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("url", &self.endpoint.url.as_str())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The `detail` of a RouterOS error, or the body.
fn detail(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| reply.excerpt())
}

/// RouterOS time syntax for a timeout: `1d2h3m4s` (zero parts left out).
pub fn format_timeout(duration: Duration) -> String {
    let mut secs = duration.as_secs().max(1);
    let mut out = String::new();
    for (unit, len) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// Parses RouterOS time (`1w2d3h4m5s`, `4m5s500ms`, `00:05:00`, `2d03:04:05`); `None` when unreadable.
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (mut total, rest) = match text.rfind(|c: char| c.is_ascii_alphabetic()) {
        Some(_) if text.contains(':') => {
            let split = text.rfind(|c: char| c.is_ascii_alphabetic())? + 1;
            (parse_units(&text[..split])?, &text[split..])
        }
        _ if text.contains(':') => (Duration::ZERO, text),
        _ => return parse_units(text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let h: u64 = parts[0].parse().ok()?;
    let m: u64 = parts[1].parse().ok()?;
    // Seconds may carry a fraction; `-1`, `inf`, `NaN` and overflowing values are unreadable, not panics.
    let s = Duration::try_from_secs_f64(parts[2].parse().ok()?).ok()?;
    if parts[2].starts_with(['-', '+']) {
        return None;
    }
    let hm = h.checked_mul(3600)?.checked_add(m.checked_mul(60)?)?;
    total = total.checked_add(Duration::from_secs(hm))?.checked_add(s)?;
    Some(total)
}

fn parse_units(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "w" => Duration::from_secs(value.checked_mul(604_800)?),
            "d" => Duration::from_secs(value.checked_mul(86_400)?),
            "h" => Duration::from_secs(value.checked_mul(3600)?),
            "m" => Duration::from_secs(value.checked_mul(60)?),
            "s" => Duration::from_secs(value),
            "ms" => Duration::from_millis(value),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

impl RestClient {
    /// A client for `endpoint`.
    pub fn new(
        http: reqwest::Client,
        endpoint: Endpoint,
        username: String,
        password: Secret,
    ) -> Self {
        Self {
            http,
            endpoint,
            username,
            password,
        }
    }

    /// The router's base URL.
    pub fn url(&self) -> &str {
        self.endpoint.url.as_str()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, BackendError> {
        let (what, reply) = http::call(&self.http, &self.endpoint, method, path, body, |r| {
            r.basic_auth(&self.username, Some(self.password.expose()))
        })
        .await?;
        if matches!(reply.status.as_u16(), 401 | 403) {
            return Err(BackendError::Config(format!(
                "{what}: the router refused user {:?} (HTTP {}): {}. The user's group needs the read, \
                 write, api and rest-api policies.",
                self.username,
                reply.status,
                detail(&reply)
            )));
        }
        Ok(reply)
    }

    fn fail(what: &str, reply: &Reply) -> BackendError {
        match reply.status.as_u16() {
            400 => BackendError::Rejected(format!("{what}: the router refused: {}", detail(reply))),
            _ => http::status_error(what, reply),
        }
    }

    /// The RouterOS version (`7.15.3 (stable)`).
    pub async fn version(&self) -> Result<String, BackendError> {
        let path = "/rest/system/resource";
        let reply = self.send(Method::GET, path, None).await?;
        if !reply.status.is_success() {
            let mut err = Self::fail(&format!("GET {path}"), &reply);
            if reply.status == StatusCode::NOT_FOUND {
                err = BackendError::Unsupported(format!(
                    "GET {path}: no REST API here; it needs RouterOS 7.1 or later with the www-ssl service"
                ));
            }
            return Err(err);
        }
        let value: Value = http::json_body(&format!("GET {path}"), &reply)?;
        Ok(value
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// Entries of `list` in one menu, optionally only those for `address`.
    pub async fn entries(
        &self,
        menu: Menu,
        list: &str,
        address: Option<&str>,
    ) -> Result<Vec<Entry>, BackendError> {
        let mut url =
            url::Url::parse("http://x/").map_err(|e| BackendError::Rejected(e.to_string()))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("list", list);
            if let Some(address) = address {
                query.append_pair("address", address);
            }
            query.append_pair(".proplist", ".id,address,comment,timeout");
        }
        let path = format!("{}?{}", menu.path(), url.query().unwrap_or(""));
        let what = format!("GET {}", menu.path());
        let reply = self.send(Method::GET, &path, None).await?;
        if !reply.status.is_success() {
            return Err(Self::fail(&what, &reply));
        }
        http::json_body(&what, &reply)
    }

    /// Adds an entry with a timeout and our comment.
    pub async fn add(
        &self,
        menu: Menu,
        list: &str,
        target: &Target,
        timeout: Duration,
        comment: &str,
    ) -> Result<Added, BackendError> {
        let what = format!("PUT {} {target}", menu.path());
        let body = json!({
            "list": list,
            "address": target.to_string(),
            "timeout": format_timeout(timeout),
            "comment": comment,
        });
        let reply = self.send(Method::PUT, menu.path(), Some(&body)).await?;
        if reply.status.is_success() {
            let entry: Entry = http::json_body(&what, &reply)?;
            return Ok(Added::New(entry.id));
        }
        if reply.status == StatusCode::BAD_REQUEST
            && detail(&reply).contains("already have such entry")
        {
            return Ok(Added::Duplicate);
        }
        Err(Self::fail(&what, &reply))
    }

    /// Sets an entry's timeout; `Ok(false)` when the entry is gone (expired meanwhile).
    pub async fn set_timeout(
        &self,
        menu: Menu,
        id: &str,
        timeout: Duration,
    ) -> Result<bool, BackendError> {
        let path = format!("{}/{id}", menu.path());
        let body = json!({ "timeout": format_timeout(timeout) });
        let reply = self.send(Method::PATCH, &path, Some(&body)).await?;
        if reply.status.is_success() {
            return Ok(true);
        }
        if reply.status == StatusCode::NOT_FOUND || detail(&reply).contains("no such item") {
            return Ok(false);
        }
        Err(Self::fail(&format!("PATCH {path}"), &reply))
    }

    /// Removes an entry by id; an entry that is already gone is fine.
    pub async fn remove(&self, menu: Menu, id: &str) -> Result<(), BackendError> {
        let path = format!("{}/{id}", menu.path());
        let reply = self.send(Method::DELETE, &path, None).await?;
        if reply.status.is_success()
            || reply.status == StatusCode::NOT_FOUND
            || detail(&reply).contains("no such item")
        {
            return Ok(());
        }
        Err(Self::fail(&format!("DELETE {path}"), &reply))
    }

    /// True when some raw or filter rule matches on `list` as its source address list.
    pub async fn list_is_referenced(&self, menu: Menu, list: &str) -> Result<bool, BackendError> {
        let family = match menu {
            Menu::V4 => "ip",
            Menu::V6 => "ipv6",
        };
        for table in ["raw", "filter"] {
            let path = format!("/rest/{family}/firewall/{table}?src-address-list={list}");
            let reply = self.send(Method::GET, &path, None).await?;
            if !reply.status.is_success() {
                return Err(Self::fail(&format!("GET {path}"), &reply));
            }
            let rules: Vec<Value> = http::json_body(&format!("GET {path}"), &reply)?;
            if !rules.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
