//! Shared test utilities: an Azurite with the agent's queues, signed messages, the agent binary as a child
//! process with its log captured, and the CLI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use queue_message::testing::Azurite;
use queue_message::{Action, BlockMessage, Queue, QueueConnection, SigningKey, Source, Target};
use uuid::Uuid;

/// The documentation ranges the tests block (special-purpose, so declared as lab ranges).
pub const LAB_RANGES: &str = r#"["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]"#;

/// Azurite plus the queue, its poison queue, a signing key and a scratch directory.
pub struct Env {
    /// The emulator (stopped on drop).
    pub azurite: Azurite,
    /// Scratch directory for configs, state and logs.
    pub dir: tempfile::TempDir,
    /// The handler's signing key.
    pub key: SigningKey,
    /// The same, base64.
    pub key_b64: String,
    /// The queue name.
    pub name: String,
    /// The queue.
    pub queue: Queue,
    /// The poison queue.
    pub poison: Queue,
}

impl Env {
    /// Starts Azurite and creates the queues.
    pub async fn new() -> Self {
        let azurite = Azurite::start();
        let connection = Arc::new(QueueConnection::parse(&azurite.connection_string()).unwrap());
        let name = "portcullis".to_owned();
        let queue = connection.queue(&name);
        let poison = connection.queue(&format!("{name}-poison"));
        queue.create_if_missing().await.unwrap();
        poison.create_if_missing().await.unwrap();
        let raw: Vec<u8> = (0..32u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(3))
            .collect();
        let key_b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        Self {
            key: SigningKey::from_bytes(raw).unwrap(),
            key_b64,
            azurite,
            dir: tempfile::tempdir().unwrap(),
            name,
            queue,
            poison,
        }
    }

    /// The state database path.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Writes an agent config with `firewall` as the `[firewall]` section (and its sub-tables) and
    /// `extra` appended to `[policy]`; returns its path.
    pub fn config(&self, firewall: &str, policy_extra: &str, queue_extra: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        let text = format!(
            r#"[queue]
connection = "{conn}"
name = "{name}"
signing_key = "{key}"
visibility_timeout = "3s"
max_poll_interval = "200ms"
{queue_extra}

[state]
path = "{state}"

[policy]
lab_ranges = {LAB_RANGES}
{policy_extra}

{firewall}

[log]
level = "portcullis_agent=debug,info"
"#,
            conn = self.azurite.connection_string(),
            name = self.name,
            key = self.key_b64,
            state = self.state().display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A block or unblock message from an incident.
    pub fn message(
        &self,
        action: Action,
        targets: &[&str],
        ttl: chrono::Duration,
        incident: &str,
    ) -> BlockMessage {
        let now = Utc::now();
        let mut targets: Vec<Target> = targets.iter().map(|t| Target::parse(t).unwrap()).collect();
        targets.sort();
        targets.dedup();
        BlockMessage {
            id: Uuid::new_v4(),
            action,
            targets,
            expires_at: now + ttl,
            reason: format!("test incident {incident} on queue {}", self.name),
            source: Source {
                kind: "sentinel-incident".to_owned(),
                id: Some(format!("/subscriptions/s/incidents/{incident}")),
                url: Some(format!("https://portal.example/incidents/{incident}")),
                rule: Some("TI map".to_owned()),
                severity: Some("High".to_owned()),
            },
            issued_at: now,
        }
    }

    /// Signs and sends a message.
    pub async fn send(&self, message: &BlockMessage) {
        self.queue
            .send(&message.encode(&self.key), 600)
            .await
            .unwrap();
    }

    /// Sends raw text.
    pub async fn send_text(&self, text: &str) {
        self.queue.send(text, 600).await.unwrap();
    }

    /// Messages on the poison queue (received and deleted).
    pub async fn drain_poison(&self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let batch = self.poison.receive(32, 30).await.unwrap();
            if batch.is_empty() {
                return out;
            }
            for m in batch {
                self.poison.delete(&m.id, &m.pop_receipt).await.unwrap();
                out.push(m.text);
            }
        }
    }

    /// Drains the poison queue until at least `n` messages came out or `limit` passed.
    pub async fn poisoned(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            out.extend(self.drain_poison().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out
    }

    /// Messages on the main queue that are visible or hidden (approximate).
    pub async fn queued(&self) -> i64 {
        self.queue.approximate_count().await.unwrap()
    }
}

/// The value of the series `name` on the agent's `/metrics` at `port` (0 when absent or unreachable).
pub async fn metric(port: u16, name: &str) -> f64 {
    let Ok(reply) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0.0;
    };
    let text = reply.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The agent binary under test.
pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis-agent")
}

/// Runs a CLI command against `config`.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the agent binary runs")
}

/// Runs a CLI command and returns stdout; panics with stderr on failure.
pub fn cli_ok(config: &Path, args: &[&str]) -> String {
    let out = cli(config, args);
    assert!(
        out.status.success(),
        "portcullis-agent {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Active blocks as `list --json` reports them: (target, claims).
pub fn listed(config: &Path) -> Vec<(String, usize)> {
    let text = cli_ok(config, &["list", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap().to_owned(),
                b["claims"].as_array().map(Vec::len).unwrap_or(0),
            )
        })
        .collect()
}

/// The targets `list --json` reports, sorted.
pub fn listed_targets(config: &Path) -> Vec<String> {
    let mut t: Vec<String> = listed(config).into_iter().map(|(t, _)| t).collect();
    t.sort();
    t
}

/// Audit events as JSON values.
pub fn audit(config: &Path) -> Vec<serde_json::Value> {
    cli_ok(config, &["audit", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Count of audit events of `kind`.
pub fn audit_count(config: &Path, kind: &str) -> usize {
    audit(config).iter().filter(|e| e["event"] == kind).count()
}

/// Polls `check` until true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Async version of [`eventually`].
pub async fn eventually_async<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent daemon as a child process; its stderr goes to a file. Killed on drop.
pub struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `portcullis-agent --config CONFIG run` with extra environment variables.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> Self {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("agent-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(agent_bin());
        command
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command.spawn().expect("the agent starts");
        let agent = Self {
            child: Some(child),
            log,
        };
        assert!(
            agent.wait_for_log("Consuming the queue.", Duration::from_secs(30)),
            "the agent did not start consuming:\n{}",
            agent.log()
        );
        agent
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        eventually(limit, || self.log().contains(needle))
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    queue_message::testing::free_port()
}
