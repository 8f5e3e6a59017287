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
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, Reply};
use crate::service::{process, AppState, Function};

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

/// How much of a refused body is still read (and thrown away) before the 413 is sent.
///
/// A client that writes its whole body before reading the answer (Python `urllib`, many proxies) gets a
/// connection reset instead of the 413 when the server closes a socket with unread data in it (the
/// kernel answers the unread bytes with RST, which discards the queued answer). So a refused body is
/// drained first, up to this many bytes and [`DRAIN_TIME`], without keeping any of it (issue 9 item 12).
/// Bigger or slower bodies are answered once a bound is reached and the connection is closed; such a
/// client may then see a reset, which is the price of not reading without end.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The longest time spent draining one refused body (see [`DRAIN_BYTES`]).
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a body up to `limit` bytes; longer bodies are a 413 (after draining, see [`DRAIN_BYTES`]), read
/// failures a 400.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt as _;

    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = ApiError::PayloadTooLarge { limit };
    if declared.is_some_and(|n| n > limit as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at once, nothing to drain.
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            drain(body).await;
        }
        return Err(too_large);
    }
    let mut body = body;
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            ApiError::BadEnvelope(format!("the request body could not be read: {err}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len().saturating_add(data.len()) > limit {
                drain(body).await;
                return Err(too_large);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// Reads and discards the rest of `body`, up to [`DRAIN_BYTES`] and [`DRAIN_TIME`]; read errors end it.
async fn drain(mut body: Body) {
    use http_body_util::BodyExt as _;

    let discard = async {
        let mut seen: u64 = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len() as u64);
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
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
///
/// The envelope is walked without building it (issue 9 item 11: parsing it into a `Value` first cost
/// ten times its size): each level keeps only the entry it needs as a [`RawValue`] borrowed from `bytes`,
/// skipping the rest, and `Body` is taken as its raw text (a JSON string is unescaped once; anything else
/// is passed on as the JSON text it is). Memory is the envelope plus one copy of the body.
fn unwrap_invocation(bytes: &[u8]) -> Result<(Option<String>, Vec<u8>), ApiError> {
    let bad = |why: &str| ApiError::BadEnvelope(why.to_owned());
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::BadEnvelope(format!("the invocation is not JSON: {e}")))?;
    let not_json =
        |e: serde_json::Error| ApiError::BadEnvelope(format!("the invocation is not JSON: {e}"));
    let data = entry_ci(text, "Data")
        .map_err(not_json)?
        .filter(|raw| raw.get().starts_with('{'))
        .ok_or_else(|| bad("expected {\"Data\": {\"req\": {…}}, \"Metadata\": {…}}"))?;
    let request = match entry_ci(data.get(), "req").map_err(not_json)? {
        Some(request) => Some(request),
        // Another binding name: the first input that looks like an HTTP request.
        None => {
            let mut found = None;
            for_each_entry(data.get(), |_, value| {
                if found.is_none()
                    && value.get().starts_with('{')
                    && entry_ci(value.get(), "Method").is_ok_and(|m| m.is_some())
                {
                    found = Some(value);
                }
            })
            .map_err(not_json)?;
            found
        }
    }
    .filter(|raw| raw.get().starts_with('{'))
    .ok_or_else(|| bad("the invocation has no HTTP request in `Data`"))?;
    let content_type = entry_ci(request.get(), "Headers")
        .map_err(not_json)?
        .and_then(|headers| entry_ci(headers.get(), "Content-Type").ok().flatten())
        .and_then(header_text);
    let body = match entry_ci(request.get(), "Body").map_err(not_json)? {
        None => Vec::new(),
        Some(raw) => match raw.get() {
            "null" => Vec::new(),
            quoted if quoted.starts_with('"') => serde_json::from_str::<String>(quoted)
                .map_err(not_json)?
                .into_bytes(),
            other => other.as_bytes().to_vec(),
        },
    };
    Ok((content_type, body))
}

/// A header value: a string, or the first string of an array (the host's two spellings). Header values
/// are short; anything longer than 4 KiB is not a content type we would accept anyway.
fn header_text(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if text.len() > 4096 {
        return None;
    }
    match serde_json::from_str::<Value>(text).ok()? {
        Value::String(s) => Some(s),
        Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The value of `key` in the JSON object `text`, matching the key case-insensitively (an exact match
/// wins); `None` when `text` is not an object or has no such key. Other values are skipped unbuilt.
fn entry_ci<'a>(text: &'a str, key: &str) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let (mut exact, mut folded) = (None, None);
    for_each_entry(text, |k, value| {
        if k == key {
            exact = exact.or(Some(value));
        } else if folded.is_none() && k.eq_ignore_ascii_case(key) {
            folded = Some(value);
        }
    })?;
    Ok(exact.or(folded))
}

/// Calls `f` with every key and raw value of the JSON object `text`, in document order; a JSON value
/// that is not an object calls nothing. Fails only when `text` is not JSON.
fn for_each_entry<'a>(
    text: &'a str,
    f: impl FnMut(&str, &'a RawValue),
) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(EachEntry(f), &mut deserializer)?;
    deserializer.end()
}

/// The visitor behind [`for_each_entry`]: hand-written because serde derives need fixed, case-sensitive
/// key names, and a map type would keep every entry of a hostile envelope.
struct EachEntry<F>(F);

impl<'de, F: FnMut(&str, &'de RawValue)> serde::de::DeserializeSeed<'de> for EachEntry<F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(&str, &'de RawValue)> serde::de::Visitor<'de> for EachEntry<F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            (self.0)(&key, value);
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
