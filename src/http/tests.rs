//! Router tests without a socket: both host modes, readiness, errors.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use queue_message::{BlockMessage, SigningKey};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::{app, memory_state, MemoryQueues};

fn key() -> SigningKey {
    SigningKey::from_bytes(vec![42; 32]).unwrap()
}

/// The pinned clock: answers that carry times compare equal whichever request comes first.
fn pinned_now() -> chrono::DateTime<chrono::Utc> {
    chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 11, 26, 7, 0, 0).unwrap()
}

fn setup() -> (axum::Router, Arc<MemoryQueues>) {
    let queues = Arc::new(MemoryQueues::new(&["portcullis", "site2"]));
    let mut state = memory_state(key(), &queues);
    state.clock = pinned_now;
    (app(Arc::new(state)), queues)
}

async fn call(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(body.into()).unwrap()
}

fn envelope(path: &str, body: &str, content_type: &str) -> Value {
    json!({
        "Data": {"req": {
            "Url": format!("http://localhost:7071/api{path}?code=secret"),
            "Method": "POST",
            "Query": {"code": "secret"},
            "Headers": {"Content-Type": [content_type], "x-functions-key": ["secret"]},
            "Params": {},
            "Body": body
        }},
        "Metadata": {"sys": {"MethodName": path.trim_start_matches('/'), "UtcNow": "2026-11-26T07:00:00Z", "RandGuid": "x"}}
    })
}

#[tokio::test]
async fn readiness() {
    let (router, _) = setup();
    let (status, _, body) = call(&router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn an_incident_in_both_modes_gives_the_same_answer() {
    let incident = crate::testdata::incident_trigger("Active", None).to_string();
    let (router, queues) = setup();
    let (status, headers, direct) = call(
        &router,
        post("/api/alerts", Some("application/json"), incident.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{direct}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(direct["status"], "queued");
    assert_eq!(direct["queued"], 3);
    assert_eq!(direct["skipped"], 1);
    let messages = queues.messages("site2");
    assert_eq!(messages.len(), 1);
    let message = BlockMessage::decode(&messages[0].text, &[key()]).unwrap();
    assert_eq!(message.targets.len(), 3);
    assert_eq!(message.source.kind, "sentinel-incident");
    // The message lives on the queue until the block ends, and not longer.
    assert_eq!(message.issued_at, pinned_now());
    assert_eq!(direct["expires_at"], "2026-11-28T07:00:00Z");
    assert_eq!(
        messages[0].ttl_secs,
        (message.expires_at - message.issued_at).num_seconds()
    );
    assert_eq!(messages[0].ttl_secs, 2 * 86_400);

    let wrapped = envelope("/alerts", &incident, "application/json").to_string();
    let (status, _, host) = call(&router, post("/alerts", Some("application/json"), wrapped)).await;
    assert_eq!(status, StatusCode::OK);
    let res = &host["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200);
    assert_eq!(res["headers"]["Content-Type"], "application/json");
    let inner: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("messages");
        v
    };
    assert_eq!(strip(inner), strip(direct));
    assert!(host["Logs"][0].as_str().unwrap().contains("3 queued"));
    assert_eq!(host["ReturnValue"], Value::Null);
    assert!(!host.to_string().contains("secret"));
    assert_eq!(queues.messages("portcullis").len(), 2);
}

#[tokio::test]
async fn errors_are_problems_in_both_modes() {
    let (router, queues) = setup();
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (
            "/api/alerts",
            Some("application/json"),
            "{\n  \"a\": }".into(),
            400,
        ),
        ("/api/alerts", Some("text/plain"), "{}".into(), 415),
        (
            "/api/alerts",
            Some("application/json"),
            "{\"hello\": 1}".into(),
            422,
        ),
        (
            "/api/blocks",
            Some("application/json"),
            "{\"action\":\"block\",\"targets\":[]}".into(),
            422,
        ),
        (
            "/api/blocks",
            None,
            "{\"action\":\"block\",\"targets\":[\"x\"]}".into(),
            422,
        ),
    ];
    for (path, ct, body, want) in cases {
        let (status, headers, direct) = call(&router, post(path, ct, body.clone())).await;
        assert_eq!(status.as_u16(), want, "{path} {body}: {direct}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(direct["status"], want);
        let wrapped = envelope(
            path.trim_start_matches("/api"),
            &body,
            ct.unwrap_or("application/json"),
        );
        let (status, _, host) = call(
            &router,
            post(
                path.trim_start_matches("/api"),
                Some("application/json"),
                wrapped.to_string(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(host["Outputs"]["res"]["statusCode"], want);
        let inner: Value =
            serde_json::from_str(host["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(inner, direct);
    }
    let (_, _, malformed) = call(
        &router,
        post("/api/alerts", Some("application/json"), "{\n  \"a\": }"),
    )
    .await;
    assert_eq!(
        (malformed["line"].as_u64(), malformed["column"].as_u64()),
        (Some(2), Some(8))
    );
    assert!(queues.messages("portcullis").is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let queues = Arc::new(MemoryQueues::new(&["portcullis"]));
    let mut state = memory_state(key(), &queues);
    state.max_body_bytes = 100;
    let router = app(Arc::new(state));
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200));
    let (status, _, body) = call(
        &router,
        post("/api/alerts", Some("application/json"), big.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["status"], 413);
    // A declared Content-Length over the limit is refused before reading.
    let declared = Request::post("/api/alerts")
        .header("content-type", "application/json")
        .header("content-length", "1000")
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, _, _) = call(&router, declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let wrapped = envelope("/alerts", &big, "application/json").to_string();
    let (status, _, host) = call(&router, post("/alerts", Some("application/json"), wrapped)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(host["Outputs"]["res"]["statusCode"], 413);
}

#[tokio::test]
async fn queue_failures_are_503_with_retry_after() {
    let (router, queues) = setup();
    queues.set_failing(true);
    let body = crate::testdata::incident_trigger("New", None).to_string();
    let (status, headers, problem) =
        call(&router, post("/api/alerts", Some("application/json"), body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(problem["queue"], "portcullis");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let (router, _) = setup();
    let (status, _, body) = call(&router, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], 404);
    let (status, _, _) = call(
        &router,
        Request::get("/api/alerts").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn method_not_allowed_says_what_is() {
    let (router, _) = setup();
    for (method, path, allow) in [
        ("GET", "/api/alerts", "POST"),
        ("PUT", "/api/Blocks/", "POST"),
        ("DELETE", "/alerts", "POST"),
        ("POST", "/", "GET, HEAD"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(&router, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
        assert_eq!(body["status"], 405);
    }
}

#[tokio::test]
async fn routes_ignore_case_and_one_trailing_slash() {
    // Review finding D4: the Functions host matches routes case-insensitively and passes the path on as
    // the caller typed it.
    let incident = crate::testdata::incident_trigger("Active", None).to_string();
    let (router, queues) = setup();
    for path in ["/api/Alerts", "/api/alerts/", "/API/ALERTS/?code=x"] {
        let (status, _, body) = call(
            &router,
            post(path, Some("application/json"), incident.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["status"], "queued", "{path}");
    }
    let manual = json!({"action": "block", "targets": ["52.1.1.1"]}).to_string();
    let (status, _, _) = call(
        &router,
        post("/api/Blocks/", Some("application/json"), manual.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/Alerts", "/alerts/", "/ALERTS"] {
        let wrapped = envelope(path, &incident, "application/json").to_string();
        let (status, _, host) = call(&router, post(path, Some("application/json"), wrapped)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(host["Outputs"]["res"]["statusCode"], 200, "{path}: {host}");
    }
    assert_eq!(queues.messages("portcullis").len(), 3 + 1 + 3);
    // Only one trailing slash, and no other paths.
    for path in ["/api/alerts//", "/api/alertsx", "/api"] {
        let (status, _, _) = call(
            &router,
            post(path, Some("application/json"), incident.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _, body) = call(&router, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ready")));
}

#[tokio::test]
async fn the_docs_invocation_sample_shape_is_understood() {
    // The docs' http-trigger invocation (with `Query` as the string "{}"), carrying an incident instead of
    // the order; our answer has the members of the docs' response sample.
    let mut invocation: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/functions-host/functions-custom-handler.invoke-request.http-trigger.docs-sample.json"
    ))
    .unwrap();
    invocation["Data"]["req"]["Url"] = "http://localhost:7071/api/alerts".into();
    invocation["Data"]["req"]["Body"] = crate::testdata::incident_trigger("New", None)
        .to_string()
        .into();
    let (router, queues) = setup();
    let (status, _, answer) = call(
        &router,
        post("/alerts", Some("application/json"), invocation.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sample: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/functions-host/functions-custom-handler.invoke-response.generic.docs-sample.json"
    ))
    .unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&answer), keys(&sample));
    assert_eq!(answer["Outputs"]["res"]["statusCode"], 200);
    assert_eq!(queues.messages("portcullis").len(), 1);

    // A host that hands over the body already parsed (an object, not a string) gets the same answer.
    invocation["Data"]["req"]["Body"] = crate::testdata::incident_trigger("New", None);
    let (_, _, again) = call(
        &router,
        post("/alerts", Some("application/json"), invocation.to_string()),
    )
    .await;
    assert_eq!(again["Outputs"]["res"]["statusCode"], 200);

    // No body at all (a chunked request has none in the envelope): a 400 for the caller, 200 for the host.
    invocation["Data"]["req"]
        .as_object_mut()
        .unwrap()
        .remove("Body");
    let (status, _, empty) = call(
        &router,
        post("/alerts", Some("application/json"), invocation.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["Outputs"]["res"]["statusCode"], 400);

    // Not an invocation at all.
    let (status, _, bad) = call(
        &router,
        post("/alerts", Some("application/json"), "{\"hello\":1}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bad["Outputs"]["res"]["statusCode"], 400);
}

#[tokio::test]
async fn a_huge_ttl_is_a_422_not_a_dropped_connection() {
    // Review finding D1: repeated components added up past what chrono can add to `now` (a panic).
    let (router, queues) = setup();
    let ttl = format!("P{}", "11574074D".repeat(10));
    let body = json!({"action": "block", "targets": ["52.1.1.1"], "ttl": ttl}).to_string();
    let (status, _, problem) =
        call(&router, post("/api/blocks", Some("application/json"), body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("100 years"));
    for ttl in ["P1D1D", "P36525D"] {
        let body = json!({"action": "block", "targets": ["52.1.1.1"], "ttl": ttl}).to_string();
        let (status, _, answer) =
            call(&router, post("/api/blocks", Some("application/json"), body)).await;
        let want = if ttl == "P1D1D" { 422 } else { 200 };
        assert_eq!(status.as_u16(), want, "{ttl}: {answer}");
    }
    // A long (but valid) duration is capped, not added.
    assert_eq!(queues.messages("portcullis").len(), 1);
    assert_eq!(
        queues.messages("portcullis")[0].ttl_secs,
        chrono::Duration::days(90).num_seconds()
    );
}

/// Issue 9 item 11: the envelope is read without building it, with the same leniency as before: keys in
/// any case, another binding name, a content type as a string or an array, a body as a string, as JSON or
/// absent.
#[test]
fn invocation_envelopes_are_read_leniently_without_a_value() {
    use super::unwrap_invocation;
    let cases = [
        (
            r#"{"data":{"REQ":{"headers":{"content-type":"text/json"},"body":"{\"a\":\"\u00e9\"}"}}}"#,
            Some("text/json"),
            "{\"a\":\"é\"}",
        ),
        (
            r#"{"Metadata":{"big":[1,2,3]},"Data":{"timer":{"x":1},"request":{"Method":"POST","Headers":{"Content-Type":["application/json","x"]},"Body":{"k": [1, 2]}}}}"#,
            Some("application/json"),
            r#"{"k": [1, 2]}"#,
        ),
        (r#"{"Data":{"req":{"Body":null}}}"#, None, ""),
        (r#"{"Data":{"req":{"Body":12}}}"#, None, "12"),
        (
            r#"{"Data":{"req":{"body":"lower","Body":"exact"}}}"#,
            None,
            "exact",
        ),
    ];
    for (envelope, content_type, body) in cases {
        let (ct, got) = unwrap_invocation(envelope.as_bytes()).unwrap();
        assert_eq!(ct.as_deref(), content_type, "{envelope}");
        assert_eq!(String::from_utf8(got).unwrap(), body, "{envelope}");
    }
    for bad in [
        "",
        "[1]",
        "{\"Data\":[]}",
        "{\"Data\":{\"x\":{\"y\":1}}}",
        "{\"Data\":{\"req\":{}}} trailing",
        "{\"Data\":{\"req\":{\"Body\":\"\\ud800\"}}}",
        "\u{0}",
    ] {
        assert!(
            matches!(
                unwrap_invocation(bad.as_bytes()),
                Err(crate::ApiError::BadEnvelope(_))
            ),
            "{bad:?}"
        );
    }
    assert!(unwrap_invocation(b"{\"Data\":{\"req\":{}}, \"x\": \xff}").is_err());
}
