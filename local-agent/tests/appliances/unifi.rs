//! A fake UniFi console (UniFi OS or classic controller, plus the integration API) and the UniFi tests.
//!
//! Fixture sources:
//! - Login style detection (`GET /` → 200 on UniFi OS, a redirect on a classic controller), login paths
//!   and cookies (`TOKEN`, `unifises`), `x-csrf-token` on the login answer, 401 when the session is gone:
//!   Kane610/aiounifi `aiounifi/interfaces/connectivity.py`; Art-of-WiFi/UniFi-API-client `src/Client.php`
//!   (`login()`, the `csrfToken` claim of the JWT, `create_x_csrf_token_header()`).
//! - Envelope `{"meta":{"rc":"ok"|"error","msg":"api.err.…"},"data":[…]}` and `api.err.LoginRequired`,
//!   `api.err.Invalid`: aiounifi `connectivity.py` and `models/api.py` (`ERRORS`).
//! - Firewall group object `{"_id","site_id","name","group_type","group_members"}`, whole-object PUT:
//!   home-assistant/core#136161 (websocket `firewallgroup:add`), Art-of-WiFi `edit_firewallgroup`,
//!   `shared/reference/firewalls.md` §7.2.
//! - The member limit: no vendor number exists; 10,000 is the community limit (wolffcatskyy/
//!   crowdsec-unifi-bouncer README, developingchet/cs-unifi-bouncer-pro `FIREWALL_GROUP_CAPACITY`). The
//!   error text `api.err.FirewallGroupMembersTooMany` is this fake's invention [U].
//! - Integration API: `X-API-KEY`, `/proxy/network/integration/v1/sites`, paged `{"offset","limit",
//!   "count","totalCount","data"}`, traffic matching lists `{"id","type":"IPV4_ADDRESSES","name","items":
//!   [{"type":"IP_ADDRESS","value":…}]}`, errors `{"statusCode","statusName","message"}`: UniFi Network
//!   API docs v10.1.68 (developer.ui.com, mirrored in enuno/unifi-mcp-server `docs/UNIFI_API.md`); a list
//!   keeps at least one item: swissmakers/fail2ban-ui PR #206.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{Duration, Utc};
use portcullis_agent::backends::{unifi, Backend, BackendError};
use queue_message::Target;
use serde_json::{json, Value};

use super::server::{self, injected, json, maybe_truncate, Counters, Faults, Request, Running};
use crate::contract::{self, Device, Options};

pub const USER: &str = "portcullis";
pub const PASSWORD: &str = "correct horse battery staple";
pub const API_KEY: &str = "kT9sQ2vX8mB4nL6pR1wZ3yF5hJ7dG0cA";
const SITE_ID: &str = "5f0c1d2e3f4a5b6c7d8e9f01";
const SITE_UUID: &str = "88f7af54-98f8-306a-a1c7-c9349722b1f6";

/// Which console the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// UniFi OS: `/api/auth/login`, `TOKEN`, `/proxy/network`, CSRF on writes.
    UnifiOs,
    /// Classic controller: `/api/login`, `unifises`.
    Classic,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    group_type: String,
    members: Vec<String>,
}

#[derive(Debug, Clone)]
struct List {
    name: String,
    list_type: String,
    items: Vec<Value>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashSet<String>,
    csrf: HashSet<String>,
    groups: BTreeMap<String, Group>,
    lists: BTreeMap<String, List>,
    next_id: u64,
    logins: usize,
}

/// The fake console.
#[derive(Debug)]
pub struct FakeUnifi {
    pub style: Style,
    state: Mutex<State>,
    /// Hard member limit the fake enforces on every write.
    pub limit: usize,
    pub faults: Faults,
    pub counters: Counters,
}

impl FakeUnifi {
    pub fn new(style: Style) -> Arc<Self> {
        Arc::new(Self {
            style,
            state: Mutex::new(State::default()),
            limit: 10_000,
            faults: Faults::default(),
            counters: Counters::default(),
        })
    }

    /// Starts serving it.
    pub async fn start(self: &Arc<Self>) -> Running {
        server::start(self, Self::handle).await
    }

    fn id(state: &mut State) -> String {
        state.next_id += 1;
        format!("65a1b2c3d4e5f6{:010x}", state.next_id)
    }

    /// Adds a firewall group as an admin would in the UI.
    pub fn add_group(&self, name: &str, v6: bool) {
        let mut state = self.state.lock().unwrap();
        let id = Self::id(&mut state);
        state.groups.insert(
            id,
            Group {
                name: name.to_owned(),
                group_type: if v6 {
                    "ipv6-address-group"
                } else {
                    "address-group"
                }
                .to_owned(),
                members: Vec::new(),
            },
        );
    }

    /// Adds the first group of each family, `portcullis-v4-0` and `portcullis-v6-0`.
    pub fn add_first_groups(&self) {
        self.add_group("portcullis-v4-0", false);
        self.add_group("portcullis-v6-0", true);
    }

    /// Adds a traffic matching list (with the one item a list must keep).
    pub fn add_list(&self, name: &str, v6: bool) {
        let mut state = self.state.lock().unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let (list_type, placeholder) = if v6 {
            ("IPV6_ADDRESSES", "100::")
        } else {
            ("IPV4_ADDRESSES", "255.255.255.255")
        };
        state.lists.insert(
            id,
            List {
                name: name.to_owned(),
                list_type: list_type.to_owned(),
                items: vec![json!({"type": "IP_ADDRESS", "value": placeholder})],
            },
        );
    }

    /// Names of the groups (or lists) that exist.
    pub fn names(&self) -> BTreeSet<String> {
        let state = self.state.lock().unwrap();
        state
            .groups
            .values()
            .map(|g| g.name.clone())
            .chain(state.lists.values().map(|l| l.name.clone()))
            .collect()
    }

    /// Members of the group (or list) `name`.
    pub fn members_of(&self, name: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        if let Some(group) = state.groups.values().find(|g| g.name == name) {
            return group.members.clone();
        }
        state
            .lists
            .values()
            .find(|l| l.name == name)
            .map(|l| {
                l.items
                    .iter()
                    .filter_map(|i| i["value"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets every session, as a console does after its session lifetime or a restart.
    pub fn expire_sessions(&self) {
        let mut state = self.state.lock().unwrap();
        state.sessions.clear();
    }

    /// Invalidates the CSRF tokens but keeps the sessions (a rotated token).
    pub fn rotate_csrf(&self) {
        self.state.lock().unwrap().csrf.clear();
    }

    pub fn logins(&self) -> usize {
        self.state.lock().unwrap().logins
    }

    fn envelope_error(status: StatusCode, msg: &str) -> Response {
        json(
            status,
            &json!({"meta": {"rc": "error", "msg": msg}, "data": []}),
        )
    }

    fn ok(data: &Value) -> Response {
        json(StatusCode::OK, &json!({"meta": {"rc": "ok"}, "data": data}))
    }

    fn handle(&self, req: &Request) -> Response {
        let segments = req.segments();
        let is_integration = req.path.starts_with("/proxy/network/integration/");
        let is_login = req.path.ends_with("/login");
        // Not `server::admit`: the login and the root page (style detection) are exempt from faults, and
        // each route below counts itself (a login as a non-write call).
        if !is_login && req.path != "/" {
            if let Some(fault) = injected(&self.faults, req.is_write()) {
                return fault;
            }
        }
        if is_integration {
            return self.integration(req, &segments[4..]);
        }
        match (self.style, req.method.clone(), req.path.as_str()) {
            (Style::UnifiOs, Method::GET, "/") => {
                return (
                    StatusCode::OK,
                    [("content-type", "text/html")],
                    "<html>UniFi OS</html>",
                )
                    .into_response()
            }
            (Style::Classic, Method::GET, "/") => {
                return (StatusCode::FOUND, [("location", "/manage")], "").into_response()
            }
            (Style::UnifiOs, Method::POST, "/api/auth/login")
            | (Style::Classic, Method::POST, "/api/login") => return self.login(req),
            _ => {}
        }
        // Network API paths.
        let rest = match self.style {
            Style::UnifiOs => segments.strip_prefix(&["proxy", "network"][..]),
            Style::Classic => Some(&segments[..]),
        };
        let Some(["api", "s", site, "rest", "firewallgroup", tail @ ..]) = rest else {
            return (StatusCode::NOT_FOUND, "Not Found").into_response();
        };
        if *site != "default" {
            return Self::envelope_error(StatusCode::BAD_REQUEST, "api.err.NoSiteContext");
        }
        // Session: 401 without a valid cookie (aiounifi raises LoginRequired on 401).
        let cookie = req
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let session_name = match self.style {
            Style::UnifiOs => "TOKEN=",
            Style::Classic => "unifises=",
        };
        let token = cookie
            .split("; ")
            .find_map(|c| c.strip_prefix(session_name))
            .map(str::to_owned);
        {
            let state = self.state.lock().unwrap();
            if !token.is_some_and(|t| state.sessions.contains(&t)) {
                return Self::envelope_error(StatusCode::UNAUTHORIZED, "api.err.LoginRequired");
            }
            if self.style == Style::UnifiOs && req.is_write() {
                let csrf = req
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok());
                if !csrf.is_some_and(|c| state.csrf.contains(c)) {
                    return json(
                        StatusCode::FORBIDDEN,
                        &json!({"error": {"code": 403, "message": "Forbidden: invalid CSRF token"}}),
                    );
                }
            }
        }
        let response = self.firewallgroup(req, tail);
        if req.method == Method::GET {
            maybe_truncate(&self.faults, response)
        } else {
            response
        }
    }

    fn login(&self, req: &Request) -> Response {
        let body = req.json();
        let mut state = self.state.lock().unwrap();
        state.logins += 1;
        self.counters.other.fetch_add(1, Ordering::SeqCst);
        if body["username"] != USER || body["password"] != PASSWORD {
            return match self.style {
                // UniFi OS answers 401 with a JSON error body.
                Style::UnifiOs => json(
                    StatusCode::UNAUTHORIZED,
                    &json!({"code": "AUTHENTICATION_FAILED_INVALID_CREDENTIALS", "message": "Invalid username or password"}),
                ),
                Style::Classic => Self::envelope_error(StatusCode::BAD_REQUEST, "api.err.Invalid"),
            };
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        state.sessions.insert(token.clone());
        match self.style {
            Style::UnifiOs => {
                let csrf = uuid::Uuid::new_v4().to_string();
                state.csrf.insert(csrf.clone());
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let jwt = format!(
                    "{}.{}.{}",
                    b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
                    b64.encode(
                        json!({"userId": "u1", "csrfToken": csrf, "passwordRevision": 0})
                            .to_string()
                    ),
                    b64.encode(token.as_bytes())
                );
                // The session is keyed by the whole JWT, as the console does.
                state.sessions.insert(jwt.clone());
                (
                    StatusCode::OK,
                    [
                        ("content-type", "application/json".to_owned()),
                        (
                            "set-cookie",
                            format!("TOKEN={jwt}; path=/; samesite=none; secure; httponly"),
                        ),
                        ("x-csrf-token", csrf),
                    ],
                    json!({"unique_id": "u1", "username": USER, "isOwner": false}).to_string(),
                )
                    .into_response()
            }
            Style::Classic => (
                StatusCode::OK,
                [
                    ("content-type", "application/json".to_owned()),
                    (
                        "set-cookie",
                        format!("unifises={token}; Path=/; Secure; HttpOnly"),
                    ),
                ],
                json!({"meta": {"rc": "ok"}, "data": []}).to_string(),
            )
                .into_response(),
        }
    }

    fn group_json(id: &str, g: &Group) -> Value {
        json!({"_id": id, "site_id": SITE_ID, "name": g.name, "group_type": g.group_type, "group_members": g.members})
    }

    fn check_members(&self, group_type: &str, members: &Value) -> Result<Vec<String>, Response> {
        let Some(list) = members.as_array() else {
            return Err(Self::envelope_error(
                StatusCode::BAD_REQUEST,
                "api.err.InvalidPayload",
            ));
        };
        if list.len() > self.limit {
            return Err(Self::envelope_error(
                StatusCode::BAD_REQUEST,
                "api.err.FirewallGroupMembersTooMany",
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for member in list {
            let Some(text) = member.as_str() else {
                return Err(Self::envelope_error(
                    StatusCode::BAD_REQUEST,
                    "api.err.InvalidPayload",
                ));
            };
            let v6 = text.contains(':');
            if v6 != (group_type == "ipv6-address-group") {
                return Err(Self::envelope_error(
                    StatusCode::BAD_REQUEST,
                    "api.err.InvalidFirewallGroupMember",
                ));
            }
            out.push(text.to_owned());
        }
        Ok(out)
    }

    fn firewallgroup(&self, req: &Request, tail: &[&str]) -> Response {
        match (req.method.clone(), tail) {
            (Method::GET, []) => {
                self.counters.other.fetch_add(1, Ordering::SeqCst);
                let state = self.state.lock().unwrap();
                let all: Vec<Value> = state
                    .groups
                    .iter()
                    .map(|(id, g)| Self::group_json(id, g))
                    .collect();
                Self::ok(&Value::Array(all))
            }
            (Method::POST, []) => {
                self.counters.write(req.body.len());
                let body = req.json();
                let group_type = body["group_type"].as_str().unwrap_or("").to_owned();
                let members = match self.check_members(&group_type, &body["group_members"]) {
                    Ok(m) => m,
                    Err(e) => return e,
                };
                let mut state = self.state.lock().unwrap();
                let name = body["name"].as_str().unwrap_or("").to_owned();
                if state.groups.values().any(|g| g.name == name) {
                    return Self::envelope_error(
                        StatusCode::BAD_REQUEST,
                        "api.err.FirewallGroupExisted",
                    );
                }
                let id = Self::id(&mut state);
                let group = Group {
                    name,
                    group_type,
                    members,
                };
                let out = Self::group_json(&id, &group);
                state.groups.insert(id, group);
                Self::ok(&json!([out]))
            }
            (Method::PUT, [id]) => {
                self.counters.write(req.body.len());
                let body = req.json();
                let mut state = self.state.lock().unwrap();
                let Some(group) = state.groups.get(*id).cloned() else {
                    return Self::envelope_error(StatusCode::BAD_REQUEST, "api.err.IdInvalid");
                };
                // Full object replacement: the body must be the whole group, and the type cannot change.
                if body["_id"] != *id || body["name"].as_str().is_none() {
                    return Self::envelope_error(StatusCode::BAD_REQUEST, "api.err.InvalidPayload");
                }
                if body["group_type"] != group.group_type.as_str() {
                    return Self::envelope_error(
                        StatusCode::BAD_REQUEST,
                        "api.err.FirewallGroupTypeChange",
                    );
                }
                let members = match self.check_members(&group.group_type, &body["group_members"]) {
                    Ok(m) => m,
                    Err(e) => return e,
                };
                let updated = Group {
                    name: body["name"].as_str().unwrap_or_default().to_owned(),
                    group_type: group.group_type,
                    members,
                };
                let out = Self::group_json(id, &updated);
                state.groups.insert((*id).to_owned(), updated);
                Self::ok(&json!([out]))
            }
            _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
        }
    }

    fn integration_error(status: StatusCode, name: &str, message: &str) -> Response {
        json(
            status,
            &json!({"statusCode": status.as_u16(), "statusName": name, "message": message,
                    "timestamp": "2025-01-01T00:00:00Z", "requestPath": "/integration/v1/…"}),
        )
    }

    fn integration(&self, req: &Request, rest: &[&str]) -> Response {
        if req.headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
            return Self::integration_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Unauthorized",
            );
        }
        let page = |items: Vec<Value>| {
            let offset: usize = req
                .query_param("offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit: usize = req
                .query_param("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(25)
                .min(200);
            let total = items.len();
            let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
            json(
                StatusCode::OK,
                &json!({"offset": offset, "limit": limit, "count": data.len(), "totalCount": total, "data": data}),
            )
        };
        let list_json = |id: &str, l: &List| json!({"id": id, "type": l.list_type, "name": l.name, "items": l.items});
        match (req.method.clone(), rest) {
            (Method::GET, ["sites"]) => {
                self.counters.other.fetch_add(1, Ordering::SeqCst);
                page(vec![
                    json!({"id": SITE_UUID, "internalReference": "default", "name": "Default"}),
                ])
            }
            (_, ["sites", site, ..]) if *site != SITE_UUID => {
                Self::integration_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Site not found")
            }
            (Method::GET, ["sites", _, "traffic-matching-lists"]) => {
                self.counters.other.fetch_add(1, Ordering::SeqCst);
                let state = self.state.lock().unwrap();
                // The list view leaves the items out; they come with GET by id.
                let all = state
                    .lists
                    .iter()
                    .map(|(id, l)| json!({"id": id, "type": l.list_type, "name": l.name}))
                    .collect();
                page(all)
            }
            (Method::GET, ["sites", _, "traffic-matching-lists", id]) => {
                self.counters.other.fetch_add(1, Ordering::SeqCst);
                let state = self.state.lock().unwrap();
                match state.lists.get(*id) {
                    Some(l) => json(StatusCode::OK, &list_json(id, l)),
                    None => {
                        Self::integration_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found")
                    }
                }
            }
            (Method::POST | Method::PUT, ["sites", _, "traffic-matching-lists", tail @ ..]) => {
                self.counters.write(req.body.len());
                let body = req.json();
                let items = body["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return Self::integration_error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "'items' must contain at least one item",
                    );
                }
                if items.len() > self.limit {
                    return Self::integration_error(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        "too many items",
                    );
                }
                let list = List {
                    name: body["name"].as_str().unwrap_or("").to_owned(),
                    list_type: body["type"].as_str().unwrap_or("").to_owned(),
                    items,
                };
                let mut state = self.state.lock().unwrap();
                let id = match tail {
                    [] => uuid::Uuid::new_v4().to_string(),
                    [id] if state.lists.contains_key(*id) => (*id).to_owned(),
                    _ => {
                        return Self::integration_error(
                            StatusCode::NOT_FOUND,
                            "NOT_FOUND",
                            "Not found",
                        )
                    }
                };
                let out = list_json(&id, &list);
                state.lists.insert(id, list);
                json(
                    if tail.is_empty() {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    &out,
                )
            }
            _ => Self::integration_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found"),
        }
    }
}

#[async_trait]
impl Device for FakeUnifi {
    async fn entries(&self, _backend: &mut dyn Backend) -> BTreeSet<Target> {
        let state = self.state.lock().unwrap();
        let members = state
            .groups
            .values()
            .filter(|g| g.name.starts_with("portcullis-"))
            .flat_map(|g| g.members.clone())
            .chain(
                state
                    .lists
                    .values()
                    .filter(|l| l.name.starts_with("portcullis-"))
                    .flat_map(|l| {
                        l.items
                            .iter()
                            .filter_map(|i| i["value"].as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    }),
            );
        members
            .filter(|m| m != "255.255.255.255" && m != "100::")
            .map(|m| Target::parse(&m).unwrap())
            .collect()
    }

    async fn lose(&self, targets: &[Target]) -> bool {
        let texts: HashSet<String> = targets.iter().map(ToString::to_string).collect();
        let mut state = self.state.lock().unwrap();
        for group in state.groups.values_mut() {
            group.members.retain(|m| !texts.contains(m));
        }
        for list in state.lists.values_mut() {
            list.items
                .retain(|i| !i["value"].as_str().is_some_and(|v| texts.contains(v)));
        }
        true
    }

    async fn fail_writes(&self, n: usize) -> bool {
        self.faults.fail_next_writes(n)
    }
}

/// The config of a backend for `fake` at `running`: login by default, the API key when `api_key`.
pub fn config_text(running: &Running, api_key: bool, extra: &str) -> String {
    let auth = if api_key {
        format!("api_key = \"{API_KEY}\"")
    } else {
        format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"")
    };
    format!(
        "url = \"{}\"\n{auth}\nfingerprint = \"{}\"\nmin_write_interval = \"0s\"\n{extra}\n",
        running.url,
        running.cert.fingerprint()
    )
}

pub async fn backend(text: &str) -> Result<Box<dyn Backend>, BackendError> {
    let config = unifi::validate(Some(toml::from_str(text).unwrap())).unwrap();
    unifi::build(config).await
}

/// A login backend for the console at `running` with the default config, initialised.
pub async fn logged_in(running: &Running) -> Box<dyn Backend> {
    let mut b = backend(&config_text(running, false, "")).await.unwrap();
    b.init().await.unwrap();
    b
}

fn later() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::hours(4)
}

fn add(b: &mut dyn Backend, text: &str) {
    b.stage_add(server::entry(text, later()));
}

async fn contract_for(style: Style, api_key: bool) -> (Arc<FakeUnifi>, contract::Report) {
    let fake = FakeUnifi::new(style);
    let running = fake.start().await;
    let text = config_text(&running, api_key, "create_groups = true");
    let make = contract::factory(text, |text| async move { backend(&text).await.unwrap() });
    let report = contract::run(&make, fake.as_ref(), Options::default()).await;
    drop(running);
    (fake, report)
}

#[tokio::test]
async fn unifi_os_passes_the_contract_with_one_put_per_touched_group() {
    let (fake, report) = contract_for(Style::UnifiOs, false).await;
    assert!(report.lose_checked && report.failure_checked);
    // 10k new IPv4 hosts: shard -v4-0 already holds the CIDR, so the batch fills it (one PUT) and
    // spills into a new shard -v4-1 (one POST).
    assert_eq!(report.bulk.writes, 2, "{:?}", report.bulk);
    assert_eq!(report.replay.writes, 0, "a replay must not write");
    assert_eq!(report.extend.writes, 0, "UniFi has no expiry to refresh");
    assert!(fake.names().contains("portcullis-v4-1"));
}

#[tokio::test]
async fn classic_controller_passes_the_contract() {
    let (_fake, report) = contract_for(Style::Classic, false).await;
    assert_eq!(report.replay.writes, 0);
}

#[tokio::test]
async fn integration_api_passes_the_contract() {
    let (fake, report) = contract_for(Style::UnifiOs, true).await;
    assert_eq!(report.replay.writes, 0);
    // Emptied lists keep the placeholder item the console demands.
    assert_eq!(fake.members_of("portcullis-v6-0"), vec!["100::".to_owned()]);
}

#[tokio::test]
async fn a_burst_staged_within_the_batch_window_is_one_put() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = logged_in(&running).await;
    for i in 0..100 {
        add(b.as_mut(), &format!("203.0.113.{i}"));
    }
    let before = fake.counters.writes();
    let stats = b.commit().await.unwrap();
    assert_eq!(stats.writes, 1);
    assert_eq!(fake.counters.writes() - before, 1, "100 alerts, one PUT");
    assert_eq!(fake.members_of("portcullis-v4-0").len(), 100);
}

#[tokio::test]
async fn expired_sessions_log_in_again_once() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = logged_in(&running).await;
    assert_eq!(fake.logins(), 1);
    fake.expire_sessions();
    add(b.as_mut(), "203.0.113.5");
    b.commit().await.unwrap();
    assert_eq!(fake.logins(), 2, "one new login after the 401");
    assert_eq!(
        fake.members_of("portcullis-v4-0"),
        vec!["203.0.113.5".to_owned()]
    );
    // A rotated CSRF token: the write is refused with 403, the backend logs in again and retries.
    fake.rotate_csrf();
    add(b.as_mut(), "203.0.113.6");
    b.commit().await.unwrap();
    assert_eq!(fake.logins(), 3);
    assert_eq!(fake.members_of("portcullis-v4-0").len(), 2);
}

#[tokio::test]
async fn writes_without_the_csrf_token_are_refused_by_the_fake() {
    // The fake enforces UniFi OS's CSRF rule; prove it with a hand-made request that omits the header.
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_group("portcullis-v4-0", false);
    let running = fake.start().await;
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let login = http
        .post(format!("{}/api/auth/login", running.url))
        .json(&json!({"username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let put = http
        .post(format!(
            "{}/proxy/network/api/s/default/rest/firewallgroup",
            running.url
        ))
        .header("cookie", cookie)
        .json(&json!({"name": "x", "group_type": "address-group", "group_members": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_error() {
    let fake = FakeUnifi::new(Style::Classic);
    let running = fake.start().await;
    let text = config_text(&running, false, "").replace(PASSWORD, "wrong");
    let mut b = backend(&text).await.unwrap();
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("refused the credentials")),
        "{err}"
    );
    assert!(
        !format!("{b:?}").contains(PASSWORD),
        "password in Debug output"
    );
}

#[tokio::test]
async fn missing_groups_explain_the_manual_step_or_are_created() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, false, "")).await.unwrap();
    let err = b.init().await.unwrap_err();
    let BackendError::Config(message) = &err else {
        panic!("{err}")
    };
    assert!(
        message.contains("portcullis-v4-0") && message.contains("WAN_IN"),
        "{message}"
    );
    assert!(b.healthcheck().await.is_err());

    let mut b = backend(&config_text(&running, false, "create_groups = true"))
        .await
        .unwrap();
    b.init().await.unwrap();
    assert!(fake.names().contains("portcullis-v4-0") && fake.names().contains("portcullis-v6-0"));
    b.healthcheck().await.unwrap();
    b.init().await.unwrap();
    assert_eq!(fake.names().len(), 2, "init is idempotent");
}

#[tokio::test]
async fn full_groups_are_sharded_or_refused() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = backend(&config_text(&running, false, "max_group_size = 100"))
        .await
        .unwrap();
    b.init().await.unwrap();
    for i in 0..150 {
        add(b.as_mut(), &format!("198.18.0.{i}"));
    }
    let err = b.commit().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("portcullis-v4-1")),
        "{err}"
    );
    assert!(
        err.is_retryable(),
        "messages stay queued until the operator acts"
    );
    assert!(
        fake.members_of("portcullis-v4-0").is_empty(),
        "nothing half-written"
    );

    let mut b = backend(&config_text(
        &running,
        false,
        "max_group_size = 100\ncreate_groups = true",
    ))
    .await
    .unwrap();
    b.init().await.unwrap();
    for i in 0..250 {
        add(b.as_mut(), &format!("198.18.{}.{}", i / 200, i % 200));
    }
    let stats = b.commit().await.unwrap();
    assert_eq!(stats.writes, 3, "one PUT and two new shards");
    for shard in ["portcullis-v4-0", "portcullis-v4-1", "portcullis-v4-2"] {
        assert!(fake.members_of(shard).len() <= 100, "{shard}");
    }
    assert_eq!(b.list().await.unwrap().len(), 250);
}

#[tokio::test]
async fn the_device_limit_is_a_clear_retryable_error() {
    // max_group_size above what this console takes: the console's refusal must be clear and keep blocks.
    let fake = Arc::new(FakeUnifi {
        limit: 50,
        ..Arc::try_unwrap(FakeUnifi::new(Style::Classic)).unwrap()
    });
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = logged_in(&running).await;
    for i in 0..60 {
        add(b.as_mut(), &format!("198.18.1.{i}"));
    }
    let err = b.commit().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Rejected(m) if m.contains("TooMany")),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn bad_answers_are_clear_errors_and_lose_no_block() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = logged_in(&running).await;

    let cases: [(&std::sync::atomic::AtomicBool, &str); 3] = [
        (&fake.faults.html, "HTML page"),
        (&fake.faults.not_found, "404"),
        (&fake.faults.truncated, "cut off"),
    ];
    for (i, (fault, expected)) in cases.into_iter().enumerate() {
        fault.store(true, Ordering::SeqCst);
        // A fresh backend must read the groups first; the answer is bad.
        let mut fresh = backend(&config_text(&running, false, "")).await.unwrap();
        let err = fresh.init().await.unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        assert!(err.is_retryable(), "{err}");
        let err = fresh.list().await.unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        // The running backend's write fails too (the truncated fault only cuts reads: a write goes
        // through, which is fine); the block is retried after the fault clears.
        let target = format!("203.0.113.{i}");
        add(b.as_mut(), &target);
        let result = b.commit().await;
        fault.store(false, Ordering::SeqCst);
        if let Err(err) = result {
            assert!(err.is_retryable(), "{err}");
            add(b.as_mut(), &target);
            b.commit().await.unwrap();
        }
        assert!(
            fake.members_of("portcullis-v4-0").contains(&target),
            "{target} lost"
        );
    }
}

#[tokio::test]
async fn tls_trust_modes() {
    let fake = FakeUnifi::new(Style::Classic);
    fake.add_first_groups();
    let running = fake.start().await;
    let creds = format!(
        "url = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
        running.url
    );

    // The CA file (the self-signed certificate itself).
    let dir = tempfile::tempdir().unwrap();
    let pem = running.cert.write_pem(dir.path());
    let mut b = backend(&format!("{creds}ca_file = \"{}\"\n", pem.display()))
        .await
        .unwrap();
    b.init().await.unwrap();

    // A wrong pin is a configuration error that names the fingerprint.
    let wrong = format!("sha256:{}", vec!["00"; 32].join(":"));
    let mut b = backend(&format!("{creds}fingerprint = \"{wrong}\"\n"))
        .await
        .unwrap();
    let err = b.init().await.unwrap_err();
    assert!(
        matches!(&err, BackendError::Config(m) if m.contains("fingerprint")),
        "{err}"
    );

    // No trust configured: the system store does not know a self-signed certificate.
    let mut b = backend(&creds).await.unwrap();
    let err = b.init().await.unwrap_err();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err}");

    // insecure_skip_verify works (and warns).
    let mut b = backend(&format!("{creds}insecure_skip_verify = true\n"))
        .await
        .unwrap();
    b.init().await.unwrap();
}

#[tokio::test]
async fn min_write_interval_spaces_writes() {
    // Time is paused: the backend must wait for the interval between two PUTs, not write at once.
    let fake = FakeUnifi::new(Style::Classic);
    fake.add_first_groups();
    let running = fake.start().await;
    let text = config_text(&running, false, "")
        .replace("min_write_interval = \"0s\"", "min_write_interval = \"1h\"");
    let mut b = backend(&text).await.unwrap();
    b.init().await.unwrap();
    add(b.as_mut(), "203.0.113.1");
    b.commit().await.unwrap();
    assert_eq!(fake.counters.writes(), 1);
    add(b.as_mut(), "203.0.113.2");
    let second = tokio::time::timeout(std::time::Duration::from_millis(300), b.commit()).await;
    assert!(
        second.is_err(),
        "the second write must wait for min_write_interval"
    );
    assert_eq!(
        fake.counters.writes(),
        1,
        "no second write inside the interval"
    );
}

#[tokio::test]
async fn batch_window_is_reported_to_the_agent() {
    let fake = FakeUnifi::new(Style::Classic);
    let running = fake.start().await;
    let b = backend(&config_text(&running, false, "batch_window = \"7s\""))
        .await
        .unwrap();
    assert_eq!(b.batch_window(), std::time::Duration::from_secs(7));
}

/// The debounce through the whole agent: 100 separate queue messages arriving within the batch window
/// reach the console as exactly one PUT.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_turns_100_queue_messages_into_one_put() {
    queue_message::require!(queue_message::testing::azurite_available());
    use crate::util::{eventually, AgentProcess, Env};
    use queue_message::Action;

    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let env = Env::new().await;
    let firewall = format!(
        "[firewall]\nbackend = \"unifi\"\n[firewall.unifi]\n{}",
        config_text(&running, false, "batch_window = \"5s\"")
    );
    let config = env.config(&firewall, "", "");
    // All queued before the agent starts, so they arrive within one window whatever the timing.
    for i in 0..100 {
        env.send(&env.message(
            Action::Block,
            &[&format!("203.0.113.{i}")],
            Duration::hours(1),
            &i.to_string(),
        ))
        .await;
    }
    let before = fake.counters.writes();
    let agent = AgentProcess::start(&config, &[]);
    assert!(
        eventually(std::time::Duration::from_secs(60), || fake
            .members_of("portcullis-v4-0")
            .len()
            == 100),
        "{}",
        agent.log()
    );
    assert!(
        crate::util::eventually_async(std::time::Duration::from_secs(30), || async {
            env.queued().await == 0
        })
        .await
    );
    assert_eq!(
        fake.counters.writes() - before,
        1,
        "100 messages, one PUT\n{}",
        agent.log()
    );
}

/// A shard the agent creates is dropped by nothing until the operator adds it to the rule: the backend
/// reports it as a notice naming the group (status and /healthz show it); an existing shard is not one.
#[tokio::test]
async fn auto_created_shards_are_reported_until_the_operator_acts() {
    let fake = FakeUnifi::new(Style::UnifiOs);
    fake.add_first_groups();
    let running = fake.start().await;
    let mut b = backend(&config_text(
        &running,
        false,
        "max_group_size = 100\ncreate_groups = true",
    ))
    .await
    .unwrap();
    b.init().await.unwrap();
    assert!(b.notices().is_empty(), "the operator made -0 and its rule");
    for i in 0..150 {
        add(b.as_mut(), &format!("198.18.0.{i}"));
    }
    b.commit().await.unwrap();
    let notices = b.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("portcullis-v4-1"), "{}", notices[0]);
    assert!(notices[0].contains("NOT blocked"), "{}", notices[0]);
    // Commits keep working: a notice is not a failure.
    b.healthcheck().await.unwrap();
}
