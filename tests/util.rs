//! Shared test plumbing: the handler process, the host's two invocation shapes, reading queues back.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use queue_message::testing::free_port;
use queue_message::{BlockMessage, QueueConnection, SigningKey};
use serde_json::{json, Value};

/// A fixed 32-byte signing key, base64.
pub(crate) const KEY_B64: &str = "cG9ydGN1bGxpcy1pbnRlZ3JhdGlvbi10ZXN0LWtleSE=";

pub(crate) fn key() -> SigningKey {
    SigningKey::from_base64(KEY_B64).unwrap()
}

/// A fixture from `tests/fixtures/`.
pub(crate) fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

/// The handler binary, running; killed on drop. Its stdout and stderr go to a file.
pub(crate) struct Handler {
    child: Child,
    pub(crate) port: u16,
    log: tempfile::NamedTempFile,
}

impl Handler {
    /// Starts the binary with exactly `env` (plus PATH) and waits until `GET /` answers, polling every 25 ms
    /// like the host.
    pub(crate) fn start(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis-handler"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "test-worker")
            .env("FUNCTIONS_APP_ROOT_PATH", env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let mut handler = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(port) {
                break;
            }
            if let Ok(Some(status)) = handler.child.try_wait() {
                panic!("handler exited with {status}: {}", handler.logs());
            }
            assert!(
                Instant::now() < deadline,
                "handler not ready: {}",
                handler.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        handler
    }

    /// The standard environment around a connection string.
    pub(crate) fn with_queue(connection: &str, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![
            ("PORTCULLIS_QUEUE", connection),
            ("PORTCULLIS_SIGNING_KEY", KEY_B64),
            ("PORTCULLIS_CREATE_QUEUES", "true"),
            ("PORTCULLIS_LAB_RANGES", "198.51.100.0/24,2001:db8:1::/48"),
        ];
        env.extend_from_slice(extra);
        Self::start(&env)
    }

    /// Peak resident memory of the handler process so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    pub(crate) fn logs(&self) -> String {
        let mut text = String::new();
        let _ = self.log.reopen().unwrap().read_to_string(&mut text);
        text
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Forwarding/proxying mode: the caller's request, with the headers the host adds.
    pub(crate) async fn forward(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = client()
            .post(self.url(&format!("{path}?code=function-key-secret")))
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
            .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
            .header("x-functions-key", "function-key-secret");
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Data/Metadata mode: the invocation the host posts to `/<function>`; returns the host-facing status and
    /// the whole invocation response.
    pub(crate) async fn invoke(
        &self,
        function: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let invocation = json!({
            "Data": {
                "req": {
                    "Url": format!("https://portcullis.azurewebsites.net/api/{function}?code=function-key-secret"),
                    "Method": "POST",
                    "Query": {"code": "function-key-secret"},
                    "Headers": {
                        "Content-Type": [content_type],
                        "Content-Length": [body.len().to_string()],
                        "x-functions-key": ["function-key-secret"],
                        "User-Agent": ["azure-logic-apps/1.0"]
                    },
                    "Params": {},
                    "Identities": [{"AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Claims": [{"Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Value": "Function"}]}],
                    "Body": body
                }
            },
            "Metadata": {
                "Query": {"code": "function-key-secret"},
                "Headers": {"Content-Type": content_type},
                "sys": {"MethodName": function, "UtcNow": "2026-11-26T07:00:00.0000000Z", "RandGuid": uuid::Uuid::new_v4().to_string()}
            }
        });
        let response = client()
            .post(self.url(&format!("/{function}")))
            .header("Content-Type", "application/json")
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
            .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
            .body(invocation.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the caller would get in Data/Metadata mode: `Outputs.res` as (status, headers, parsed body).
pub(crate) fn caller_view(invocation_response: &Value) -> (u16, Value, Value) {
    let res = &invocation_response["Outputs"]["res"];
    let status = res["statusCode"].as_u64().unwrap() as u16;
    let body = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    (status, res["headers"].clone(), body)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
}

fn ready(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 ")
}

/// Every message in `queue`, received (and so hidden), decoded and verified with the test key.
pub(crate) async fn drain(connection: &str, queue: &str) -> Vec<BlockMessage> {
    let connection = Arc::new(QueueConnection::parse(connection).unwrap());
    let queue = connection.queue(queue);
    let mut out = Vec::new();
    loop {
        let batch = queue.receive(32, 300).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        for m in batch {
            out.push(BlockMessage::decode(&m.text, &[key()]).expect("a verified message"));
        }
    }
}

/// An incident trigger body (the ARM incident example wrapped as the Logic App sends it) with these entities.
pub(crate) fn incident(status: &str, classification: Option<&str>, addresses: &[&str]) -> Value {
    let mut object = fixture("sentinel/sentinel-incident.get-incident.arm-example.json")
        ["responses"]["200"]["body"]
        .clone();
    let entity = fixture("sentinel/sentinel-entity-ip.get-entity.arm-example.json")["responses"]
        ["200"]["body"]
        .clone();
    let props = object["properties"].as_object_mut().unwrap();
    props.insert("status".into(), status.into());
    match classification {
        Some(c) => props.insert("classification".into(), c.into()),
        None => props.remove("classification"),
    };
    let entities: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut e = entity.clone();
            e["name"] = format!("e1d3d618-e11f-478b-98e3-{i:012}").into();
            e["properties"]["address"] = (*a).into();
            e["properties"]["friendlyName"] = (*a).into();
            e
        })
        .collect();
    props.insert("relatedEntities".into(), entities.into());
    json!({
        "eventUniqueId": uuid::Uuid::new_v4().to_string(),
        "objectSchemaType": "Incident",
        "objectEventType": "Create",
        "workspaceInfo": {"SubscriptionId": "d0cfe6b2-9ac0-4464-9919-dccaee2e48c0", "ResourceGroupName": "myRg", "WorkspaceName": "myWorkspace"},
        "workspaceId": "c8c99641-985d-4e4e-8e91-fb3466cd0e5b",
        "object": object
    })
}

/// Base64 of `bytes` (for JWTs, URL-safe without padding).
pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
