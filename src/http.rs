//! Routes and the two host modes.
//!
//! - Forwarding/proxying (`enableProxyingHttpRequest`): the host passes the caller's request through to
//!   `POST /api/alerts` and `POST /api/blocks`; the handler's response goes back as is.
//! - Data/Metadata (the default protocol): the host posts `{"Data": {"req": {…, "Body": "…"}}, "Metadata":
//!   {…}}` to `POST /alerts` and `POST /blocks` (function names) and expects 200 with `{"Outputs": {"res":
//!   {"statusCode", "body", "headers"}}, "Logs": […], "ReturnValue": null}`.
//!
//! Both modes run [`crate::service::process`] on the same bytes, so the caller sees the same status and
//! body either way. `GET /` answers the host's readiness poll.
//!
//! The Functions host matches routes case-insensitively and forwards `/api/Alerts` or `/api/alerts/` as
//! typed, and in Data/Metadata mode the path is the function (folder) name, so `normalise_path` folds
//! the path to lower case and drops one trailing slash before routing.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, Reply};
use crate::service::{body_bytes, process, AppState, Function};

/// The header the host puts on every call.
pub const INVOCATION_ID: &str = "x-azure-functions-invocationid";

/// The router: readiness, both functions in both modes, RFC 7807 404 and 405; paths are matched
/// case-insensitively and with or without one trailing slash.
pub fn app(state: Arc<AppState>) -> Router {
    let routes = routes(state);
    // Routing happens before a `Router::layer` middleware runs, so the path is rewritten by an outer
    // router whose only entry is the real one.
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(normalise_path)
            .service(routes),
    )
}

/// Lower-cases the request path and removes one trailing slash (`/api/Alerts/` → `/api/alerts`); the
/// query is kept as is. Every route is a fixed lower-case path, so nothing else can be lost.
fn normalise_path(mut request: Request<Body>) -> Request<Body> {
    let uri = request.uri();
    let path = uri.path();
    let trimmed = match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    };
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) || trimmed.len() != path.len() {
        let mut path_and_query = trimmed.to_ascii_lowercase();
        if let Some(query) = uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let mut parts = uri.clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(normalised) = Uri::from_parts(parts) {
                *request.uri_mut() = normalised;
            }
        }
    }
    request
}

/// What each path allows, for the `Allow` header of a 405.
fn allowed_methods(path: &str) -> &'static str {
    if path == "/" {
        "GET, HEAD"
    } else {
        "POST"
    }
}

fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(ready))
        .route(
            "/api/alerts",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| {
                forward(s, h, b, Function::Alerts)
            }),
        )
        .route(
            "/api/blocks",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| {
                forward(s, h, b, Function::Blocks)
            }),
        )
        .route(
            "/alerts",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| {
                invoke(s, h, b, Function::Alerts)
            }),
        )
        .route(
            "/blocks",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| {
                invoke(s, h, b, Function::Blocks)
            }),
        )
        .route(
            "/reports",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| reports(s, h, b, false)),
        )
        .route(
            "/watch",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| reports(s, h, b, true)),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|uri: Uri| async move {
            (
                [(header::ALLOW, allowed_methods(uri.path()))],
                ApiError::MethodNotAllowed,
            )
        })
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    // The path only: the query may hold the function key (`?code=`).
                    let invocation_id = request
                        .headers()
                        .get(INVOCATION_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let matched = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("", MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        matched_path = matched,
                        invocation_id,
                    )
                })
                .on_failure(()),
        )
        .with_state(state)
}

/// `GET /`: the host's readiness poll (any answer means ready; we say so explicitly).
async fn ready() -> Json<Value> {
    Json(json!({"status": "ready"}))
}

/// Reads a body up to `limit` bytes; longer bodies are a 413, read failures a 400.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_long =
            std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if too_long {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadEnvelope(format!("the request body could not be read: {err}"))
        }
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid"))
}

/// Forwarding/proxying mode: the caller's request as is.
async fn forward(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    function: Function,
) -> Response {
    // Refuse a non-JSON content type before reading the body.
    if let Some(ct) = content_type(&headers) {
        if !crate::service::is_json_content_type(ct) {
            return process(&state, function, Some(ct), b"")
                .await
                .reply
                .into_response();
        }
    }
    let bytes = match read_limited(&headers, body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(err) => return err.into_response(),
    };
    process(&state, function, content_type(&headers), &bytes)
        .await
        .reply
        .into_response()
}

/// Data/Metadata mode: unwraps the host's invocation, answers 200 with the caller's reply in `Outputs.res`.
async fn invoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    function: Function,
) -> Response {
    // The caller's body arrives JSON-escaped inside the envelope: allow for the worst-case escaping.
    let limit = state
        .max_body_bytes
        .saturating_mul(6)
        .saturating_add(1 << 20);
    let (reply, summary) = match read_limited(&headers, body, limit).await {
        Err(err) => {
            let summary = err.to_string();
            (err.reply(), summary)
        }
        Ok(bytes) => match unwrap_invocation(&bytes) {
            Err(err) => {
                let summary = err.to_string();
                (err.reply(), summary)
            }
            Ok((content_type, body)) => {
                let processed = process(&state, function, content_type.as_deref(), &body).await;
                (processed.reply, processed.summary)
            }
        },
    };
    host_response(&reply, &summary)
}

/// Largest `reports` / `watch` invocation: a queue message is at most 64 KiB, twice JSON-escaped.
const MAX_REPORT_INVOCATION_BYTES: usize = 1 << 20;

/// `POST /reports` (queue trigger) and `POST /watch` (timer): the host's status decides whether the
/// message is retried, so the answer is 200, 400 or 503 with `{"Outputs": {}, "Logs", "ReturnValue"}`.
async fn reports(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    watch: bool,
) -> Response {
    let answer = match read_limited(&headers, body, MAX_REPORT_INVOCATION_BYTES).await {
        Err(err) => crate::reports::Answer {
            status: StatusCode::BAD_REQUEST,
            logs: vec![err.to_string()],
        },
        Ok(bytes) => match &state.reports {
            None => crate::reports::Answer {
                status: StatusCode::OK,
                logs: vec![
                    "the return path is not configured; acknowledged and dropped".to_owned(),
                ],
            },
            Some(reports) if watch => reports.watch().await,
            Some(reports) => reports.invoke(&bytes).await,
        },
    };
    (answer.status, Json(answer.body())).into_response()
}

/// The host-facing answer: always 200, the caller's reply in `Outputs.res`.
fn host_response(reply: &Reply, summary: &str) -> Response {
    let envelope = json!({
        "Outputs": { "res": reply.to_output() },
        "Logs": [summary],
        "ReturnValue": null,
    });
    (StatusCode::OK, Json(envelope)).into_response()
}

/// The caller's content type and body from an invocation envelope.
fn unwrap_invocation(bytes: &[u8]) -> Result<(Option<String>, Vec<u8>), ApiError> {
    let bad = |why: &str| ApiError::BadEnvelope(why.to_owned());
    let envelope: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadEnvelope(format!("the invocation is not JSON: {e}")))?;
    let data = field(&envelope, "Data")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("expected {\"Data\": {\"req\": {…}}, \"Metadata\": {…}}"))?;
    let request = data
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("req"))
        .map(|(_, v)| v)
        .or_else(|| {
            // Another binding name: the first input that looks like an HTTP request.
            data.values().find(|v| field(v, "Method").is_some())
        })
        .and_then(Value::as_object)
        .ok_or_else(|| bad("the invocation has no HTTP request in `Data`"))?;
    let content_type = get_ci(request, "Headers")
        .and_then(Value::as_object)
        .and_then(|h| get_ci(h, "Content-Type"))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
    Ok((content_type, body_bytes(get_ci(request, "Body"))))
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|m| get_ci(m, key))
}

fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests;
