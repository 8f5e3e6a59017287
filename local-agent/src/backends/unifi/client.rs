//! The two UniFi APIs that hold address lists, behind one small trait.
//!
//! - [`LoginApi`]: the Network application's internal REST API with a cookie session. The login style is
//!   detected (`GET /` → 200 on UniFi OS, a redirect on a classic controller): UniFi OS logs in at
//!   `/api/auth/login` (cookie `TOKEN`), prefixes Network paths with `/proxy/network` and needs
//!   `X-CSRF-Token` on writes; a classic controller logs in at `/api/login` (cookie `unifises`). A 401 means
//!   the session expired: log in again and retry once. Blocks live in firewall groups
//!   (`rest/firewallgroup`, `address-group` / `ipv6-address-group`), replaced whole by PUT.
//! - [`IntegrationApi`]: the official integration API (`/proxy/network/integration/v1`, `X-API-KEY`) and
//!   its traffic matching lists, also replaced whole by PUT. A list must keep at least one item, so an
//!   emptied list holds a placeholder that can never be a real source address.
//!
//! Sources: Art-of-WiFi/UniFi-API-client `src/Client.php` (`login()`, `list_/create_/edit_firewallgroup`,
//! the CSRF token from the JWT); Kane610/aiounifi `aiounifi/interfaces/connectivity.py` (`check_unifi_os`,
//! `login`, `_update_login_headers`, 401 → login again); UniFi Network API docs (developer.ui.com, v10.1.68)
//! for traffic matching lists; `shared/reference/firewalls.md` §7.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use base64::Engine;
use queue_message::Target;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backends::http::{self, Endpoint, Reply, Secret};
use crate::backends::BackendError;

/// Address family of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 addresses and networks.
    V4,
    /// IPv6 addresses and networks.
    V6,
}

impl Family {
    /// The family of a target.
    pub fn of(target: &Target) -> Self {
        if target.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }

    /// `v4` or `v6`, as used in group names.
    pub fn tag(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }

    /// The placeholder kept in a list that must not be empty: the limited broadcast address and an address
    /// of the discard-only prefix `100::/64` (RFC 6666). Neither can be the source of real traffic, and both
    /// are special-purpose ranges the agent never blocks, so they never collide with a real block.
    pub fn placeholder(self) -> Target {
        let text = match self {
            Self::V4 => "255.255.255.255",
            Self::V6 => "100::",
        };
        Target::parse(text).expect("placeholder addresses are valid")
    }
}

/// One address list on the console (a firewall group or a traffic matching list).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteGroup {
    /// Its id (a Mongo ObjectId or a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// The members the agent understands (the placeholder excluded).
    pub members: BTreeSet<Target>,
    /// Members the agent cannot parse (a DNS name, a range someone added by hand): kept as they are on
    /// every write, never removed.
    pub foreign: Vec<Value>,
    /// The object as read; a legacy PUT sends it back whole with the members replaced.
    pub raw: Value,
}

/// What the backend needs from either API.
#[async_trait]
pub trait GroupApi: Send + Sync + fmt::Debug {
    /// Logs in or resolves the site; idempotent.
    async fn connect(&mut self) -> Result<(), BackendError>;
    /// Every address list of the site (the caller picks its own by name).
    async fn list_groups(&mut self) -> Result<Vec<RemoteGroup>, BackendError>;
    /// Creates a list with these members.
    async fn create_group(
        &mut self,
        name: &str,
        family: Family,
        members: &BTreeSet<Target>,
    ) -> Result<RemoteGroup, BackendError>;
    /// Replaces the whole member list of `group` (one PUT).
    async fn replace_members(
        &mut self,
        group: &RemoteGroup,
        members: &BTreeSet<Target>,
    ) -> Result<(), BackendError>;
    /// What kind of object holds the blocks, for messages ("firewall group", "traffic matching list").
    fn object_kind(&self) -> &'static str;
    /// A one-line description of the connection for logs.
    fn describe(&self) -> String;
}

fn parse_members(
    values: impl IntoIterator<Item = Value>,
    text_of: impl Fn(&Value) -> Option<String>,
    family: Family,
) -> (BTreeSet<Target>, Vec<Value>) {
    let mut members = BTreeSet::new();
    let mut foreign = Vec::new();
    for value in values {
        match text_of(&value).and_then(|text| Target::parse(&text).ok()) {
            Some(target) if Family::of(&target) == family => {
                if target != family.placeholder() {
                    members.insert(target);
                }
            }
            _ => foreign.push(value),
        }
    }
    (members, foreign)
}

/// How one API spells an address list: the two APIs store the same thing under different names.
struct Shape {
    /// The field that says the family, and its values for IPv4 and IPv6 (any other: not an address list).
    family_key: &'static str,
    v4: &'static str,
    v6: &'static str,
    /// The id field.
    id_key: &'static str,
    /// The members array.
    members_key: &'static str,
    /// A member's address text, `None` for a member the agent cannot read.
    member_text: fn(&Value) -> Option<String>,
}

/// A firewall group (`rest/firewallgroup`): `group_type`, `_id`, `group_members` of plain strings.
const GROUP_SHAPE: Shape = Shape {
    family_key: "group_type",
    v4: "address-group",
    v6: "ipv6-address-group",
    id_key: "_id",
    members_key: "group_members",
    member_text: |v| v.as_str().map(str::to_owned),
};

/// A traffic matching list (integration API): `type`, `id`, `items` of `{type, value}` objects.
const LIST_SHAPE: Shape = Shape {
    family_key: "type",
    v4: "IPV4_ADDRESSES",
    v6: "IPV6_ADDRESSES",
    id_key: "id",
    members_key: "items",
    member_text: |item| match item.get("type").and_then(Value::as_str) {
        Some("IP_ADDRESS" | "SUBNET") => {
            item.get("value").and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    },
};

/// Reads an address list of either API; `None` for an object that is not one.
fn remote_group(value: Value, shape: &Shape) -> Option<RemoteGroup> {
    let family = match value.get(shape.family_key)?.as_str()? {
        kind if kind == shape.v4 => Family::V4,
        kind if kind == shape.v6 => Family::V6,
        _ => return None,
    };
    let id = value.get(shape.id_key)?.as_str()?.to_owned();
    let name = value.get("name")?.as_str()?.to_owned();
    let list = value
        .get(shape.members_key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (members, foreign) = parse_members(list, shape.member_text, family);
    Some(RemoteGroup {
        id,
        name,
        family,
        members,
        foreign,
        raw: value,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Cookie login: classic controller and UniFi OS
// ---------------------------------------------------------------------------------------------------------

/// The two login styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStyle {
    /// UniFi OS console (UDM, UCG, UDR, Cloud Key Gen2+, UniFi OS Server).
    UnifiOs,
    /// Classic or self-hosted Network controller.
    Classic,
}

impl LoginStyle {
    fn login_path(self) -> &'static str {
        match self {
            Self::UnifiOs => "/api/auth/login",
            Self::Classic => "/api/login",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::UnifiOs => "/proxy/network",
            Self::Classic => "",
        }
    }
}

struct Session {
    /// `Cookie` header value (`TOKEN=…` or `unifises=…; csrf_token=…`).
    cookies: Secret,
    /// `X-CSRF-Token` to send on writes.
    csrf: Option<Secret>,
}

/// The Network application's REST API with a cookie session.
pub struct LoginApi {
    http: reqwest::Client,
    endpoint: Endpoint,
    site: String,
    username: String,
    password: Secret,
    style: Option<LoginStyle>,
    session: Option<Session>,
}

impl fmt::Debug for LoginApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginApi")
            .field("url", &self.endpoint.url.as_str())
            .field("site", &self.site)
            .field("username", &self.username)
            .field("style", &self.style)
            .field("logged_in", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// The envelope of every internal API answer: `{"meta":{"rc":"ok"|"error","msg":…},"data":[…]}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    meta: Meta,
    #[serde(default)]
    data: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    rc: String,
    #[serde(default)]
    msg: Option<String>,
}

enum Outcome {
    Done(Vec<Value>),
    LoginAgain(String),
}

impl LoginApi {
    /// A client for `endpoint`; nothing is sent until [`GroupApi::connect`].
    pub fn new(
        http: reqwest::Client,
        endpoint: Endpoint,
        site: String,
        username: String,
        password: Secret,
    ) -> Self {
        Self {
            http,
            endpoint,
            site,
            username,
            password,
            style: None,
            session: None,
        }
    }

    /// The detected login style, once connected.
    pub fn style(&self) -> Option<LoginStyle> {
        self.style
    }

    async fn detect(&mut self) -> Result<LoginStyle, BackendError> {
        let what = "GET / (login style detection)";
        let reply = http::send(what, self.http.get(self.endpoint.join("/"))).await?;
        let style = match reply.status.as_u16() {
            200 => LoginStyle::UnifiOs,
            300..=399 => LoginStyle::Classic,
            _ => return Err(http::status_error(what, &reply)),
        };
        tracing::info!(url = %self.endpoint.url, ?style, "UniFi login style detected.");
        Ok(style)
    }

    // Long: the login handshake of the session API (CSRF token, cookies, the UniFi OS vs classic
    // paths) as one sequence; the client split of issue 8 item 5 is not done yet.
    async fn login(&mut self) -> Result<(), BackendError> {
        self.session = None;
        let style = match self.style {
            Some(style) => style,
            None => {
                let style = self.detect().await?;
                self.style = Some(style);
                style
            }
        };
        let path = style.login_path();
        let what = format!("POST {path} (login as {})", self.username);
        let body = json!({
            "username": self.username,
            "password": self.password.expose(),
            "rememberMe": true,
        });
        let reply = http::send(&what, self.http.post(self.endpoint.join(path)).json(&body)).await?;
        match reply.status.as_u16() {
            200..=299 => {}
            400 | 401 | 403 => {
                return Err(BackendError::Config(format!(
                    "{what}: the console refused the credentials (HTTP {}): {}. Use a local admin account \
                     without 2FA.",
                    reply.status,
                    login_message(&reply)
                )))
            }
            499 => {
                return Err(BackendError::Config(format!(
                    "{what}: the account requires multi-factor authentication; create a local account \
                     without 2FA for Portcullis"
                )))
            }
            429 => {
                return Err(BackendError::Unreachable(format!(
                    "{what}: too many login attempts, the console is rate limiting (HTTP 429): {}",
                    reply.excerpt()
                )))
            }
            _ => return Err(http::status_error(&what, &reply)),
        }
        // Both styles answer JSON; an HTML page means the URL is not a UniFi console.
        let answer: Value = http::json_body(&what, &reply)?;
        if answer
            .pointer("/meta/rc")
            .and_then(Value::as_str)
            .is_some_and(|rc| rc == "error")
        {
            return Err(BackendError::Config(format!(
                "{what}: login refused: {}",
                login_message(&reply)
            )));
        }
        let mut cookies = Vec::new();
        for header in reply.headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("").trim();
            if let Some((name, value)) = pair.split_once('=') {
                if !value.is_empty() {
                    cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let session_cookie = match style {
            LoginStyle::UnifiOs => "TOKEN",
            LoginStyle::Classic => "unifises",
        };
        if !cookies.iter().any(|(name, _)| name == session_cookie) {
            return Err(BackendError::Rejected(format!(
                "{what}: the login succeeded but no `{session_cookie}` cookie came back; is this a UniFi \
                 console of the detected style ({style:?})?"
            )));
        }
        let csrf = header_text(&reply, "x-csrf-token")
            .or_else(|| {
                cookies
                    .iter()
                    .find(|(name, _)| name == "csrf_token")
                    .map(|(_, value)| value.clone())
            })
            .or_else(|| {
                cookies
                    .iter()
                    .find(|(name, _)| name == "TOKEN")
                    .and_then(|(_, jwt)| csrf_from_jwt(jwt))
            });
        if style == LoginStyle::UnifiOs && csrf.is_none() {
            tracing::warn!(
                "The UniFi OS login gave no CSRF token; writes will probably be refused."
            );
        }
        let header = cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        self.session = Some(Session {
            cookies: Secret::new(header),
            csrf: csrf.map(Secret::new),
        });
        tracing::debug!(username = %self.username, ?style, "Logged in to UniFi.");
        Ok(())
    }

    fn site_path(&self, rest: &str) -> String {
        let prefix = self.style.map_or("", LoginStyle::prefix);
        format!("{prefix}/api/s/{}/{rest}", self.site)
    }

    /// One call with the session; a 401 (or a `api.err.LoginRequired`) logs in again and retries once.
    async fn call(
        &mut self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Vec<Value>, BackendError> {
        if self.session.is_none() {
            self.login().await?;
        }
        match self.call_once(&method, rest, body).await? {
            Outcome::Done(data) => Ok(data),
            Outcome::LoginAgain(why) => {
                tracing::info!(why, "UniFi session expired; logging in again.");
                self.login().await?;
                match self.call_once(&method, rest, body).await? {
                    Outcome::Done(data) => Ok(data),
                    Outcome::LoginAgain(why) => Err(BackendError::Config(format!(
                        "{method} {}: refused right after a fresh login ({why}); the account may lack \
                         the rights to change firewall settings (it needs a Network admin role)",
                        self.site_path(rest)
                    ))),
                }
            }
        }
    }

    async fn call_once(
        &mut self,
        method: &Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Outcome, BackendError> {
        let path = self.site_path(rest);
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| BackendError::Unreachable("not logged in".to_owned()))?;
        let (what, reply) = http::call(
            &self.http,
            &self.endpoint,
            method.clone(),
            &path,
            body,
            |r| {
                let r = r
                    .header(reqwest::header::COOKIE, session.cookies.expose())
                    .header(reqwest::header::ACCEPT, "application/json");
                match &session.csrf {
                    Some(csrf) if *method != Method::GET => r.header("X-CSRF-Token", csrf.expose()),
                    _ => r,
                }
            },
        )
        .await?;
        if let Some(rotated) = header_text(&reply, "x-updated-csrf-token") {
            if let Some(session) = self.session.as_mut() {
                session.csrf = Some(Secret::new(rotated));
            }
        }
        match reply.status {
            StatusCode::UNAUTHORIZED => {
                return Ok(Outcome::LoginAgain(format!("HTTP 401 on {what}")));
            }
            // UniFi OS answers 403 to a write whose CSRF token is missing or stale.
            StatusCode::FORBIDDEN if self.style == Some(LoginStyle::UnifiOs) => {
                return Ok(Outcome::LoginAgain(format!(
                    "HTTP 403 on {what}: {}",
                    reply.excerpt()
                )));
            }
            status if status.is_success() || status == StatusCode::BAD_REQUEST => {}
            _ => return Err(http::status_error(&what, &reply)),
        }
        let envelope: Envelope = http::json_body(&what, &reply)?;
        if envelope.meta.rc == "ok" {
            return Ok(Outcome::Done(envelope.data));
        }
        let msg = envelope.meta.msg.unwrap_or_default();
        if msg == "api.err.LoginRequired" {
            return Ok(Outcome::LoginAgain(msg));
        }
        Err(BackendError::Rejected(format!(
            "{what}: the controller refused the change: {msg} (HTTP {})",
            reply.status
        )))
    }

    fn group_from(value: Value) -> Option<RemoteGroup> {
        remote_group(value, &GROUP_SHAPE)
    }
}

fn header_text(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn login_message(reply: &Reply) -> String {
    serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.pointer("/meta/msg")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| reply.excerpt())
}

/// UniFi OS puts the CSRF token in the JWT's payload (`csrfToken`); Art-of-WiFi's client reads it there.
fn csrf_from_jwt(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("csrfToken")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn legacy_member_text(target: &Target) -> Value {
    Value::String(target.to_string())
}

#[async_trait]
impl GroupApi for LoginApi {
    async fn connect(&mut self) -> Result<(), BackendError> {
        if self.session.is_none() {
            self.login().await?;
        }
        Ok(())
    }

    async fn list_groups(&mut self) -> Result<Vec<RemoteGroup>, BackendError> {
        let data = self.call(Method::GET, "rest/firewallgroup", None).await?;
        Ok(data.into_iter().filter_map(Self::group_from).collect())
    }

    async fn create_group(
        &mut self,
        name: &str,
        family: Family,
        members: &BTreeSet<Target>,
    ) -> Result<RemoteGroup, BackendError> {
        let group_type = match family {
            Family::V4 => "address-group",
            Family::V6 => "ipv6-address-group",
        };
        let body = json!({
            "name": name,
            "group_type": group_type,
            "group_members": members.iter().map(legacy_member_text).collect::<Vec<_>>(),
        });
        let data = self
            .call(Method::POST, "rest/firewallgroup", Some(&body))
            .await?;
        data.into_iter().find_map(Self::group_from).ok_or_else(|| {
            BackendError::Rejected(format!(
                "POST rest/firewallgroup: the controller did not return the new group {name}"
            ))
        })
    }

    async fn replace_members(
        &mut self,
        group: &RemoteGroup,
        members: &BTreeSet<Target>,
    ) -> Result<(), BackendError> {
        // Full object replacement: send the group as read, with the new member list.
        let mut body = group.raw.clone();
        let mut list: Vec<Value> = members.iter().map(legacy_member_text).collect();
        list.extend(group.foreign.iter().cloned());
        body["group_members"] = Value::Array(list);
        let path = format!("rest/firewallgroup/{}", group.id);
        self.call(Method::PUT, &path, Some(&body)).await?;
        Ok(())
    }

    fn object_kind(&self) -> &'static str {
        "firewall group"
    }

    fn describe(&self) -> String {
        let style = match self.style {
            Some(LoginStyle::UnifiOs) => "UniFi OS console",
            Some(LoginStyle::Classic) => "classic controller",
            None => "UniFi controller (style not detected yet)",
        };
        format!(
            "{style} {} site {} as {}",
            self.endpoint.url, self.site, self.username
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Integration API with X-API-KEY
// ---------------------------------------------------------------------------------------------------------

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
    fn csrf_token_is_read_from_the_jwt_payload() {
        // Payload {"csrfToken":"abc-123","userId":"u"} as UniFi OS puts it in the TOKEN cookie.
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"csrfToken":"abc-123","userId":"u"}"#);
        let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
        assert_eq!(csrf_from_jwt(&jwt).as_deref(), Some("abc-123"));
        assert_eq!(csrf_from_jwt("not-a-jwt"), None);
    }

    #[test]
    fn group_parsing_keeps_foreign_members_and_drops_the_placeholder() {
        // Shape of a firewall group as quoted in home-assistant/core#136161 (websocket firewallgroup:add).
        let group = LoginApi::group_from(json!({
            "_id": "65a1b2c3d4e5f60718293a4b", "site_id": "5f0c1d2e3f4a5b6c7d8e9f01",
            "name": "portcullis-v4-0", "group_type": "address-group",
            "group_members": ["192.0.2.7", "198.51.100.0/24", "255.255.255.255", "printer.lan", "2001:db8::1"]
        }))
        .unwrap();
        assert_eq!(group.family, Family::V4);
        assert_eq!(group.members.len(), 2);
        assert_eq!(group.foreign.len(), 2, "{:?}", group.foreign);
        assert!(
            LoginApi::group_from(json!({"_id":"x","name":"p","group_type":"port-group"})).is_none()
        );
    }

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
