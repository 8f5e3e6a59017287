//! The Network application's internal REST API with a cookie session (classic controller and UniFi OS):
//! login style detection, the CSRF token, 401 → log in again once, firewall groups replaced whole by PUT.

use std::collections::BTreeSet;
use std::fmt;

use async_trait::async_trait;
use base64::Engine;
use queue_message::Target;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{remote_group, Family, GroupApi, RemoteGroup, GROUP_SHAPE};
use crate::backends::http::{self, Endpoint, Reply, Secret};
use crate::backends::BackendError;

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
}
