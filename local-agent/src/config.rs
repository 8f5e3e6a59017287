//! The agent's configuration: one TOML file, unknown keys refused with the key named, secrets also from
//! environment variables or files.
//!
//! [`Config::load`] reads the file into raw serde structs (`deny_unknown_fields`, a doc on every field) and
//! turns them into validated types in one place ([`Config::from_toml`]), with every default there, so
//! nothing downstream sees a raw string. Secrets (the queue connection, the signing key, a client secret)
//! can be given inline, as `*_file` (systemd credentials, Docker secrets) or through an environment
//! variable; the environment variable wins, then the file, then the inline value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use queue_message::{valid_queue_name, LogFormat, NeverBlock, QueueAccess, SigningKey};
use serde::Deserialize;

use crate::backends::{BackendConfig, FirewallConfig};
use crate::span::Span;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/portcullis/agent.toml";

/// Environment variable with the queue connection string or SAS URL.
pub const ENV_CONNECTION: &str = "PORTCULLIS_QUEUE";
/// Environment variable with the SAS URL of the poison queue.
pub const ENV_POISON_CONNECTION: &str = "PORTCULLIS_POISON_QUEUE";
/// Environment variable with the reports queue's connection string or SAS URL (permission `a`).
pub const ENV_REPORTS_CONNECTION: &str = "PORTCULLIS_REPORTS_QUEUE";
/// Environment variable with the base64 signing key.
pub const ENV_SIGNING_KEY: &str = "PORTCULLIS_SIGNING_KEY";
/// Environment variable with the service principal's client secret.
pub const ENV_CLIENT_SECRET: &str = "PORTCULLIS_CLIENT_SECRET";

/// A configuration problem, naming the key (`firewall.nftables.hooks`, `queue.signing_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key or table.
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// A TOML error as its message and position only (issue 9 item 13).
///
/// `toml`'s `Display` quotes the offending line, so a typo next to `signing_key`, a SAS URL, a client
/// secret or an appliance password printed the secret to stderr and the journal. This keeps the message
/// (it names the bad or unknown key) and the line and column, and blanks every value the message itself
/// quotes (`invalid type: string "…"`, `integer `…``, `unknown variant `…``); key names stay readable.
/// `text` is the parsed document, for the line number; `None` when the error has no document (a
/// sub-table parsed from a `toml::Value`).
pub(crate) fn toml_problem(text: Option<&str>, err: &toml::de::Error) -> String {
    let message = redact_values(err.message().trim());
    match (text, err.span()) {
        (Some(text), Some(span)) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        _ => message,
    }
}

/// Blanks the values a serde/toml message quotes: every `"…"` string, and the backticked text after
/// `string`, `integer`, `float`, `variant` or `character` (keys in backticks are kept).
fn redact_values(message: &str) -> String {
    const VALUE_WORDS: [&str; 5] = ["string ", "integer ", "float ", "variant ", "character "];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(['"', '`']) {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let quote = &tail[..1];
        let Some(end) = tail[1..].find(quote) else {
            // An unterminated quote: drop the rest rather than risk a value.
            out.push_str(quote);
            out.push('…');
            return out;
        };
        let quoted = &tail[..end + 2];
        let is_value = quote == "\"" || VALUE_WORDS.iter().any(|w| out.ends_with(w));
        if is_value {
            out.push_str(quote);
            out.push('…');
            out.push_str(quote);
        } else {
            out.push_str(quoted);
        }
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    out
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Raw file format
// ---------------------------------------------------------------------------------------------------

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    queue: RawQueue,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    firewall: Option<FirewallConfig>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    log: RawLog,
    /// `[logs]`: parsed and validated in `logs::config`.
    #[serde(default)]
    logs: crate::logs::config::RawLogs,
    #[serde(default)]
    reports: RawReports,
}

/// `[reports]`: the return path (issue 10).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    /// Send commit reports and heartbeats (default true).
    enabled: Option<bool>,
    /// Reports queue name (default `portcullis-reports`).
    queue: Option<String>,
    /// Connection string or SAS URL with add-only rights (env `PORTCULLIS_REPORTS_QUEUE` wins; default: the
    /// `[queue]` connection).
    connection: Option<String>,
    /// File holding `connection`.
    connection_file: Option<PathBuf>,
    /// Site name in every report (default: the `[queue]` name).
    site: Option<String>,
    /// Interval between heartbeats (default 5m).
    heartbeat: Option<Span>,
}

/// `[queue]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    /// Connection string or SAS URL (env `PORTCULLIS_QUEUE` wins).
    connection: Option<String>,
    /// File holding the connection string or SAS URL.
    connection_file: Option<PathBuf>,
    /// `https://<account>.queue.core.windows.net`, with `[queue.credential]`.
    service_uri: Option<String>,
    /// Queue name (default `portcullis`, or the queue of a queue SAS URL).
    name: Option<String>,
    /// Poison queue name (default `<name>-poison`).
    poison_name: Option<String>,
    /// SAS URL of the poison queue, when `connection` is a queue-scoped SAS.
    poison_connection: Option<String>,
    /// File holding `poison_connection`.
    poison_connection_file: Option<PathBuf>,
    /// Base64 HMAC key, at least 32 bytes (env `PORTCULLIS_SIGNING_KEY` wins).
    signing_key: Option<String>,
    /// File holding the signing key.
    signing_key_file: Option<PathBuf>,
    /// Older keys still accepted during a rotation.
    #[serde(default)]
    previous_signing_keys: Vec<String>,
    /// How long received messages stay invisible (default 30s; raised to cover the batch window).
    visibility_timeout: Option<Span>,
    /// Longest sleep between polls when the queue is idle (default 1s).
    max_poll_interval: Option<Span>,
    /// Deliveries after which a failing message goes to the poison queue (default 5).
    max_dequeue_count: Option<u32>,
    /// Most messages collected into one batch within a backend's batch window (default 256).
    max_batch_messages: Option<usize>,
    /// Create the queue and poison queue if missing (needs more than the Processor role; development).
    #[serde(default)]
    create_queues: bool,
    /// Override the storage API version (`x-ms-version`), for emulators.
    api_version: Option<String>,
    /// Entra ID credential for `service_uri`.
    credential: Option<RawCredential>,
}

/// `[queue.credential]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    /// `client-secret` (default), `azure-cli` or `managed-identity`.
    kind: Option<String>,
    /// Directory (tenant) id.
    tenant_id: Option<String>,
    /// Application (client) id; for `managed-identity`, a user-assigned identity's client id.
    client_id: Option<String>,
    /// Client secret (env `PORTCULLIS_CLIENT_SECRET` wins).
    client_secret: Option<String>,
    /// File holding the client secret.
    client_secret_file: Option<PathBuf>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// SQLite database (default `/var/lib/portcullis/state.db`).
    path: Option<PathBuf>,
    /// Control socket for `block`, `unblock`, `sync`, `status` (default `agent.sock` beside the database).
    socket: Option<PathBuf>,
    /// How long audit events are kept (default 365d).
    audit_retention: Option<Span>,
}

/// `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// CIDRs never blocked here.
    #[serde(default)]
    allowlist: Vec<IpNet>,
    /// Special-purpose CIDRs that may be blocked anyway (labs, tests).
    #[serde(default)]
    lab_ranges: Vec<IpNet>,
    /// New blocks per hour beyond which the agent stops applying new blocks (default 5000).
    max_new_blocks_per_hour: Option<u32>,
    /// Refuse this host's interface addresses, default gateways and DNS servers (default true).
    protect_host_addresses: Option<bool>,
    /// Broadest IPv4 prefix that may be blocked (default 16).
    min_prefix_v4: Option<u8>,
    /// Broadest IPv6 prefix that may be blocked (default 32).
    min_prefix_v6: Option<u8>,
    /// Length of a `block` without `--for` (default 24h).
    manual_block_duration: Option<Span>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Address for `/metrics` and `/healthz`, e.g. `127.0.0.1:9464`.
    listen: SocketAddr,
    /// `/healthz` turns unhealthy when the queue or firewall has failed for this long (default 5m).
    unhealthy_after: Option<Span>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// `text` (default) or `json`.
    format: Option<LogFormat>,
    /// Default level filter, e.g. `info` or `portcullis_agent=debug` (`RUST_LOG` wins).
    level: Option<String>,
}

// ---------------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------------

/// The shared crate's connection for `connection` at `api_version` (no I/O).
pub fn connect(
    connection: &QueueAccess,
    api_version: Option<&str>,
) -> Result<queue_message::QueueConnection, queue_message::ConnectionError> {
    let built = connection.connect()?;
    // Like the handler: a loopback endpoint is Azurite, which refuses the SDK's newer default version.
    let loopback = queue_message::is_loopback(built.service_url());
    Ok(match (api_version, loopback) {
        (Some(v), _) => built.with_api_version(v),
        (None, true) => built.with_api_version(queue_message::AZURITE_API_VERSION),
        (None, false) => built,
    })
}

/// `[queue]`, validated.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The main queue's connection.
    pub connection: QueueAccess,
    /// The queue to consume.
    pub name: String,
    /// Where refused and failing messages go.
    pub poison_name: String,
    /// A separate connection for the poison queue (a queue-scoped SAS of it).
    pub poison_connection: Option<QueueAccess>,
    /// Verification keys: the current one first.
    pub keys: Vec<SigningKey>,
    /// Visibility timeout at receive.
    pub visibility_timeout: Span,
    /// Longest idle sleep between polls.
    pub max_poll_interval: Span,
    /// Deliveries before a failing message is poisoned.
    pub max_dequeue_count: u32,
    /// Cap on messages in one batch window.
    pub max_batch_messages: usize,
    /// Create queues if missing.
    pub create_queues: bool,
    /// `x-ms-version` override.
    pub api_version: Option<String>,
}

/// `[state]`, validated.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// The database file.
    pub path: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Audit retention.
    pub audit_retention: Span,
}

/// `[policy]`, validated.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Special-purpose ranges, allowlist, lab ranges, minimum prefixes (host addresses added at run time).
    pub never_block: NeverBlock,
    /// Add this host's addresses, gateways and DNS servers to the allowlist.
    pub protect_host_addresses: bool,
    /// Hourly cap on new blocks.
    pub max_new_blocks_per_hour: u32,
    /// Default length of a manual block.
    pub manual_block_duration: Span,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, Copy)]
pub struct MetricsSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Failure duration after which `/healthz` reports unhealthy.
    pub unhealthy_after: Span,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// Default filter.
    pub level: String,
}

/// `[firewall]`, validated.
#[derive(Debug, Clone)]
pub struct FirewallSettings {
    /// The backend and its typed settings.
    pub backend: BackendConfig,
    /// Reconcile period.
    pub reconcile_interval: Span,
}

/// `[reports]`, validated.
#[derive(Debug, Clone)]
pub struct ReportsSettings {
    /// Whether reports are sent at all.
    pub enabled: bool,
    /// The reports queue's name.
    pub queue: String,
    /// Its connection (the `[queue]` connection unless one was given).
    pub connection: QueueAccess,
    /// The site name reports carry.
    pub site: String,
    /// Interval between heartbeats.
    pub heartbeat: Span,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[queue]`.
    pub queue: QueueSettings,
    /// `[state]`.
    pub state: StateSettings,
    /// `[policy]`.
    pub policy: PolicySettings,
    /// `[firewall]`.
    pub firewall: FirewallSettings,
    /// `[metrics]`, if enabled.
    pub metrics: Option<MetricsSettings>,
    /// `[log]`.
    pub log: LogSettings,
    /// `[reports]`.
    pub reports: ReportsSettings,
    /// `[logs]` (firewall log receiver), if a listen address is set.
    pub logs: Option<crate::logs::config::LogsConfig>,
}

/// Where secrets come from besides the file: the process environment, or a map in tests.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.trim().is_empty())
    }
}

fn read_secret(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

/// Environment, then file, then inline.
fn secret(
    env: &dyn Env,
    env_name: &str,
    file_key: &str,
    file: Option<&PathBuf>,
    inline: Option<&String>,
) -> Result<Option<String>, ConfigError> {
    if let Some(v) = env.var(env_name) {
        return Ok(Some(v.trim().to_owned()));
    }
    if let Some(path) = file {
        return read_secret(file_key, path).map(Some);
    }
    Ok(inline
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

impl Config {
    /// Reads and validates the file at `path`, taking secrets from the process environment too.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("cannot read the configuration: {e}"),
            )
        })?;
        Self::from_toml(&text, &ProcessEnv)
    }

    /// Parses and validates configuration text. Reads only `*_file` secrets.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::new("agent.toml", toml_problem(Some(text), &e)))?;
        let queue = validate_queue(raw.queue, env)?;
        let reports = validate_reports(raw.reports, &queue, env)?;
        let state = validate_state(raw.state);
        let policy = validate_policy(raw.policy)?;
        let firewall = raw.firewall.unwrap_or_default();
        let reconcile_interval = firewall.reconcile_interval;
        if reconcile_interval.get() < std::time::Duration::from_secs(5) {
            return Err(ConfigError::new(
                "firewall.reconcile_interval",
                "must be at least 5s",
            ));
        }
        let firewall = FirewallSettings {
            backend: firewall.validate()?,
            reconcile_interval,
        };
        let metrics = raw.metrics.map(|m| MetricsSettings {
            listen: m.listen,
            unhealthy_after: m.unhealthy_after.unwrap_or(Span::secs(300)),
        });
        let log = LogSettings {
            format: raw.log.format.unwrap_or_default(),
            level: raw.log.level.unwrap_or_else(|| "info".to_owned()),
        };
        let logs = crate::logs::config::validate(raw.logs)?;
        Ok(Self {
            queue,
            state,
            policy,
            firewall,
            metrics,
            log,
            reports,
            logs,
        })
    }
}

fn validate_reports(
    raw: RawReports,
    queue: &QueueSettings,
    env: &dyn Env,
) -> Result<ReportsSettings, ConfigError> {
    let text = secret(
        env,
        ENV_REPORTS_CONNECTION,
        "reports.connection_file",
        raw.connection_file.as_ref(),
        raw.connection.as_ref(),
    )?;
    let hint = match &text {
        Some(text) => queue_message::QueueConnection::parse(text)
            .map_err(|e| ConfigError::new("reports.connection", e.to_string()))?
            .queue_hint()
            .map(str::to_owned),
        None => None,
    };
    let name = match (raw.queue, hint) {
        (Some(name), Some(hint)) if name != hint => {
            return Err(ConfigError::new(
                "reports.queue",
                format!("`{name}` differs from the queue `{hint}` named in the SAS URL"),
            ))
        }
        (Some(name), _) => name,
        (None, Some(hint)) => hint,
        (None, None) => "portcullis-reports".to_owned(),
    };
    if !valid_queue_name(&name) || name == queue.name || name == queue.poison_name {
        return Err(ConfigError::new(
            "reports.queue",
            format!(
                "`{name}` is not a queue name (3–63 lower-case letters, digits, single hyphens) different \
                 from the block and poison queues"
            ),
        ));
    }
    let heartbeat = raw.heartbeat.unwrap_or(Span::secs(300));
    if heartbeat.get() < std::time::Duration::from_secs(10) {
        return Err(ConfigError::new(
            "reports.heartbeat",
            "must be at least 10s",
        ));
    }
    let site = raw.site.unwrap_or_else(|| queue.name.clone());
    if site.trim().is_empty() {
        return Err(ConfigError::new("reports.site", "must not be empty"));
    }
    Ok(ReportsSettings {
        enabled: raw.enabled.unwrap_or(true),
        queue: name,
        connection: text
            .map(QueueAccess::ConnectionText)
            .unwrap_or_else(|| queue.connection.clone()),
        site,
        heartbeat,
    })
}

// Long: one check per `[queue]` key in file order, each naming its key. Not yet split (issue 8 item 5
// leaves the config validators for a later pass).
fn validate_queue(raw: RawQueue, env: &dyn Env) -> Result<QueueSettings, ConfigError> {
    let text = secret(
        env,
        ENV_CONNECTION,
        "queue.connection_file",
        raw.connection_file.as_ref(),
        raw.connection.as_ref(),
    )?;
    let connection = match (text, raw.service_uri) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "queue.service_uri",
                "give either `connection` (or PORTCULLIS_QUEUE) or `service_uri` with [queue.credential], not both",
            ))
        }
        (Some(text), None) => {
            if raw.credential.is_some() {
                return Err(ConfigError::new(
                    "queue.credential",
                    "a credential needs `service_uri` instead of `connection`",
                ));
            }
            queue_message::QueueConnection::parse(&text)
                .map_err(|e| ConfigError::new("queue.connection", e.to_string()))?;
            QueueAccess::ConnectionText(text)
        }
        (None, Some(uri)) => {
            let cred = raw.credential.ok_or_else(|| {
                ConfigError::new(
                    "queue.credential",
                    "`service_uri` needs a [queue.credential] table (client-secret, azure-cli or managed-identity)",
                )
            })?;
            if !uri.starts_with("https://") {
                return Err(ConfigError::new(
                    "queue.service_uri",
                    "must be https://<account>.queue.core.windows.net",
                ));
            }
            validate_credential(uri, cred, env)?
        }
        (None, None) => {
            return Err(ConfigError::new(
                "queue.connection",
                "missing: set `connection` (connection string or SAS URL), `connection_file`, the \
                 PORTCULLIS_QUEUE environment variable, or `service_uri` with [queue.credential]",
            ))
        }
    };
    let hint = match &connection {
        QueueAccess::ConnectionText(text) => queue_message::QueueConnection::parse(text)
            .ok()
            .and_then(|c| c.queue_hint().map(str::to_owned)),
        _ => None,
    };
    let name = match (raw.name, hint) {
        (Some(name), Some(hint)) if name != hint => {
            return Err(ConfigError::new(
                "queue.name",
                format!("`{name}` differs from the queue `{hint}` named in the SAS URL"),
            ))
        }
        (Some(name), _) => name,
        (None, Some(hint)) => hint,
        (None, None) => "portcullis".to_owned(),
    };
    if !valid_queue_name(&name) {
        return Err(ConfigError::new(
            "queue.name",
            format!(
                "`{name}` is not a queue name (3–63 lower-case letters, digits, single hyphens)"
            ),
        ));
    }
    let poison_name = raw.poison_name.unwrap_or_else(|| format!("{name}-poison"));
    if !valid_queue_name(&poison_name) || poison_name == name {
        return Err(ConfigError::new(
            "queue.poison_name",
            format!("`{poison_name}` is not a queue name different from `{name}`"),
        ));
    }
    let poison_connection = secret(
        env,
        ENV_POISON_CONNECTION,
        "queue.poison_connection_file",
        raw.poison_connection_file.as_ref(),
        raw.poison_connection.as_ref(),
    )?;
    let poison_connection = match poison_connection {
        Some(text) => {
            let parsed = queue_message::QueueConnection::parse(&text)
                .map_err(|e| ConfigError::new("queue.poison_connection", e.to_string()))?;
            if let Some(hint) = parsed.queue_hint() {
                if hint != poison_name {
                    return Err(ConfigError::new(
                        "queue.poison_connection",
                        format!("the SAS URL names queue `{hint}`, but the poison queue is `{poison_name}`"),
                    ));
                }
            }
            Some(QueueAccess::ConnectionText(text))
        }
        None => {
            if let QueueAccess::ConnectionText(text) = &connection {
                if queue_message::QueueConnection::parse(text)
                    .map(|c| c.queue_hint().is_some())
                    .unwrap_or(false)
                {
                    return Err(ConfigError::new(
                        "queue.poison_connection",
                        format!(
                            "a queue-scoped SAS URL cannot reach `{poison_name}`: add the poison queue's SAS URL \
                             (permission `a`) as `poison_connection` or PORTCULLIS_POISON_QUEUE"
                        ),
                    ));
                }
            }
            None
        }
    };
    let key_text = secret(
        env,
        ENV_SIGNING_KEY,
        "queue.signing_key_file",
        raw.signing_key_file.as_ref(),
        raw.signing_key.as_ref(),
    )?
    .ok_or_else(|| {
        ConfigError::new(
            "queue.signing_key",
            "missing: set `signing_key` (base64, the handler's PORTCULLIS_SIGNING_KEY), `signing_key_file` or \
             the PORTCULLIS_SIGNING_KEY environment variable",
        )
    })?;
    let mut keys = vec![SigningKey::from_base64(&key_text)
        .map_err(|e| ConfigError::new("queue.signing_key", e.to_string()))?];
    for (i, old) in raw.previous_signing_keys.iter().enumerate() {
        keys.push(SigningKey::from_base64(old).map_err(|e| {
            ConfigError::new(format!("queue.previous_signing_keys[{i}]"), e.to_string())
        })?);
    }
    let visibility_timeout = raw.visibility_timeout.unwrap_or(Span::secs(30));
    if visibility_timeout.get().as_secs() < 1 || visibility_timeout.get().as_secs() > 7 * 86_400 {
        return Err(ConfigError::new(
            "queue.visibility_timeout",
            "must be between 1s and 7d",
        ));
    }
    let max_poll_interval = raw.max_poll_interval.unwrap_or(Span::secs(1));
    if max_poll_interval.get().is_zero() || max_poll_interval.get().as_secs() > 300 {
        return Err(ConfigError::new(
            "queue.max_poll_interval",
            "must be between 1ms and 5m",
        ));
    }
    let max_dequeue_count = raw.max_dequeue_count.unwrap_or(5);
    if max_dequeue_count == 0 {
        return Err(ConfigError::new(
            "queue.max_dequeue_count",
            "must be at least 1",
        ));
    }
    let max_batch_messages = raw.max_batch_messages.unwrap_or(256);
    if max_batch_messages == 0 {
        return Err(ConfigError::new(
            "queue.max_batch_messages",
            "must be at least 1",
        ));
    }
    Ok(QueueSettings {
        connection,
        name,
        poison_name,
        poison_connection,
        keys,
        visibility_timeout,
        max_poll_interval,
        max_dequeue_count,
        max_batch_messages,
        create_queues: raw.create_queues,
        api_version: raw.api_version,
    })
}

fn validate_credential(
    service_uri: String,
    raw: RawCredential,
    env: &dyn Env,
) -> Result<QueueAccess, ConfigError> {
    let kind = raw.kind.as_deref().unwrap_or("client-secret");
    match kind {
        "client-secret" => {
            let tenant_id = raw.tenant_id.ok_or_else(|| {
                ConfigError::new("queue.credential.tenant_id", "missing (the directory id)")
            })?;
            let client_id = raw.client_id.ok_or_else(|| {
                ConfigError::new("queue.credential.client_id", "missing (the application id)")
            })?;
            let secret = secret(
                env,
                ENV_CLIENT_SECRET,
                "queue.credential.client_secret_file",
                raw.client_secret_file.as_ref(),
                raw.client_secret.as_ref(),
            )?
            .ok_or_else(|| {
                ConfigError::new(
                    "queue.credential.client_secret",
                    "missing: set `client_secret`, `client_secret_file` or PORTCULLIS_CLIENT_SECRET",
                )
            })?;
            Ok(QueueAccess::ClientSecret {
                service_uri,
                tenant_id,
                client_id,
                secret,
            })
        }
        "azure-cli" => Ok(QueueAccess::AzureCli { service_uri }),
        "managed-identity" => Ok(QueueAccess::ManagedIdentity {
            service_uri,
            client_id: raw.client_id,
        }),
        other => Err(ConfigError::new(
            "queue.credential.kind",
            format!("`{other}` is not one of client-secret, azure-cli, managed-identity"),
        )),
    }
}

fn validate_state(raw: RawState) -> StateSettings {
    let path = raw
        .path
        .unwrap_or_else(|| PathBuf::from("/var/lib/portcullis/state.db"));
    let socket = raw.socket.unwrap_or_else(|| {
        path.parent()
            .map(|d| d.join("agent.sock"))
            .unwrap_or_else(|| PathBuf::from("agent.sock"))
    });
    StateSettings {
        path,
        socket,
        audit_retention: raw.audit_retention.unwrap_or(Span::secs(365 * 86_400)),
    }
}

fn validate_policy(raw: RawPolicy) -> Result<PolicySettings, ConfigError> {
    let v4 = raw.min_prefix_v4.unwrap_or(16);
    let v6 = raw.min_prefix_v6.unwrap_or(32);
    if v4 > 32 {
        return Err(ConfigError::new("policy.min_prefix_v4", "must be 0–32"));
    }
    if v6 > 128 {
        return Err(ConfigError::new("policy.min_prefix_v6", "must be 0–128"));
    }
    let max = raw.max_new_blocks_per_hour.unwrap_or(5000);
    if max == 0 {
        return Err(ConfigError::new(
            "policy.max_new_blocks_per_hour",
            "must be at least 1",
        ));
    }
    let manual = raw.manual_block_duration.unwrap_or(Span::secs(86_400));
    if manual.get().as_secs() < 1 {
        return Err(ConfigError::new(
            "policy.manual_block_duration",
            "must be at least 1s",
        ));
    }
    Ok(PolicySettings {
        never_block: NeverBlock::new(raw.allowlist, raw.lab_ranges, v4, v6),
        protect_host_addresses: raw.protect_host_addresses.unwrap_or(true),
        max_new_blocks_per_hour: max,
        manual_block_duration: manual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::BackendKind;

    const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn minimal() -> String {
        format!("[queue]\nconnection = \"UseDevelopmentStorage=true\"\nsigning_key = \"{KEY}\"\n")
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../packaging/agent.toml");
        let config = Config::from_toml(text, &env(&[("PORTCULLIS_SIGNING_KEY", KEY)])).unwrap();
        assert_eq!(config.firewall.backend.kind(), BackendKind::Nftables);
        assert_eq!(config.queue.name, "portcullis");
        assert_eq!(config.policy.max_new_blocks_per_hour, 5000);
        assert_eq!(config.metrics.unwrap().listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn reports_default_to_the_queue_connection_and_name() {
        let c = Config::from_toml(&minimal(), &env(&[])).unwrap();
        assert!(c.reports.enabled);
        assert_eq!(c.reports.queue, "portcullis-reports");
        assert_eq!(c.reports.site, "portcullis");
        assert_eq!(c.reports.heartbeat, Span::secs(300));
        assert!(matches!(
            &c.reports.connection,
            QueueAccess::ConnectionText(t) if t == "UseDevelopmentStorage=true"
        ));
    }

    #[test]
    fn reports_take_their_own_sas_url_from_the_environment_and_check_its_queue() {
        let sas = "https://acct.queue.core.windows.net/site-reports?sv=2023-11-03&sp=a&sig=x";
        let text = format!(
            "{}[reports]\nsite = \"home\"\nheartbeat = \"1m\"\n",
            minimal()
        );
        let c = Config::from_toml(&text, &env(&[("PORTCULLIS_REPORTS_QUEUE", sas)])).unwrap();
        assert_eq!(c.reports.queue, "site-reports");
        assert_eq!(c.reports.site, "home");
        assert_eq!(c.reports.heartbeat, Span::secs(60));
        assert!(matches!(&c.reports.connection, QueueAccess::ConnectionText(t) if t == sas));

        let clash = format!("{}[reports]\nqueue = \"other\"\n", minimal());
        let e = Config::from_toml(&clash, &env(&[("PORTCULLIS_REPORTS_QUEUE", sas)])).unwrap_err();
        assert!(e.to_string().contains("reports.queue"), "{e}");
        let same = format!("{}[reports]\nqueue = \"portcullis\"\n", minimal());
        assert!(Config::from_toml(&same, &env(&[])).is_err());
        let unknown = format!("{}[reports]\nenable = false\n", minimal());
        assert!(Config::from_toml(&unknown, &env(&[])).is_err());
        let off = format!("{}[reports]\nenabled = false\n", minimal());
        assert!(!Config::from_toml(&off, &env(&[])).unwrap().reports.enabled);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_toml(&minimal(), &env(&[])).unwrap();
        assert_eq!(c.queue.name, "portcullis");
        assert_eq!(c.queue.poison_name, "portcullis-poison");
        assert_eq!(c.queue.visibility_timeout, Span::secs(30));
        assert_eq!(c.queue.max_poll_interval, Span::secs(1));
        assert_eq!(c.queue.max_dequeue_count, 5);
        assert_eq!(c.state.path, PathBuf::from("/var/lib/portcullis/state.db"));
        assert_eq!(
            c.state.socket,
            PathBuf::from("/var/lib/portcullis/agent.sock")
        );
        assert_eq!(c.policy.max_new_blocks_per_hour, 5000);
        assert!(c.policy.protect_host_addresses);
        assert_eq!(c.firewall.backend.kind(), BackendKind::DryRun);
        assert_eq!(c.firewall.reconcile_interval, Span::secs(300));
        assert!(c.metrics.is_none());
        assert_eq!(c.log.format, LogFormat::Text);
    }

    /// Issue 9 item 13: toml's error display quotes the offending line, so a typo in a secret's line
    /// printed the secret. Every secret key, broken three ways (bad escape, unterminated, bare value),
    /// and given the wrong type: the error names the position, never the value.
    #[test]
    fn toml_errors_never_print_a_secret() {
        const SECRET: &str = "S3cr3tValue-Do-Not-Print";
        let queue = "[queue]\nconnection = \"UseDevelopmentStorage=true\"\n";
        let firewall = |backend: &str| {
            format!("{queue}signing_key = \"{KEY}\"\n[firewall]\nbackend = \"{backend}\"\n[firewall.{backend}]\nurl = \"https://192.0.2.1\"\n")
        };
        let places: Vec<(String, &str)> = vec![
            (format!("[queue]\nsigning_key = \"{KEY}\"\n"), "connection"),
            (format!("[queue]\nsigning_key = \"{KEY}\"\n"), "connection"),
            (queue.to_owned(), "signing_key"),
            (
                format!("{queue}signing_key = \"{KEY}\"\n"),
                "poison_connection",
            ),
            (
                format!("{queue}signing_key = \"{KEY}\"\n[queue.credential]\n"),
                "client_secret",
            ),
            (firewall("unifi"), "password"),
            (firewall("unifi"), "api_key"),
            (firewall("opnsense"), "api_key"),
            (firewall("opnsense"), "api_secret"),
            (firewall("mikrotik"), "password"),
            (firewall("pfsense"), "api_key"),
        ];
        for (head, key) in &places {
            let line = head.lines().count() + 1;
            for broken in [
                format!("{key} = \"{SECRET}\\q\"\n"),
                format!("{key} = \"{SECRET}\nnext = 1\n"),
                format!("{key} = {SECRET}\n"),
                format!("{key} = [\"{SECRET}\", 1]\n"),
                format!("{key} = {{ a = \"{SECRET}\" }}\n"),
            ] {
                let text = format!("{head}{broken}");
                let err = Config::from_toml(&text, &env(&[])).unwrap_err().to_string();
                assert!(!err.contains("S3cr3t"), "{key}: {err}\n--- for ---\n{text}");
                assert!(
                    !err.contains("line") || err.contains(&format!("line {line}")),
                    "{key}: {err}"
                );
            }
        }
        // The array of previous keys, given a string, and a number where text belongs.
        for (text, line) in [
            (
                format!("{queue}signing_key = \"{KEY}\"\nprevious_signing_keys = \"{SECRET}\"\n"),
                4,
            ),
            (format!("{queue}signing_key = 1234567890123\n"), 3),
        ] {
            let err = Config::from_toml(&text, &env(&[])).unwrap_err().to_string();
            assert!(
                !err.contains("S3cr3t") && !err.contains("1234567890123"),
                "{err}"
            );
            assert!(err.contains(&format!("line {line}")), "{err}");
        }
    }

    #[test]
    fn redaction_keeps_key_names() {
        assert_eq!(
            redact_values("unknown field `colour`, expected one of `a`, `b`"),
            "unknown field `colour`, expected one of `a`, `b`"
        );
        assert_eq!(
            redact_values("invalid type: string \"x\", expected u32; unknown variant `y`"),
            "invalid type: string \"…\", expected u32; unknown variant `…`"
        );
        assert_eq!(redact_values("odd \"unterminated"), "odd \"…");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml(&format!("{}colour = 1\n", minimal()), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        let err = Config::from_toml(
            &format!("{}[policy]\nallow_list = []\n", minimal()),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("allow_list"), "{err}");
    }

    #[test]
    fn secrets_come_from_env_then_file_then_inline() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        let text = format!("[queue]\nsigning_key_file = \"{}\"\n", key_file.display());
        let c = Config::from_toml(
            &text,
            &env(&[("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true")]),
        )
        .unwrap();
        assert_eq!(c.queue.keys.len(), 1);
        assert!(
            matches!(c.queue.connection, QueueAccess::ConnectionText(ref t) if t == "UseDevelopmentStorage=true")
        );

        let err = Config::from_toml(
            "[queue]\nconnection = \"UseDevelopmentStorage=true\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.key, "queue.signing_key");
        let err = Config::from_toml(&format!("[queue]\nsigning_key = \"{KEY}\"\n"), &env(&[]))
            .unwrap_err();
        assert_eq!(err.key, "queue.connection");
        let err = Config::from_toml(
            "[queue]\nconnection = \"UseDevelopmentStorage=true\"\nsigning_key = \"c2hvcnQ=\"\n",
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.message.contains("at least 32"), "{err}");
    }

    #[test]
    fn a_queue_sas_url_names_the_queue_and_needs_a_poison_sas() {
        let sas = "https://acct.queue.core.windows.net/site1?sv=2022-11-02&sp=rp&sig=abc";
        let text = format!("[queue]\nconnection = \"{sas}\"\nsigning_key = \"{KEY}\"\n");
        let err = Config::from_toml(&text, &env(&[])).unwrap_err();
        assert_eq!(err.key, "queue.poison_connection");
        let poison = "https://acct.queue.core.windows.net/site1-poison?sv=2022-11-02&sp=a&sig=def";
        let c = Config::from_toml(&text, &env(&[("PORTCULLIS_POISON_QUEUE", poison)])).unwrap();
        assert_eq!(c.queue.name, "site1");
        assert_eq!(c.queue.poison_name, "site1-poison");
        assert!(!format!("{c:?}").contains("sig=abc"));
        assert!(!format!("{c:?}").contains("def"));
    }

    #[test]
    fn service_principal() {
        let text = format!(
            "[queue]\nservice_uri = \"https://acct.queue.core.windows.net\"\nsigning_key = \"{KEY}\"\n\
             [queue.credential]\ntenant_id = \"t\"\nclient_id = \"c\"\n"
        );
        let err = Config::from_toml(&text, &env(&[])).unwrap_err();
        assert_eq!(err.key, "queue.credential.client_secret");
        let c = Config::from_toml(&text, &env(&[("PORTCULLIS_CLIENT_SECRET", "s3cret")])).unwrap();
        assert!(matches!(
            c.queue.connection,
            QueueAccess::ClientSecret { .. }
        ));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            (
                "[policy]\nmax_new_blocks_per_hour = 0\n",
                "policy.max_new_blocks_per_hour",
            ),
            ("[policy]\nmin_prefix_v4 = 33\n", "policy.min_prefix_v4"),
            (
                "[firewall]\nbackend = \"dry-run\"\nreconcile_interval = \"1s\"\n",
                "firewall.reconcile_interval",
            ),
            (
                "[firewall]\nbackend = \"nftables\"\n[firewall.nftables]\nhooks = []\n",
                "firewall.nftables.hooks",
            ),
        ] {
            let err = Config::from_toml(&format!("{}{extra}", minimal()), &env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{extra}");
        }
        let err = Config::from_toml(
            &format!("[queue]\nconnection = \"UseDevelopmentStorage=true\"\nname = \"Bad_Name\"\nsigning_key = \"{KEY}\"\n"),
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(err.key, "queue.name");
    }

    // First-hour defect 2: `check` against the Azurite that `make tools` installs failed, because the agent sent
    // the SDK's API version, which Azurite refuses; the handler already sent an accepted one to loopback.
    #[test]
    fn loopback_endpoints_get_the_version_azurite_accepts() {
        let local = QueueAccess::ConnectionText("UseDevelopmentStorage=true".to_owned());
        assert_eq!(
            connect(&local, None).unwrap().api_version(),
            Some(queue_message::AZURITE_API_VERSION)
        );
        assert_eq!(
            connect(&local, Some("2024-08-04")).unwrap().api_version(),
            Some("2024-08-04")
        );
        let azure = QueueAccess::ConnectionText(
            "https://acct.queue.core.windows.net/q?sv=2024-11-04&sp=rp&sig=x".to_owned(),
        );
        assert_eq!(connect(&azure, None).unwrap().api_version(), None);
    }

    #[test]
    fn debug_of_a_connection_text_shows_its_kind_never_a_secret() {
        let key = "c2VjcmV0LWtleS1ieXRlcw==";
        for (text, kind) in [
            (
                format!("AccountKey={key};AccountName=acct;DefaultEndpointsProtocol=https"),
                "account-key connection string",
            ),
            (
                format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key}"),
                "account-key connection string",
            ),
            (
                format!("SharedAccessSignature=sv=2022&sig={key};QueueEndpoint=https://a.queue.core.windows.net"),
                "SAS connection string",
            ),
            (
                format!("https://acct.queue.core.windows.net/portcullis?sv=2022&sig={key}"),
                "SAS URL for acct.queue.core.windows.net/portcullis",
            ),
            (key.to_owned(), "unrecognised connection text"),
        ] {
            let shown = format!("{:?}", QueueAccess::ConnectionText(text.clone()));
            assert!(shown.contains(kind), "{shown}");
            assert!(!shown.contains(key), "{shown}");
            assert!(!shown.contains("sig="), "{shown}");
        }
    }
}
