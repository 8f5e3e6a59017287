//! Local stand-ins for the Azure services the return path calls, built from their public API
//! specifications and enforcing the behaviour that bites (see `../shared/reference/return-path.md`):
//!
//! - [`Identity`]: the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`,
//!   api-version 2019-08-01), handing out unsigned JWTs whose `aud` is the requested resource.
//! - [`Arm`]: `PUT {incident id}/comments/{comment id}?api-version=2025-12-01` (path shape, version, bearer
//!   audience `https://management.azure.com`, body `{"properties":{"message"}}` ≤ 30,000 characters,
//!   100 comments per incident; 201 then 200 for the same id; scripted 429/500/404/403).
//! - [`Ingestion`]: `POST /dataCollectionRules/{id}/streams/{stream}?api-version=2023-01-01` (version,
//!   audience `https://monitor.azure.com`, JSON array, gzip, 1 MB compressed and uncompressed → 413, an
//!   unknown rule or stream → 404, a row against the declared columns of `infra/tables/*.columns.json` →
//!   400; scripted 429 + `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::b64url;

/// The `IDENTITY_HEADER` secret the fakes expect.
pub(crate) const IDENTITY_SECRET: &str = "return-path-identity-header";

/// The data collection rule immutable id the fake knows.
pub(crate) const RULE_ID: &str = "dcr-00000000000000000000000000000001";

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

fn jwt(audience: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64url(
        json!({"aud": audience, "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
               "oid": "11111111-1111-1111-1111-111111111111"})
        .to_string()
        .as_bytes(),
    );
    format!("{header}.{claims}.")
}

/// The `aud` claim of the request's bearer token, if any.
fn audience(headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value["aud"].as_str().map(str::to_owned)
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-ms-error-code", code.to_owned())],
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The managed-identity endpoint.
#[derive(Default)]
pub(crate) struct Identity {
    /// Resources tokens were asked for, in order.
    pub(crate) resources: Mutex<Vec<String>>,
}

impl Identity {
    /// Starts the endpoint; returns it and its `IDENTITY_ENDPOINT` URL.
    pub(crate) async fn start() -> (Arc<Self>, String) {
        let identity = Arc::new(Self::default());
        let router = Router::new()
            .route("/msi/token", get(identity_token))
            .with_state(Arc::clone(&identity));
        let url = serve(router).await;
        (identity, format!("{url}/msi/token"))
    }
}

async fn identity_token(
    State(identity): State<Arc<Identity>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    if headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        != Some(IDENTITY_SECRET)
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return Err(StatusCode::BAD_REQUEST);
    }
    let resource = query
        .get("resource")
        .cloned()
        .ok_or(StatusCode::BAD_REQUEST)?;
    identity.resources.lock().unwrap().push(resource.clone());
    Ok(Json(json!({
        "access_token": jwt(&resource),
        "expires_on": (chrono::Utc::now().timestamp() + 3600).to_string(),
        "resource": resource,
        "token_type": "Bearer"
    })))
}

/// One PUT the fake ARM endpoint received.
#[derive(Debug, Clone)]
pub(crate) struct Put {
    /// The incident id (the path before `/comments/`).
    pub(crate) incident: String,
    /// The comment id.
    pub(crate) comment: String,
    /// The status answered.
    pub(crate) status: u16,
    /// When the request arrived (for the P11 breakdown; never asserted on).
    pub(crate) at: std::time::Instant,
}

/// The ARM incident-comments endpoint.
#[derive(Default)]
pub(crate) struct Arm {
    /// incident (lower case) → comment id → message.
    pub(crate) comments: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Every PUT, in order.
    pub(crate) puts: Mutex<Vec<Put>>,
    /// Statuses to answer next, before looking at anything else (500, 429, 403, ...).
    pub(crate) script: Mutex<VecDeque<u16>>,
    /// Incidents that do not exist (deleted): 404.
    pub(crate) deleted: Mutex<Vec<String>>,
}

impl Arm {
    pub(crate) async fn start() -> (Arc<Self>, String) {
        let arm = Arc::new(Self::default());
        let router = Router::new()
            .route("/{*path}", put(arm_put))
            .with_state(Arc::clone(&arm));
        let url = serve(router).await;
        (arm, url)
    }

    /// The comments on `incident`.
    pub(crate) fn comments_on(&self, incident: &str) -> HashMap<String, String> {
        self.comments
            .lock()
            .unwrap()
            .get(&incident.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn puts(&self) -> Vec<Put> {
        self.puts.lock().unwrap().clone()
    }
}

async fn arm_put(
    State(arm): State<Arc<Arm>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let Some((incident, comment)) = path.rsplit_once("/comments/") else {
        return azure_error(StatusCode::NOT_FOUND, "NotFound", "no such route");
    };
    let segments: Vec<&str> = incident.split('/').collect();
    let shape_ok = segments.len() == 13
        && segments[1].eq_ignore_ascii_case("subscriptions")
        && segments[10].eq_ignore_ascii_case("Microsoft.SecurityInsights")
        && segments[11].eq_ignore_ascii_case("incidents")
        && uuid::Uuid::parse_str(comment).is_ok();
    let answer = |status: u16| {
        arm.puts.lock().unwrap().push(Put {
            incident: incident.to_owned(),
            comment: comment.to_owned(),
            status,
            at: std::time::Instant::now(),
        });
    };
    if !shape_ok {
        answer(400);
        return azure_error(StatusCode::BAD_REQUEST, "InvalidResourceName", "bad path");
    }
    if query.get("api-version").map(String::as_str) != Some("2025-12-01") {
        answer(400);
        return azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "api-version",
        );
    }
    if audience(&headers).as_deref() != Some("https://management.azure.com") {
        answer(401);
        return azure_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "audience",
        );
    }
    if let Some(status) = arm.script.lock().unwrap().pop_front() {
        answer(status);
        let status = StatusCode::from_u16(status).unwrap();
        return if status == StatusCode::TOO_MANY_REQUESTS {
            (
                status,
                [("retry-after", "1")],
                Json(json!({"error": {"code": "TooManyRequests", "message": "throttled"}})),
            )
                .into_response()
        } else {
            azure_error(status, "Scripted", "scripted failure")
        };
    }
    let key = incident.to_ascii_lowercase();
    if arm
        .deleted
        .lock()
        .unwrap()
        .iter()
        .any(|d| d.eq_ignore_ascii_case(incident))
    {
        answer(404);
        return azure_error(StatusCode::NOT_FOUND, "NotFound", "Incident not found");
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["properties"]["message"].as_str().map(str::to_owned));
    let Some(message) = message.filter(|m| !m.is_empty()) else {
        answer(400);
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "properties.message is required",
        );
    };
    if message.chars().count() > 30_000 {
        answer(400);
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Comment length should not exceed 30000 characters",
        );
    }
    let mut comments = arm.comments.lock().unwrap();
    let on_incident = comments.entry(key).or_default();
    let existed = on_incident.contains_key(comment);
    if !existed && on_incident.len() >= 100 {
        drop(comments);
        answer(400);
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "An incident can have at most 100 comments",
        );
    }
    on_incident.insert(comment.to_owned(), message.clone());
    drop(comments);
    let status = if existed { 200 } else { 201 };
    answer(status);
    (
        StatusCode::from_u16(status).unwrap(),
        Json(
            json!({"id": format!("{incident}/comments/{comment}"), "name": comment,
                    "properties": {"message": message, "createdTimeUtc": chrono::Utc::now()}}),
        ),
    )
        .into_response()
}

/// One call the fake Logs Ingestion endpoint received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) stream: String,
    pub(crate) status: u16,
    pub(crate) rows: usize,
    pub(crate) compressed_bytes: usize,
}

/// The Logs Ingestion endpoint of one data collection rule.
pub(crate) struct Ingestion {
    /// stream → declared `(column, type)`.
    pub(crate) streams: HashMap<String, Vec<(String, String)>>,
    /// stream → accepted rows.
    pub(crate) rows: Mutex<HashMap<String, Vec<Value>>>,
    /// Every call, in order.
    pub(crate) calls: Mutex<Vec<Call>>,
    /// Statuses to answer next (429 comes with `Retry-After: 1`).
    pub(crate) script: Mutex<VecDeque<u16>>,
}

fn declared(file: &str) -> Vec<(String, String)> {
    let path = format!("{}/infra/tables/{file}", env!("CARGO_MANIFEST_DIR"));
    let columns: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    columns
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

impl Ingestion {
    /// The rule as `infra/` declares it: both streams with the columns of their tables.
    pub(crate) async fn start() -> (Arc<Self>, String) {
        let ingestion = Arc::new(Self {
            streams: HashMap::from([
                (
                    "Custom-PortcullisEvents".to_owned(),
                    declared("PortcullisEvents_CL.columns.json"),
                ),
                (
                    "Custom-PortcullisFirewall".to_owned(),
                    declared("PortcullisFirewall_CL.columns.json"),
                ),
            ]),
            rows: Mutex::default(),
            calls: Mutex::default(),
            script: Mutex::default(),
        });
        let router = Router::new()
            .route("/dataCollectionRules/{rule}/streams/{stream}", post(ingest))
            .with_state(Arc::clone(&ingestion));
        let url = serve(router).await;
        (ingestion, url)
    }

    pub(crate) fn rows(&self, stream: &str) -> Vec<Value> {
        self.rows
            .lock()
            .unwrap()
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// Whether `value` fits a column of `kind` (the DCR column types).
fn fits(kind: &str, value: &Value) -> bool {
    match (kind.to_ascii_lowercase().as_str(), value) {
        (_, Value::Null) => true,
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) | ("dynamic", _) => true,
        ("int", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        ("long", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("real", Value::Number(_)) => true,
        ("datetime", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        _ => false,
    }
}

const LIMIT: usize = 1024 * 1024;

async fn ingest(
    State(ingestion): State<Arc<Ingestion>>,
    Path((rule, stream)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let record = |status: u16, rows: usize| {
        ingestion.calls.lock().unwrap().push(Call {
            stream: stream.clone(),
            status,
            rows,
            compressed_bytes: body.len(),
        });
    };
    if query.get("api-version").map(String::as_str) != Some("2023-01-01") {
        record(400, 0);
        return azure_error(StatusCode::BAD_REQUEST, "InvalidApiVersion", "api-version");
    }
    if audience(&headers).as_deref() != Some("https://monitor.azure.com") {
        record(401, 0);
        return azure_error(StatusCode::UNAUTHORIZED, "InvalidToken", "audience");
    }
    if let Some(status) = ingestion.script.lock().unwrap().pop_front() {
        record(status, 0);
        let status = StatusCode::from_u16(status).unwrap();
        return if status == StatusCode::TOO_MANY_REQUESTS {
            (status, [("retry-after", "1")], "").into_response()
        } else {
            azure_error(status, "Scripted", "scripted failure")
        };
    }
    if rule != RULE_ID {
        record(404, 0);
        return azure_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such data collection rule",
        );
    }
    let Some(columns) = ingestion.streams.get(&stream) else {
        record(404, 0);
        return azure_error(StatusCode::NOT_FOUND, "NotFound", "no such stream");
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        record(415, 0);
        return azure_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "JSON only",
        );
    }
    if body.len() > LIMIT {
        record(413, 0);
        return azure_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            "Maximum allowed content length: 1048576 bytes (1 MB).",
        );
    }
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let json = if gzip {
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(LIMIT as u64 + 1)
            .read_to_end(&mut out);
        if read.is_err() {
            record(400, 0);
            return azure_error(
                StatusCode::BAD_REQUEST,
                "InvalidContentEncoding",
                "not gzip",
            );
        }
        out
    } else {
        body.to_vec()
    };
    if json.len() > LIMIT {
        record(413, 0);
        return azure_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            "Maximum allowed content length: 1048576 bytes (1 MB).",
        );
    }
    let Ok(Value::Array(rows)) = serde_json::from_slice::<Value>(&json) else {
        record(400, 0);
        return azure_error(
            StatusCode::BAD_REQUEST,
            "InvalidPayload",
            "the body must be a JSON array",
        );
    };
    for row in &rows {
        let Some(object) = row.as_object() else {
            record(400, rows.len());
            return azure_error(
                StatusCode::BAD_REQUEST,
                "InvalidPayload",
                "rows must be objects",
            );
        };
        for (name, value) in object {
            match columns.iter().find(|(c, _)| c == name) {
                Some((_, kind)) if fits(kind, value) => {}
                Some((_, kind)) => {
                    record(400, rows.len());
                    return azure_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidPayload",
                        &format!("column {name} is not {kind}"),
                    );
                }
                None => {
                    record(400, rows.len());
                    return azure_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidPayload",
                        &format!("column {name} is not declared"),
                    );
                }
            }
        }
    }
    record(204, rows.len());
    ingestion
        .rows
        .lock()
        .unwrap()
        .entry(stream.clone())
        .or_default()
        .extend(rows);
    StatusCode::NO_CONTENT.into_response()
}
