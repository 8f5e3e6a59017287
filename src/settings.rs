//! Settings: the environment the handler reads, in one table ([`SETTINGS`]) that both the parser and
//! `--list-settings` use, so the documentation cannot drift from the code.
//!
//! [`Settings::from_lookup`] validates everything and reports *every* problem at once; nothing downstream
//! sees a raw string. Secrets (the signing key, connection strings) never appear in errors or `Debug`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::Duration;
use ipnet::IpNet;
use queue_message::{parse_duration, SigningKey};
pub use queue_message::{valid_queue_name, LogFormat, QueueAccess};
use serde::Serialize;

use crate::plan::TtlTable;

/// One setting: its name, whether it is required, its default and what it does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Setting {
    /// Environment variable name.
    pub name: &'static str,
    /// Start-up fails without it.
    pub required: bool,
    /// Value used when unset (`None`: no default).
    pub default: Option<&'static str>,
    /// What it does.
    pub description: &'static str,
}

const fn setting(
    name: &'static str,
    required: bool,
    default: Option<&'static str>,
    description: &'static str,
) -> Setting {
    Setting {
        name,
        required,
        default,
        description,
    }
}

/// Every setting the handler reads.
pub const SETTINGS: &[Setting] = &[
    setting("FUNCTIONS_CUSTOMHANDLER_PORT", false, None,
        "Port on 127.0.0.1 to listen on; set by the Functions host. Required unless `--listen ADDR` is given."),
    setting("PORTCULLIS_SIGNING_KEY", true, None,
        "Base64 HMAC-SHA256 key (at least 32 bytes, e.g. `openssl rand -base64 32`) that signs every message; the agent verifies with the same key."),
    setting("PORTCULLIS_QUEUE", false, None,
        "Queue connection string (`UseDevelopmentStorage=true`, `AccountName=…;AccountKey=…`, `…;SharedAccessSignature=…`) or a SAS URL. One of PORTCULLIS_QUEUE or PORTCULLIS_QUEUE__queueServiceUri is required."),
    setting("PORTCULLIS_QUEUE__queueServiceUri", false, None,
        "Queue service URI (https://<account>.queue.core.windows.net) reached with the app's managed identity. One of PORTCULLIS_QUEUE or PORTCULLIS_QUEUE__queueServiceUri is required."),
    setting("PORTCULLIS_QUEUE__clientId", false, None,
        "Client id of a user-assigned managed identity (with PORTCULLIS_QUEUE__queueServiceUri); unset = system-assigned."),
    setting("PORTCULLIS_QUEUES", false, Some("portcullis"),
        "Comma-separated queue names; every message goes to every queue (one queue per site or firewall)."),
    setting("PORTCULLIS_CREATE_QUEUES", false, Some("false"),
        "`true` creates missing queues (Azurite and development; in Azure the deployment creates them)."),
    setting("PORTCULLIS_ALLOWLIST", false, Some(""),
        "Comma-separated CIDRs that are never blocked, on top of the IANA special-purpose ranges."),
    setting("PORTCULLIS_LAB_RANGES", false, Some(""),
        "Comma-separated CIDRs carved back out of the special-purpose ranges (labs and tests); never out of the allowlist."),
    setting("PORTCULLIS_MIN_PREFIX_V4", false, Some("16"),
        "Broadest IPv4 network that may be blocked (prefix length, 0-32)."),
    setting("PORTCULLIS_MIN_PREFIX_V6", false, Some("32"),
        "Broadest IPv6 network that may be blocked (prefix length, 0-128)."),
    setting("PORTCULLIS_MAX_TARGETS", false, Some("1000"),
        "Most distinct targets one request may name; above it the whole request is refused (422)."),
    setting("PORTCULLIS_TTL_INFORMATIONAL", false, Some("P1D"),
        "Block lifetime (ISO-8601 duration) for Informational severity (Azure Monitor Sev4)."),
    setting("PORTCULLIS_TTL_LOW", false, Some("P3D"),
        "Block lifetime for Low severity (Azure Monitor Sev3)."),
    setting("PORTCULLIS_TTL_MEDIUM", false, Some("P7D"),
        "Block lifetime for Medium severity (Azure Monitor Sev2), unknown severities and manual blocks without `ttl`."),
    setting("PORTCULLIS_TTL_HIGH", false, Some("P30D"),
        "Block lifetime for High severity (Azure Monitor Sev0, Sev1)."),
    setting("PORTCULLIS_MAX_TTL", false, Some("P90D"),
        "Cap on every block's lifetime (also over PortcullisBlockFor, ValidUntil and `ttl`); unblock messages live this long."),
    setting("PORTCULLIS_MAX_BODY_BYTES", false, Some("4194304"),
        "Largest request body accepted (413 above)."),
    setting("PORTCULLIS_IP_DIMENSIONS", false, Some(""),
        "Comma-separated Azure Monitor dimension names whose values are targets; empty = any dimension whose value parses as an IP address or network."),
    setting("PORTCULLIS_RULE_IDS", false, Some(""),
        "Comma-separated analytics rule ids (GUIDs or `…/alertRules/<guid>` resource ids) whose alerts may block. When an incident carries alerts, only the entities of alerts from these rules are blocked (Defender-portal correlation merges other alerts into incidents); empty = every alert counts. Incidents without alerts are not affected."),
    setting("PORTCULLIS_REPORTS_QUEUE", false, Some("portcullis-reports"),
        "The reports queue the agents write to and the `reports` function reads (also the `queueName` of function-definitions/reports). `watch` counts its `-poison` queue and every PORTCULLIS_QUEUES one."),
    setting("PORTCULLIS_LOGS_ENDPOINT", false, None,
        "Logs Ingestion endpoint: the data collection rule's `logsIngestion` endpoint (or a DCE's). `https://` (or `http://` to a loopback address, for tests). Unset: no event rows."),
    setting("PORTCULLIS_LOGS_RULE_ID", false, None,
        "Immutable id of the data collection rule (`dcr-…`). Needed with PORTCULLIS_LOGS_ENDPOINT."),
    setting("PORTCULLIS_LOGS_STREAM", false, Some("Custom-PortcullisEvents"),
        "Stream for commit, heartbeat and poison-queue rows (table PortcullisEvents_CL)."),
    setting("PORTCULLIS_LOGS_FIREWALL_STREAM", false, Some("Custom-PortcullisFirewall"),
        "Stream for firewall log batches (table PortcullisFirewall_CL)."),
    setting("PORTCULLIS_SENTINEL_COMMENTS", false, Some("true"),
        "`true` comments every report on the Sentinel incident its block came from (needs Microsoft Sentinel Responder)."),
    setting("PORTCULLIS_ARM_ENDPOINT", false, Some("https://management.azure.com"),
        "Azure Resource Manager endpoint for incident comments; `https://` (or `http://` to a loopback address, for tests)."),
    setting("PORTCULLIS_WORKBOOK_URL", false, None,
        "Link to the Portcullis workbook, added to incident comments when set."),
    setting("PORTCULLIS_LOG_FORMAT", false, Some("text"),
        "`text` or `json` (one JSON object per line)."),
    setting("RUST_LOG", false, Some("portcullis=info,queue_message=info"),
        "Log filter (tracing EnvFilter syntax)."),
];

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`.
    pub port: Option<u16>,
    /// `PORTCULLIS_SIGNING_KEY`.
    pub signing_key: SigningKey,
    /// `PORTCULLIS_QUEUE` or `PORTCULLIS_QUEUE__queueServiceUri` (+ `__clientId`).
    pub queue: QueueAccess,
    /// `PORTCULLIS_QUEUES`.
    pub queues: Vec<String>,
    /// `PORTCULLIS_QUEUES` was set explicitly.
    pub queues_explicit: bool,
    /// `PORTCULLIS_CREATE_QUEUES`.
    pub create_queues: bool,
    /// `PORTCULLIS_ALLOWLIST`.
    pub allowlist: Vec<IpNet>,
    /// `PORTCULLIS_LAB_RANGES`.
    pub lab_ranges: Vec<IpNet>,
    /// `PORTCULLIS_MIN_PREFIX_V4`.
    pub min_prefix_v4: u8,
    /// `PORTCULLIS_MIN_PREFIX_V6`.
    pub min_prefix_v6: u8,
    /// `PORTCULLIS_MAX_TARGETS`.
    pub max_targets: usize,
    /// `PORTCULLIS_TTL_*` and `PORTCULLIS_MAX_TTL`.
    pub ttl: TtlTable,
    /// `PORTCULLIS_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `PORTCULLIS_IP_DIMENSIONS`, lower case.
    pub ip_dimensions: Vec<String>,
    /// `PORTCULLIS_RULE_IDS`, as lower-case GUIDs.
    pub rule_ids: Vec<String>,
    /// `PORTCULLIS_REPORTS_QUEUE`, `PORTCULLIS_LOGS_*`, `PORTCULLIS_SENTINEL_COMMENTS`,
    /// `PORTCULLIS_ARM_ENDPOINT`, `PORTCULLIS_WORKBOOK_URL`.
    pub reports: ReportSettings,
    /// `PORTCULLIS_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`.
    pub log_filter: String,
}

/// Where the `reports` and `watch` functions write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// `PORTCULLIS_REPORTS_QUEUE`.
    pub queue: String,
    /// `PORTCULLIS_LOGS_ENDPOINT` + `PORTCULLIS_LOGS_RULE_ID` + the two streams; `None` without both.
    pub logs: Option<LogsSettings>,
    /// `PORTCULLIS_SENTINEL_COMMENTS`.
    pub comments: bool,
    /// `PORTCULLIS_ARM_ENDPOINT`, without a trailing slash.
    pub arm_endpoint: url::Url,
    /// `PORTCULLIS_WORKBOOK_URL`.
    pub workbook_url: Option<String>,
}

/// The Logs Ingestion target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsSettings {
    /// `PORTCULLIS_LOGS_ENDPOINT`.
    pub endpoint: url::Url,
    /// `PORTCULLIS_LOGS_RULE_ID`.
    pub rule_id: String,
    /// `PORTCULLIS_LOGS_STREAM`.
    pub events_stream: String,
    /// `PORTCULLIS_LOGS_FIREWALL_STREAM`.
    pub firewall_stream: String,
}

/// An endpoint URL: `https://`, or `http://` only to a loopback address (tests).
fn endpoint_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|_| "is not a URL".to_owned())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("may use http:// only for a loopback address; use https://".to_owned()),
        _ => Err("must be an https:// URL".to_owned()),
    }
}

/// Every problem found in the settings, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

/// Reads settings through a lookup function and records which names were read (so a test can check the
/// table and the parser agree).
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    read: Mutex<BTreeSet<&'static str>>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn spec(name: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.name == name)
    }

    /// The raw value, or the table's default; empty values count as unset.
    fn raw(&mut self, name: &'static str) -> Option<String> {
        let spec = Self::spec(name);
        if spec.is_none() {
            self.problems.push(format!(
                "internal error: setting {name} is missing from the table"
            ));
        }
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name);
        let value = (self.lookup)(name).filter(|v| !v.trim().is_empty());
        value.or_else(|| spec.and_then(|s| s.default).map(str::to_owned))
    }

    fn parse<T>(
        &mut self,
        name: &'static str,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.raw(name)?;
        let parsed = f(raw.trim());
        if parsed.is_none() {
            self.problems.push(format!(
                "{name}: `{}` is not {what}",
                crate::alert::clip(raw.trim(), 80)
            ));
        }
        parsed
    }

    fn duration(&mut self, name: &'static str, fallback: Duration) -> Duration {
        self.parse(
            name,
            "a positive ISO-8601 duration (e.g. P7D, PT12H)",
            |v| parse_duration(v).ok().filter(|d| *d > Duration::zero()),
        )
        .unwrap_or(fallback)
    }

    fn cidrs(&mut self, name: &'static str) -> Vec<IpNet> {
        let Some(raw) = self.raw(name) else {
            return Vec::new();
        };
        let mut nets = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match queue_message::Target::parse(item) {
                Ok(t) => nets.push(t.net()),
                Err(err) => self.problems.push(format!("{name}: {err}")),
            }
        }
        nets
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        Self::read(lookup).0
    }

    fn read(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> (Result<Self, SettingsError>, BTreeSet<&'static str>) {
        let mut r = Reader {
            lookup,
            read: Mutex::new(BTreeSet::new()),
            problems: Vec::new(),
        };
        let port = r.parse(
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "a port number (1-65535)",
            |v| v.parse::<u16>().ok().filter(|p| *p > 0),
        );
        let signing_key = match r.raw("PORTCULLIS_SIGNING_KEY") {
            None => {
                r.problems.push(
                    "PORTCULLIS_SIGNING_KEY is required (base64, at least 32 bytes; e.g. `openssl rand -base64 32`)"
                        .to_owned(),
                );
                None
            }
            Some(text) => match SigningKey::from_base64(&text) {
                Ok(key) => Some(key),
                Err(err) => {
                    r.problems.push(format!("PORTCULLIS_SIGNING_KEY: {err}"));
                    None
                }
            },
        };
        let connection = r.raw("PORTCULLIS_QUEUE");
        let service_uri = r.raw("PORTCULLIS_QUEUE__queueServiceUri");
        let client_id = r.raw("PORTCULLIS_QUEUE__clientId");
        let queue = match (connection, service_uri) {
            (Some(_), Some(_)) => {
                r.problems.push(
                    "set either PORTCULLIS_QUEUE (connection string) or PORTCULLIS_QUEUE__queueServiceUri (managed identity), not both"
                        .to_owned(),
                );
                None
            }
            (Some(text), None) => {
                if client_id.is_some() {
                    r.problems.push(
                        "PORTCULLIS_QUEUE__clientId only applies with PORTCULLIS_QUEUE__queueServiceUri".to_owned(),
                    );
                }
                Some(QueueAccess::ConnectionText(text.trim().to_owned()))
            }
            (None, Some(uri)) => Some(QueueAccess::ManagedIdentity {
                service_uri: uri.trim().to_owned(),
                client_id: client_id.map(|c| c.trim().to_owned()),
            }),
            (None, None) => {
                r.problems.push(
                    "one of PORTCULLIS_QUEUE (connection string or SAS URL) or PORTCULLIS_QUEUE__queueServiceUri (managed identity) is required"
                        .to_owned(),
                );
                None
            }
        };
        let queues_explicit = lookup("PORTCULLIS_QUEUES").is_some_and(|v| !v.trim().is_empty());
        let queues: Vec<String> = r
            .raw("PORTCULLIS_QUEUES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if queues.is_empty() {
            r.problems
                .push("PORTCULLIS_QUEUES names no queue".to_owned());
        }
        for name in &queues {
            if !valid_queue_name(name) {
                r.problems.push(format!(
                    "PORTCULLIS_QUEUES: `{}` is not a valid queue name (3-63 lower-case letters, digits and single hyphens)",
                    crate::alert::clip(name, 80)
                ));
            }
        }
        let create_queues = r
            .parse("PORTCULLIS_CREATE_QUEUES", "`true` or `false`", |v| match v
                .to_ascii_lowercase()
                .as_str()
            {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" => Some(false),
                _ => None,
            })
            .unwrap_or(false);
        let allowlist = r.cidrs("PORTCULLIS_ALLOWLIST");
        let lab_ranges = r.cidrs("PORTCULLIS_LAB_RANGES");
        let min_prefix_v4 = r
            .parse("PORTCULLIS_MIN_PREFIX_V4", "a prefix length 0-32", |v| {
                v.parse::<u8>().ok().filter(|p| *p <= 32)
            })
            .unwrap_or(16);
        let min_prefix_v6 = r
            .parse("PORTCULLIS_MIN_PREFIX_V6", "a prefix length 0-128", |v| {
                v.parse::<u8>().ok().filter(|p| *p <= 128)
            })
            .unwrap_or(32);
        let max_targets = r
            .parse("PORTCULLIS_MAX_TARGETS", "a positive number", |v| {
                v.parse::<usize>().ok().filter(|n| *n > 0)
            })
            .unwrap_or(1000);
        let defaults = TtlTable::default();
        let ttl = TtlTable {
            informational: r.duration("PORTCULLIS_TTL_INFORMATIONAL", defaults.informational),
            low: r.duration("PORTCULLIS_TTL_LOW", defaults.low),
            medium: r.duration("PORTCULLIS_TTL_MEDIUM", defaults.medium),
            high: r.duration("PORTCULLIS_TTL_HIGH", defaults.high),
            max: r.duration("PORTCULLIS_MAX_TTL", defaults.max),
        };
        if ttl.max > Duration::seconds(i64::from(i32::MAX)) {
            r.problems.push("PORTCULLIS_MAX_TTL: at most about 68 years (queue message lifetimes are 32-bit seconds)".to_owned());
        }
        let max_body_bytes = r
            .parse(
                "PORTCULLIS_MAX_BODY_BYTES",
                "a positive number of bytes",
                |v| v.parse::<usize>().ok().filter(|n| *n > 0),
            )
            .unwrap_or(4 * 1024 * 1024);
        let ip_dimensions = r
            .raw("PORTCULLIS_IP_DIMENSIONS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let mut rule_ids = Vec::new();
        for text in r.raw("PORTCULLIS_RULE_IDS").unwrap_or_default().split(',') {
            if text.trim().is_empty() {
                continue;
            }
            match crate::alert::incident::normalise_rule_id(text) {
                Some(id) => rule_ids.push(id),
                None => r.problems.push(format!(
                    "PORTCULLIS_RULE_IDS: `{}` is neither a rule GUID nor a `…/alertRules/<guid>` resource id",
                    crate::alert::clip(text.trim(), 200)
                )),
            }
        }
        let reports = read_reports(&mut r);
        let log_format = r
            .parse("PORTCULLIS_LOG_FORMAT", "`text` or `json`", |v| {
                v.parse::<LogFormat>().ok()
            })
            .unwrap_or(LogFormat::Text);
        let log_filter = r.raw("RUST_LOG").unwrap_or_default();

        let read = r.read.lock().map(|s| s.clone()).unwrap_or_default();
        let result = match (signing_key, queue) {
            (Some(signing_key), Some(queue)) if r.problems.is_empty() => Ok(Self {
                port,
                signing_key,
                queue,
                queues,
                queues_explicit,
                create_queues,
                allowlist,
                lab_ranges,
                min_prefix_v4,
                min_prefix_v6,
                max_targets,
                ttl,
                max_body_bytes,
                ip_dimensions,
                rule_ids,
                reports,
                log_format,
                log_filter,
            }),
            _ => Err(SettingsError(r.problems)),
        };
        (result, read)
    }
}

fn read_reports(r: &mut Reader<'_>) -> ReportSettings {
    let queue = r.raw("PORTCULLIS_REPORTS_QUEUE").unwrap_or_default();
    let queue = queue.trim().to_owned();
    if !valid_queue_name(&queue) || queue.len() > 63 - "-poison".len() {
        r.problems.push(format!(
            "PORTCULLIS_REPORTS_QUEUE: `{}` is not a valid queue name with room for `-poison` (3-56 lower-case letters, digits and single hyphens)",
            crate::alert::clip(&queue, 80)
        ));
    }
    let endpoint = |r: &mut Reader<'_>, name: &'static str| -> Option<url::Url> {
        let raw = r.raw(name)?;
        match endpoint_url(&raw) {
            Ok(url) => Some(url),
            Err(why) => {
                r.problems.push(format!("{name} {why}"));
                None
            }
        }
    };
    let logs_endpoint = endpoint(r, "PORTCULLIS_LOGS_ENDPOINT");
    let rule_id = r
        .raw("PORTCULLIS_LOGS_RULE_ID")
        .map(|v| v.trim().to_owned());
    let events_stream = r.raw("PORTCULLIS_LOGS_STREAM").unwrap_or_default();
    let firewall_stream = r.raw("PORTCULLIS_LOGS_FIREWALL_STREAM").unwrap_or_default();
    for (name, stream) in [
        ("PORTCULLIS_LOGS_STREAM", &events_stream),
        ("PORTCULLIS_LOGS_FIREWALL_STREAM", &firewall_stream),
    ] {
        let ok = stream.starts_with("Custom-")
            && stream.len() > "Custom-".len()
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            r.problems.push(format!(
                "{name}: `{}` is not a stream name (`Custom-` and letters, digits, `-`, `_`)",
                crate::alert::clip(stream, 80)
            ));
        }
    }
    if let Some(id) = &rule_id {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            r.problems.push(format!(
                "PORTCULLIS_LOGS_RULE_ID: `{}` is not a data collection rule immutable id (`dcr-` and hex digits)",
                crate::alert::clip(id, 80)
            ));
        }
    }
    let logs = match (logs_endpoint, rule_id) {
        (Some(endpoint), Some(rule_id)) => Some(LogsSettings {
            endpoint,
            rule_id,
            events_stream: events_stream.trim().to_owned(),
            firewall_stream: firewall_stream.trim().to_owned(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            r.problems.push(
                "PORTCULLIS_LOGS_ENDPOINT is set but PORTCULLIS_LOGS_RULE_ID is not; set both or neither"
                    .to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            if lookup_is_set(r, "PORTCULLIS_LOGS_ENDPOINT") {
                // The endpoint was set but refused; its problem is already reported.
            } else {
                r.problems.push(
                    "PORTCULLIS_LOGS_RULE_ID is set but PORTCULLIS_LOGS_ENDPOINT is not; set both or neither"
                        .to_owned(),
                );
            }
            None
        }
    };
    let comments = r
        .parse(
            "PORTCULLIS_SENTINEL_COMMENTS",
            "`true` or `false`",
            parse_bool,
        )
        .unwrap_or(true);
    let arm_endpoint = endpoint(r, "PORTCULLIS_ARM_ENDPOINT")
        .unwrap_or_else(|| url::Url::parse("https://management.azure.com").expect("a valid URL"));
    let workbook_url = r
        .raw("PORTCULLIS_WORKBOOK_URL")
        .map(|v| v.trim().to_owned());
    ReportSettings {
        queue,
        logs,
        comments,
        arm_endpoint,
        workbook_url,
    }
}

fn lookup_is_set(r: &Reader<'_>, name: &str) -> bool {
    (r.lookup)(name).is_some_and(|v| !v.trim().is_empty())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `--list-settings`: the table as a JSON array of `{"name", "required", "default", "description"}`.
pub fn list_settings_json() -> String {
    serde_json::to_string_pretty(SETTINGS).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(&move |name| map.get(name).cloned())
    }

    /// The key the handler reads from its setting signs the shared known answer byte for byte.
    #[test]
    fn the_configured_key_signs_the_known_answer() {
        let s = with(&[
            (
                "PORTCULLIS_SIGNING_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ])
        .unwrap();
        let text = queue_message::golden::message().encode(&s.signing_key);
        assert_eq!(text, queue_message::golden::TEXT);
    }

    #[test]
    fn minimal_settings_take_the_defaults() {
        let s = with(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ])
        .unwrap();
        assert_eq!(s.port, None);
        assert_eq!(s.queues, ["portcullis"]);
        assert!(!s.queues_explicit);
        assert!(!s.create_queues);
        assert_eq!(
            (s.min_prefix_v4, s.min_prefix_v6, s.max_targets),
            (16, 32, 1000)
        );
        assert_eq!(s.ttl, TtlTable::default());
        assert_eq!(s.max_body_bytes, 4_194_304);
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(
            !format!("{s:?}").contains("UseDevelopmentStorage"),
            "connection strings are secret"
        );
    }

    #[test]
    fn the_table_and_the_parser_agree() {
        let (_, read) = Settings::read(&|_| None);
        let table: BTreeSet<&str> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(read, table);
        assert_eq!(
            SETTINGS
                .iter()
                .filter(|s| s.required)
                .map(|s| s.name)
                .collect::<Vec<_>>(),
            ["PORTCULLIS_SIGNING_KEY"]
        );
        let listed: serde_json::Value = serde_json::from_str(&list_settings_json()).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), SETTINGS.len());
        assert_eq!(listed[5]["name"], "PORTCULLIS_QUEUES");
        assert_eq!(listed[5]["default"], "portcullis");
        assert_eq!(listed[2]["default"], serde_json::Value::Null);
    }

    #[test]
    fn every_problem_is_reported_at_once_without_secrets() {
        let err = with(&[
            ("PORTCULLIS_SIGNING_KEY", "c2hvcnQ="),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "http"),
            ("PORTCULLIS_QUEUES", "Bad_Name,ok-queue"),
            ("PORTCULLIS_ALLOWLIST", "10.0.0.1/8, 192.0.2.0/24"),
            ("PORTCULLIS_TTL_HIGH", "P1M"),
            ("PORTCULLIS_MIN_PREFIX_V4", "33"),
            ("PORTCULLIS_LOG_FORMAT", "xml"),
            ("PORTCULLIS_CREATE_QUEUES", "maybe"),
        ])
        .unwrap_err();
        assert_eq!(err.0.len(), 9, "{err}");
        assert!(err.to_string().contains("one of PORTCULLIS_QUEUE"));
        assert!(!err.to_string().contains("c2hvcnQ"));
    }

    #[test]
    fn managed_identity_and_exclusivity() {
        let s = with(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            (
                "PORTCULLIS_QUEUE__queueServiceUri",
                "https://acct.queue.core.windows.net",
            ),
            ("PORTCULLIS_QUEUE__clientId", "0000-1111"),
        ])
        .unwrap();
        assert!(matches!(
            s.queue,
            QueueAccess::ManagedIdentity {
                client_id: Some(_),
                ..
            }
        ));
        let err = with(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            (
                "PORTCULLIS_QUEUE__queueServiceUri",
                "https://acct.queue.core.windows.net",
            ),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not both"));
    }

    #[test]
    fn return_path_settings() {
        let base = [
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
        ];
        let s = with(&base).unwrap();
        assert_eq!(s.reports.queue, "portcullis-reports");
        assert!(s.reports.comments);
        assert!(s.reports.logs.is_none());
        assert_eq!(
            s.reports.arm_endpoint.as_str(),
            "https://management.azure.com/"
        );

        let mut full = base.to_vec();
        full.extend([
            (
                "PORTCULLIS_LOGS_ENDPOINT",
                "https://dcr-x.westeurope-1.ingest.monitor.azure.com",
            ),
            ("PORTCULLIS_LOGS_RULE_ID", "dcr-0123456789abcdef"),
            ("PORTCULLIS_ARM_ENDPOINT", "http://127.0.0.1:8123"),
            ("PORTCULLIS_SENTINEL_COMMENTS", "false"),
        ]);
        let s = with(&full).unwrap();
        let logs = s.reports.logs.unwrap();
        assert_eq!(logs.rule_id, "dcr-0123456789abcdef");
        assert_eq!(logs.events_stream, "Custom-PortcullisEvents");
        assert_eq!(logs.firewall_stream, "Custom-PortcullisFirewall");
        assert!(!s.reports.comments);

        let mut bad = base.to_vec();
        bad.extend([
            ("PORTCULLIS_LOGS_ENDPOINT", "http://ingest.example.com"),
            ("PORTCULLIS_ARM_ENDPOINT", "ftp://127.0.0.1"),
            ("PORTCULLIS_LOGS_STREAM", "PortcullisEvents"),
            (
                "PORTCULLIS_REPORTS_QUEUE",
                "a-very-long-reports-queue-name-that-leaves-no-room-for-poison",
            ),
        ]);
        let err = with(&bad).unwrap_err().to_string();
        assert!(
            err.contains("PORTCULLIS_LOGS_ENDPOINT may use http:// only for a loopback"),
            "{err}"
        );
        assert!(
            err.contains("PORTCULLIS_ARM_ENDPOINT must be an https:// URL"),
            "{err}"
        );
        assert!(err.contains("PORTCULLIS_LOGS_STREAM"), "{err}");
        assert!(err.contains("PORTCULLIS_REPORTS_QUEUE"), "{err}");
        assert!(!err.contains("PORTCULLIS_LOGS_RULE_ID is set"), "{err}");

        let mut half = base.to_vec();
        half.push(("PORTCULLIS_LOGS_RULE_ID", "dcr-01"));
        assert!(with(&half)
            .unwrap_err()
            .to_string()
            .contains("set both or neither"));
    }

    #[test]
    fn queue_names() {
        for ok in ["portcullis", "site-1", "abc", &"a".repeat(63)] {
            assert!(valid_queue_name(ok), "{ok}");
        }
        for bad in ["ab", "Site", "a--b", "-ab", "ab-", "a_b", &"a".repeat(64)] {
            assert!(!valid_queue_name(bad), "{bad}");
        }
    }

    #[test]
    fn rule_ids_are_guids_or_rule_resource_ids() {
        let s = with(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            (
                "PORTCULLIS_RULE_IDS",
                " 2F1E9C4A-8B0D-4F3E-9A57-1C2D3E4F5A6B ,, /subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/alertRules/0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
            ),
        ])
        .unwrap();
        assert_eq!(
            s.rule_ids,
            [
                "2f1e9c4a-8b0d-4f3e-9a57-1c2d3e4f5a6b",
                "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
            ]
        );
        let err = with(&[
            ("PORTCULLIS_SIGNING_KEY", KEY),
            ("PORTCULLIS_QUEUE", "UseDevelopmentStorage=true"),
            ("PORTCULLIS_RULE_IDS", "Portcullis TI rule"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("PORTCULLIS_RULE_IDS"), "{err}");
    }
}
