//! Failures through the real binary: start-up errors, refused requests, an unreachable queue, and secrets
//! that must never reach logs or responses.

use std::process::Command;

use queue_message::testing::Azurite;
use serde_json::Value;

use crate::util::{caller_view, incident, Handler, KEY_B64};

fn run_without(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis-handler"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn start_up_errors_are_clear_and_never_panics() {
    let (code, _, err) = run_without(&[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("PORTCULLIS_SIGNING_KEY is required"), "{err}");
    assert!(err.contains("one of PORTCULLIS_QUEUE"), "{err}");
    assert!(!err.contains("panicked"));

    let (code, _, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", KEY_B64),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("FUNCTIONS_CUSTOMHANDLER_PORT") && err.contains("--listen"),
        "{err}"
    );

    let secret = "AccountName=a;AccountKey=c2VjcmV0LWFjY291bnQta2V5;Bogus=1";
    let (code, _, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", "dG9vLXNob3J0"),
            ("PORTCULLIS_QUEUE", secret),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "1"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("at least 32"), "{err}");
    assert!(
        !err.contains("dG9vLXNob3J0") && !err.contains("c2VjcmV0"),
        "secrets leaked: {err}"
    );

    let (code, _, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", KEY_B64),
            ("PORTCULLIS_QUEUE", secret),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "1"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown connection string key `bogus`"),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0"), "{err}");

    // A bare account key, or a secret without `=`, pasted as the connection string: named by position only.
    for (queue, secret) in [
        (queue_message::connection::DEV_ACCOUNT_KEY, "Eby8vdM0"),
        ("AccountName=a;SUPERSECRETKEYNOEQUALS", "SUPERSECRET"),
    ] {
        let (code, _, err) = run_without(
            &[
                ("PORTCULLIS_SIGNING_KEY", KEY_B64),
                ("PORTCULLIS_QUEUE", queue),
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "1"),
            ],
            &[],
        );
        assert_eq!(code, 2);
        assert!(err.contains("of the connection string is not a"), "{err}");
        assert!(
            !err.to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "secret leaked: {err}"
        );
    }

    let (code, out, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", KEY_B64),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ],
        &["--check"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "settings are valid", "{out}");
    // Comments on by default, no logs settings: --check says what the return path will do.
    assert!(
        lines[1].starts_with("reports: incident comments only"),
        "{out}"
    );

    let (code, _, err) = run_without(&[], &["--listen", "nonsense"]);
    assert_eq!(code, 2, "{err}");
}

// First-hour defect 7: `--check` stopped at the first stage with a problem and ignored typos.
#[test]
fn check_lists_every_problem_and_warns_about_unknown_names() {
    let (code, out, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", "c2hvcnQ="),
            ("PORTCULLIS_QUEUE", "AccountName=x;Foo=bar"),
            ("PORTCULLIS_TTL_HIGH", "xx"),
            ("PORTCULLIS_ALOWLIST", "198.51.100.0/24"),
        ],
        &["--check"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("invalid settings (3 problem(s))"), "{err}");
    for needle in [
        "PORTCULLIS_SIGNING_KEY: ",
        "PORTCULLIS_TTL_HIGH: `xx`",
        "PORTCULLIS_QUEUE: invalid queue connection: unknown connection string key `foo`",
        "warning: PORTCULLIS_ALOWLIST is not a setting the handler reads (ignored); did you mean PORTCULLIS_ALLOWLIST?",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    // A typo alone is a warning, not a failure.
    let (code, out, err) = run_without(
        &[
            ("PORTCULLIS_SIGNING_KEY", KEY_B64),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            ("PORTCULLIS_CREATE_QUEUE", "true"),
        ],
        &["--check"],
    );
    assert_eq!(
        (code, out.lines().next()),
        (0, Some("settings are valid")),
        "{err}"
    );
    assert!(
        err.contains("did you mean PORTCULLIS_CREATE_QUEUES?"),
        "{err}"
    );
}

// First-hour defect 9: `--version` said `portcullis`, the package, not the binary.
#[test]
fn version_names_the_binary() {
    let (code, out, _) = run_without(&[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("portcullis-handler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn list_settings_is_the_documented_table() {
    let (code, out, _) = run_without(&[], &["--list-settings"]);
    assert_eq!(code, 0);
    let settings: Vec<Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = settings
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        "PORTCULLIS_SIGNING_KEY",
        "PORTCULLIS_QUEUE",
        "PORTCULLIS_QUEUE__queueServiceUri",
        "PORTCULLIS_QUEUE__clientId",
        "PORTCULLIS_QUEUES",
        "PORTCULLIS_CREATE_QUEUES",
        "PORTCULLIS_ALLOWLIST",
        "PORTCULLIS_LAB_RANGES",
        "PORTCULLIS_MIN_PREFIX_V4",
        "PORTCULLIS_MIN_PREFIX_V6",
        "PORTCULLIS_MAX_TARGETS",
        "PORTCULLIS_TTL_INFORMATIONAL",
        "PORTCULLIS_TTL_LOW",
        "PORTCULLIS_TTL_MEDIUM",
        "PORTCULLIS_TTL_HIGH",
        "PORTCULLIS_MAX_TTL",
        "PORTCULLIS_MAX_BODY_BYTES",
        "PORTCULLIS_IP_DIMENSIONS",
        "PORTCULLIS_LOG_FORMAT",
    ] {
        assert!(names.contains(&name), "{name} missing");
    }
    for s in &settings {
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["default", "description", "name", "required"]);
        assert_eq!(s["required"], s["name"] == "PORTCULLIS_SIGNING_KEY");
    }
}

#[tokio::test]
async fn refused_requests_through_the_binary() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let handler = Handler::with_queue(
        &azurite.connection_string(),
        &[
            ("PORTCULLIS_MAX_BODY_BYTES", "8192"),
            ("PORTCULLIS_MAX_TARGETS", "3"),
        ],
    );
    let too_big = format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000));
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (
            "/api/alerts",
            Some("application/json"),
            "{\"objectSchemaType\": \"Incident\",\n \"object\": {]".into(),
            400,
        ),
        ("/api/alerts", Some("application/json"), String::new(), 400),
        ("/api/alerts", Some("application/json"), too_big, 413),
        (
            "/api/alerts",
            Some("application/x-www-form-urlencoded"),
            "a=b".into(),
            415,
        ),
        (
            "/api/alerts",
            Some("application/json"),
            "{\"some\": \"thing\"}".into(),
            422,
        ),
        (
            "/api/alerts",
            Some("application/json"),
            incident(
                "New",
                None,
                &[
                    "198.51.100.1",
                    "198.51.100.2",
                    "198.51.100.3",
                    "198.51.100.4",
                ],
            )
            .to_string(),
            422,
        ),
        (
            "/api/blocks",
            Some("application/json"),
            "{\"action\": \"block\", \"targets\": [\"198.51.100.1/24\"]}".into(),
            422,
        ),
    ];
    for (path, ct, body, want) in cases {
        let (status, headers, problem) = handler.forward(path, ct, body.clone()).await;
        assert_eq!(status, want, "{path} {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["status"], want);
        assert!(problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:portcullis:problem:"));
        let function = path.trim_start_matches("/api/");
        let (host_status, invocation) = handler
            .invoke(function, ct.unwrap_or("application/json"), &body)
            .await;
        assert_eq!(host_status, 200);
        let (status, headers, via_host) = caller_view(&invocation);
        assert_eq!((status, via_host), (want, problem.clone()));
        assert_eq!(headers["Content-Type"], "application/problem+json");
    }
    let (_, _, problem) = handler
        .forward(
            "/api/alerts",
            Some("application/json"),
            "{\"a\":\n\n  nope}".to_owned(),
        )
        .await;
    assert_eq!(
        (problem["line"].as_u64(), problem["column"].as_u64()),
        (Some(3), Some(4))
    );
    let (_, _, problem) = handler
        .forward(
            "/api/alerts",
            Some("application/json"),
            "{\"x\":1}".to_owned(),
        )
        .await;
    assert_eq!(problem["understood"].as_array().unwrap().len(), 3);
    let logs = handler.logs();
    assert!(
        !logs.contains("function-key-secret"),
        "the function key leaked into logs:\n{logs}"
    );
    assert!(!logs.contains(KEY_B64));
    assert!(!logs.contains("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"));
    assert!(!logs.contains("panicked"));
}

#[tokio::test]
async fn a_missing_queue_without_create_is_503_with_retry_after() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let handler = Handler::with_queue(
        &azurite.connection_string(),
        &[("PORTCULLIS_CREATE_QUEUES", "false")],
    );
    let body = incident("New", None, &["198.51.100.7"]).to_string();
    let (status, headers, problem) = handler
        .forward("/api/alerts", Some("application/json"), body.clone())
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(problem["queue"], "portcullis");
    let (_, invocation) = handler.invoke("alerts", "application/json", &body).await;
    let res = &invocation["Outputs"]["res"];
    assert_eq!(
        (
            res["statusCode"].as_u64(),
            res["headers"]["Retry-After"].as_str()
        ),
        (Some(503), Some("30"))
    );
}

#[tokio::test]
async fn one_queue_failing_out_of_two_is_503_not_2xx() {
    queue_message::require!(queue_message::testing::azurite_available());
    // 2xx only once every message is in every queue: site-a exists and takes the message, site-b is
    // missing and may not be created.
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let admin = std::sync::Arc::new(queue_message::QueueConnection::parse(&conn).unwrap());
    admin.queue("site-a").create_if_missing().await.unwrap();
    let handler = Handler::with_queue(
        &conn,
        &[
            ("PORTCULLIS_QUEUES", "site-a,site-b"),
            ("PORTCULLIS_CREATE_QUEUES", "false"),
        ],
    );
    let body = incident("New", None, &["198.51.100.7"]).to_string();
    let (status, headers, problem) = handler
        .forward("/api/alerts", Some("application/json"), body.clone())
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(problem["queue"], "site-b");
    let (_, invocation) = handler.invoke("alerts", "application/json", &body).await;
    let (status, _, problem) = caller_view(&invocation);
    assert_eq!((status, &problem["queue"]), (503, &Value::from("site-b")));
    assert!(!admin.queue("site-b").exists().await.unwrap());
}

/// Every `sig=` in `text` is followed by `REDACTED`.
fn every_signature_redacted(text: &str) -> bool {
    text.match_indices("sig=")
        .all(|(at, _)| text[at + "sig=".len()..].starts_with("REDACTED"))
}

#[test]
fn the_redaction_check_is_not_vacuous() {
    assert!(every_signature_redacted("a sig=REDACTED b &sig=REDACTED"));
    assert!(every_signature_redacted("no signature at all"));
    assert!(!every_signature_redacted("sig=REDACTED then sig=Ab%2Fcd"));
    assert!(!every_signature_redacted("sig=abc"));
}

#[tokio::test]
async fn a_stopped_queue_service_is_503_after_the_sdk_retries() {
    queue_message::require!(queue_message::testing::azurite_available());
    let azurite = Azurite::start();
    let conn = azurite.connection_string();
    let handler = Handler::with_queue(&conn, &[]);
    let body = incident("New", None, &["198.51.100.7"]).to_string();
    let (status, _, _) = handler
        .forward("/api/alerts", Some("application/json"), body.clone())
        .await;
    assert_eq!(status, 200);
    drop(azurite);
    let (status, headers, problem) = handler
        .forward("/api/alerts", Some("application/json"), body)
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(headers["retry-after"], "30");
    let logs = handler.logs();
    assert!(logs.contains("Queue write failed"), "{logs}");
    assert!(
        every_signature_redacted(&logs),
        "SAS signatures must be redacted:\n{logs}"
    );
    assert!(
        !logs.contains(queue_message::connection::DEV_ACCOUNT_KEY)
            && !logs.contains("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"),
        "the account key leaked:\n{logs}"
    );
    assert!(!logs.contains(KEY_B64), "the signing key leaked:\n{logs}");
}
