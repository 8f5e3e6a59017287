//! End to end with every real part: the `portcullis-handler` binary, Azurite, the agent binary and
//! nftables inside a lab namespace. An HTTP POST of a Sentinel incident ends in a dropped packet; closing
//! the incident as a false positive lets the peer back; the manual blocks API works the same way.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::netns::{wait_for, Lab};
use crate::util::{audit, free_port, AgentProcess, Env};

const WAIT: Duration = Duration::from_secs(30);

/// `<target-dir>/debug/portcullis-handler`, found next to this test executable (`…/debug/deps/…`).
pub fn handler_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from <target-dir>/<profile>/deps");
    let bin = dir.join("portcullis-handler");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (`make test` does)",
        bin.display()
    );
    bin
}

/// The handler as a child process, talking to `env`'s Azurite. Killed on drop.
pub struct Handler {
    child: Child,
    /// Its port.
    pub port: u16,
    log: PathBuf,
}

impl Handler {
    /// Starts the handler and waits until it answers.
    pub fn start(env: &Env) -> Self {
        let port = free_port();
        let log = env.dir.path().join("handler.log");
        let file = std::fs::File::create(&log).unwrap();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let child = Command::new(handler_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_APP_ROOT_PATH", &root)
            .env("PORTCULLIS_QUEUE", env.azurite.connection_string())
            .env("PORTCULLIS_SIGNING_KEY", &env.key_b64)
            .env("PORTCULLIS_QUEUES", &env.name)
            .env("PORTCULLIS_CREATE_QUEUES", "true")
            .env("PORTCULLIS_LAB_RANGES", "198.51.100.0/24,2001:db8::/32")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the handler starts");
        let mut handler = Self { child, port, log };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = handler.child.try_wait() {
                panic!("the handler exited with {status}:\n{}", handler.log());
            }
            assert!(
                Instant::now() < deadline,
                "the handler did not listen:\n{}",
                handler.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        handler
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs JSON to `path` and returns the status and body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .json(body)
            .send()
            .await
            .expect("the handler answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Sentinel incident trigger naming `ips`.
pub fn incident(
    guid: &str,
    status: &str,
    classification: Option<&str>,
    ips: &[&str],
) -> serde_json::Value {
    let entities: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| json!({"kind": "Ip", "properties": {"address": ip, "friendlyName": ip}}))
        .collect();
    let mut properties = json!({
        "title": "Traffic from a known-bad address",
        "severity": "High",
        "status": status,
        "incidentNumber": "42",
        "incidentUrl": format!("https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident/{guid}"),
        "relatedEntities": entities,
    });
    if let Some(c) = classification {
        properties["classification"] = c.into();
    }
    json!({
        "objectSchemaType": "Incident",
        "objectEventType": if status == "New" { "Create" } else { "Update" },
        "object": {
            "id": format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/Incidents/{guid}"),
            "properties": properties
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_incident_posted_to_the_handler_ends_in_a_dropped_packet() {
    queue_message::require!(queue_message::testing::azurite_available());
    queue_message::require!(crate::netns::available());
    let lab = Lab::new();
    let env = Env::new().await;
    let firewall = format!(
        "[firewall]\nbackend = \"nftables\"\n[firewall.nftables]\nnetns = \"{}\"\n",
        lab.fw
    );
    let config = env.config(&firewall, "", "");
    let _agent = AgentProcess::start(&config, &[]);
    let handler = Handler::start(&env);
    assert!(
        lab.peer_v4_connects() && lab.peer_v6_connects(),
        "open before the incident"
    );

    let guid = "7d1c5b2e-1f0a-4c54-9b8e-2f6b3c1d0e99";
    let (status, body) = handler
        .post(
            "/api/alerts",
            &incident(guid, "New", None, &["198.51.100.2", "2001:db8::2"]),
        )
        .await;
    assert!(
        (200..300).contains(&status),
        "{status} {body}\n{}",
        handler.log()
    );
    assert!(
        wait_for(WAIT, false, || lab.peer_v4_connects()),
        "IPv4 peer not dropped"
    );
    assert!(!lab.peer_v6_connects(), "IPv6 peer not dropped");
    let events = audit(&config);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "blocked"
                && e["detail"].as_str().is_some_and(|d| d.contains(guid))),
        "the block links back to the incident: {events:?}"
    );

    // The analyst closes the incident as a false positive: the handler asks to unblock.
    let (status, body) = handler
        .post(
            "/api/alerts",
            &incident(
                guid,
                "Closed",
                Some("FalsePositive"),
                &["198.51.100.2", "2001:db8::2"],
            ),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert!(
        wait_for(WAIT, true, || lab.peer_v4_connects()),
        "IPv4 peer not allowed again"
    );
    assert!(lab.peer_v6_connects());

    // The manual blocks API, through the same queue.
    let (status, body) = handler
        .post(
            "/api/blocks",
            &json!({"action": "block", "targets": ["198.51.100.2"], "ttl": "PT1H"}),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert!(wait_for(WAIT, false, || lab.peer_v4_connects()));
    let (status, body) = handler
        .post(
            "/api/blocks",
            &json!({"action": "unblock", "targets": ["198.51.100.2"]}),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert!(wait_for(WAIT, true, || lab.peer_v4_connects()));
    assert!(env.drain_poison().await.is_empty(), "nothing poisoned");
}
