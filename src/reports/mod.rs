//! The return path in the cloud: the queue-triggered `reports` function and the timer-triggered `watch`.
//!
//! `reports` receives one reports-queue message per invocation in the Data/Metadata protocol
//! (`{"Data": {"report": "<message text>"}, "Metadata": {"DequeueCount": …, "Id": …, …}}`), verifies it
//! with the signing key, and writes it to two independent sinks: incident comments (`comments`) and rows
//! (`ingest`, planned by `rows`). The answer tells the host what to do with the message:
//!
//! - 200: done, or failed for good (deleted incident 404, missing role 403, rejected rows 400, a report
//!   that does not verify): logged, counted, not retried.
//! - 503: a transient failure of either sink (5xx, 429 beyond the wait budget, timeouts, no token): the host
//!   makes the message visible again and, after `maxDequeueCount`, moves it to `<queue>-poison`.
//! - 400: not a host invocation at all (a protocol mismatch we want to see in the poison queue).
//!
//! Both sinks always run, so one failing never stops the other; work that succeeded is remembered per
//! report (`Recent`), so a retry redoes only what failed. `watch` (`watch`) counts every poison queue.

pub mod comments;
pub mod ingest;
pub mod rows;
pub mod token;
pub mod watch;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use queue_message::{Queue, Report, SigningKey};
use serde::Serialize;
use serde_json::{json, Value};

use crate::settings::ReportSettings;
use token::Tokens;

/// What one sink did with one piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written.
    Done,
    /// Failed for good; retrying cannot help. Logged and counted, the message is acknowledged.
    Permanent(String),
    /// Failed for now; the host should retry the message.
    Transient(String),
}

/// Counters since start-up; each change is also logged with the counter's name.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Reports verified and fully handled.
    pub reports_done: AtomicU64,
    /// Reports that did not verify (acknowledged, one `poisoned` row).
    pub reports_refused: AtomicU64,
    /// Reports acknowledged and dropped because no sink is configured.
    pub reports_dropped_unconfigured: AtomicU64,
    /// Invocations answered 503 for a transient failure.
    pub transient_failures: AtomicU64,
    /// Comments written (first time or again).
    pub comments_written: AtomicU64,
    /// Comments that failed for good (404, 403, 400).
    pub comments_failed: AtomicU64,
    /// Rows accepted by Logs Ingestion.
    pub rows_written: AtomicU64,
    /// Batches that failed for good (400, 403, 404, 413 of a single row).
    pub batches_failed: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Work already done, by key (`comment:<id>`, `rows:<report>:<stream>:<batch>`), bounded: the oldest keys
/// are forgotten first. A retry that lands on another instance redoes the work; comments stay single
/// because their ids are deterministic, rows may then repeat (`ReportId` tells them apart).
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    const CAPACITY: usize = 20_000;

    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Everything the two functions need.
#[derive(Debug)]
pub struct Reports {
    /// Where to write.
    pub settings: ReportSettings,
    /// Verifies reports (the block messages' key).
    pub keys: Vec<SigningKey>,
    /// Bearer tokens.
    pub tokens: Arc<dyn Tokens>,
    /// Outbound HTTP (ARM, Logs Ingestion).
    pub http: reqwest::Client,
    /// `(site, poison queue)` pairs `watch` counts.
    pub poison_queues: Vec<(String, Arc<Queue>)>,
    /// Counters.
    pub stats: Stats,
    /// The clock.
    pub clock: fn() -> DateTime<Utc>,
    recent: Mutex<Recent>,
}

/// The answer to the host: a status and the lines for the invocation log.
#[derive(Debug)]
pub struct Answer {
    /// 200, 400 or 503.
    pub status: StatusCode,
    /// Lines for `Logs`.
    pub logs: Vec<String>,
}

impl Answer {
    /// The host's response body: `{"Outputs": {}, "Logs": [...], "ReturnValue": null}`.
    pub fn body(&self) -> Value {
        json!({ "Outputs": {}, "Logs": self.logs, "ReturnValue": null })
    }
}

/// The outbound HTTP client: bounded time per call, no redirects (a token must not follow one).
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A network error without its URL (the URL is not secret, but keep logs short and uniform).
pub(crate) fn describe_reqwest(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        let kind = if err.is_body() || err.is_decode() {
            "the response could not be read"
        } else if err.is_redirect() {
            "redirected (not followed)"
        } else {
            "request failed"
        };
        kind.to_owned()
    }
}

/// The `error.code` of an Azure error body (`{"error": {"code", "message"}}`), or nothing. The message is
/// not kept: it can quote request content.
pub(crate) async fn error_code(response: reqwest::Response) -> String {
    let header = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Option<Value> = response.json().await.ok();
    let code = body
        .as_ref()
        .and_then(|b| b.pointer("/error/code"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(header)
        .unwrap_or_default();
    crate::alert::clip(&code, 80)
}

/// The message text and dequeue count of a queue-trigger invocation.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueInvocation {
    /// The message text, unwrapped from the host's JSON encoding.
    pub text: String,
    /// `Metadata.DequeueCount` (number or string), 0 if absent.
    pub dequeue_count: u64,
    /// `Metadata.Id`, unquoted.
    pub message_id: String,
}

/// A string the host may have JSON-encoded once more (`"\"…\""`): decoded again when it is.
fn unquote(text: &str) -> String {
    if text.starts_with('"') {
        if let Ok(Value::String(inner)) = serde_json::from_str::<Value>(text) {
            return inner;
        }
    }
    text.to_owned()
}

/// Parses `{"Data": {"report": …}, "Metadata": {…}}`. The message arrives as a string (possibly encoded
/// twice) or, when the host parsed the JSON text, as an object.
pub fn parse_invocation(bytes: &[u8], binding: &str) -> Result<QueueInvocation, String> {
    let envelope: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the invocation is not JSON: {e}"))?;
    let get = |v: &Value, key: &str| -> Option<Value> {
        v.as_object().and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        })
    };
    let data = get(&envelope, "Data").ok_or("expected {\"Data\": {…}, \"Metadata\": {…}}")?;
    let item =
        get(&data, binding).ok_or_else(|| format!("the invocation has no `Data.{binding}`"))?;
    let text = match item {
        Value::String(s) => unquote(&s),
        other @ Value::Object(_) => other.to_string(),
        _ => {
            return Err(format!(
                "`Data.{binding}` is neither a string nor an object"
            ))
        }
    };
    let metadata = get(&envelope, "Metadata").unwrap_or(Value::Null);
    let dequeue_count = match get(&metadata, "DequeueCount") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => unquote(&s).trim().parse().unwrap_or(0),
        _ => 0,
    };
    let message_id = match get(&metadata, "Id") {
        Some(Value::String(s)) => unquote(&s),
        _ => String::new(),
    };
    Ok(QueueInvocation {
        text,
        dequeue_count,
        message_id: crate::alert::clip(&message_id, 80),
    })
}

impl Reports {
    /// The state of both functions. No I/O.
    pub fn new(
        settings: ReportSettings,
        keys: Vec<SigningKey>,
        tokens: Arc<dyn Tokens>,
        poison_queues: Vec<(String, Arc<Queue>)>,
    ) -> Result<Self, String> {
        Ok(Self {
            settings,
            keys,
            tokens,
            http: http_client()?,
            poison_queues,
            stats: Stats::default(),
            clock: Utc::now,
            recent: Mutex::new(Recent::default()),
        })
    }

    /// True when at least one sink is configured.
    pub fn has_sink(&self) -> bool {
        self.settings.comments || self.settings.logs.is_some()
    }

    /// A line for start-up logs saying what the return path will do.
    pub fn describe(&self) -> String {
        match (self.settings.comments, &self.settings.logs) {
            (true, Some(_)) => "reports: incident comments and event rows".to_owned(),
            (true, None) => "reports: incident comments only (PORTCULLIS_LOGS_ENDPOINT / PORTCULLIS_LOGS_RULE_ID unset: no event rows)".to_owned(),
            (false, Some(_)) => "reports: event rows only (PORTCULLIS_SENTINEL_COMMENTS=false)".to_owned(),
            (false, None) => "reports: NO sink (comments off, logs settings unset): reports are acknowledged and dropped".to_owned(),
        }
    }

    fn done(&self, key: &str) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(key)
    }

    fn remember(&self, key: String) {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
    }

    /// Handles one `reports` invocation body; the answer's last log line is the counters since start-up
    /// (they reach the invocation log in Application Insights).
    pub async fn invoke(&self, body: &[u8]) -> Answer {
        let mut answer = self.invoke_inner(body).await;
        answer.logs.push(format!(
            "counters {}",
            serde_json::to_string(&self.stats).unwrap_or_default()
        ));
        answer
    }

    async fn invoke_inner(&self, body: &[u8]) -> Answer {
        let invocation = match parse_invocation(body, "report") {
            Ok(i) => i,
            Err(why) => {
                tracing::warn!(problem = %why, "Not a queue-trigger invocation; answered 400.");
                return Answer {
                    status: StatusCode::BAD_REQUEST,
                    logs: vec![why],
                };
            }
        };
        let report = match Report::decode(&invocation.text, &self.keys) {
            Ok(report) => report,
            Err(err) => return self.refused(&invocation, &err.to_string()).await,
        };
        if !self.has_sink() {
            bump(&self.stats.reports_dropped_unconfigured, 1);
            tracing::warn!(
                report_id = %report.id,
                site = %report.site,
                counter = "reports_dropped_unconfigured",
                "Report acknowledged and dropped: no sink is configured."
            );
            return Answer {
                status: StatusCode::OK,
                logs: vec![format!("report {} dropped: no sink configured", report.id)],
            };
        }
        let planned = rows::plan(&report, self.settings.workbook_url.as_deref());
        let (comments, events, firewall) = tokio::join!(
            self.write_comments(&report, &planned.comments),
            self.write_rows(&report, self.events_stream(), &planned.events),
            self.write_rows(&report, self.firewall_stream(), &planned.firewall),
        );
        let mut logs = vec![format!(
            "report {} from {} (delivery {}, message {})",
            report.id, report.site, invocation.dequeue_count, invocation.message_id
        )];
        let mut transient = false;
        for outcome in comments.into_iter().chain(events).chain(firewall) {
            match outcome {
                Outcome::Done => {}
                Outcome::Permanent(why) => {
                    tracing::warn!(report_id = %report.id, site = %report.site, problem = %why, "Report sink failed for good; not retried.");
                    logs.push(format!("permanent: {why}"));
                }
                Outcome::Transient(why) => {
                    tracing::warn!(report_id = %report.id, site = %report.site, problem = %why, delivery = invocation.dequeue_count, "Report sink failed for now; the host will retry.");
                    logs.push(format!("transient: {why}"));
                    transient = true;
                }
            }
        }
        if transient {
            bump(&self.stats.transient_failures, 1);
            Answer {
                status: StatusCode::SERVICE_UNAVAILABLE,
                logs,
            }
        } else {
            bump(&self.stats.reports_done, 1);
            tracing::info!(report_id = %report.id, site = %report.site, "Report handled.");
            Answer {
                status: StatusCode::OK,
                logs,
            }
        }
    }

    fn events_stream(&self) -> Option<&str> {
        self.settings
            .logs
            .as_ref()
            .map(|l| l.events_stream.as_str())
    }

    fn firewall_stream(&self) -> Option<&str> {
        self.settings
            .logs
            .as_ref()
            .map(|l| l.firewall_stream.as_str())
    }

    async fn refused(&self, invocation: &QueueInvocation, why: &str) -> Answer {
        bump(&self.stats.reports_refused, 1);
        let claimed = serde_json::from_str::<Value>(&invocation.text)
            .ok()
            .and_then(|v| v.get("site").and_then(Value::as_str).map(str::to_owned));
        tracing::warn!(
            message_id = %invocation.message_id,
            problem = %why,
            counter = "reports_refused",
            "Report refused (does not verify); acknowledged, recorded as poisoned."
        );
        let mut logs = vec![format!("report refused: {why}")];
        let row = rows::refused_report_row(&(self.clock)(), why, claimed.as_deref());
        let key = format!("refused:{}", invocation.message_id);
        let outcomes = if invocation.message_id.is_empty() || !self.done(&key) {
            let outcomes = self.upload(self.events_stream(), &key, &[row]).await;
            if outcomes.iter().all(|o| *o == Outcome::Done) && !invocation.message_id.is_empty() {
                self.remember(key);
            }
            outcomes
        } else {
            Vec::new()
        };
        let mut status = StatusCode::OK;
        for o in outcomes {
            if let Outcome::Transient(w) = o {
                status = StatusCode::SERVICE_UNAVAILABLE;
                logs.push(format!("transient: {w}"));
            }
        }
        Answer { status, logs }
    }

    async fn write_comments(&self, report: &Report, comments: &[(String, String)]) -> Vec<Outcome> {
        if !self.settings.comments {
            return Vec::new();
        }
        let mut outcomes = Vec::new();
        for (incident, text) in comments {
            let id = comments::comment_id(&report.id, incident);
            let key = format!("comment:{id}");
            if self.done(&key) {
                continue;
            }
            let outcome = comments::put_comment(
                &self.http,
                self.tokens.as_ref(),
                &self.settings.arm_endpoint,
                incident,
                &id,
                text,
            )
            .await;
            match &outcome {
                Outcome::Done => {
                    bump(&self.stats.comments_written, 1);
                    self.remember(key);
                }
                Outcome::Permanent(_) => {
                    bump(&self.stats.comments_failed, 1);
                    // Failed for good: do not try again on a retry caused by the other sink.
                    self.remember(key);
                }
                Outcome::Transient(_) => {}
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    async fn write_rows(
        &self,
        report: &Report,
        stream: Option<&str>,
        rows: &[Value],
    ) -> Vec<Outcome> {
        if rows.is_empty() {
            return Vec::new();
        }
        let key = format!("rows:{}", report.id);
        self.upload(stream, &key, rows).await
    }

    /// Uploads `rows` to `stream` in batches, skipping batches already done under `key`.
    async fn upload(&self, stream: Option<&str>, key: &str, rows: &[Value]) -> Vec<Outcome> {
        let (Some(logs), Some(stream)) = (self.settings.logs.as_ref(), stream) else {
            return Vec::new();
        };
        let mut outcomes = Vec::new();
        let mut waited = Duration::ZERO;
        for (i, batch) in ingest::batches(rows).into_iter().enumerate() {
            let batch_key = format!("{key}:{stream}:{i}");
            if self.done(&batch_key) {
                continue;
            }
            let count = batch.len() as u64;
            let outcome = ingest::upload(
                &self.http,
                self.tokens.as_ref(),
                logs,
                stream,
                batch,
                &mut waited,
            )
            .await;
            match &outcome {
                Outcome::Done => {
                    bump(&self.stats.rows_written, count);
                    self.remember(batch_key);
                }
                Outcome::Permanent(_) => {
                    bump(&self.stats.batches_failed, 1);
                    self.remember(batch_key);
                }
                Outcome::Transient(_) => {
                    outcomes.push(outcome);
                    // Later batches would meet the same outage; the retry does them.
                    break;
                }
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Writes rows to the events stream (for `watch`); same outcome rules as reports.
    pub(crate) async fn upload_events(&self, key: &str, rows: &[Value]) -> Vec<Outcome> {
        self.upload(self.events_stream(), key, rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_in_every_spelling_the_host_uses() {
        let text = r#"{"v":1,"id":"x"}"#;
        let plain = json!({"Data": {"report": text}, "Metadata": {"DequeueCount": 2, "Id": "abc"}});
        let twice = json!({"Data": {"report": serde_json::to_string(text).unwrap()}, "Metadata": {"DequeueCount": "3", "Id": "\"abc\""}});
        let object = json!({"Data": {"Report": {"v": 1, "id": "x"}}, "Metadata": {}});
        let a = parse_invocation(plain.to_string().as_bytes(), "report").unwrap();
        assert_eq!(
            (a.text.as_str(), a.dequeue_count, a.message_id.as_str()),
            (text, 2, "abc")
        );
        let b = parse_invocation(twice.to_string().as_bytes(), "report").unwrap();
        assert_eq!(
            (b.text.as_str(), b.dequeue_count, b.message_id.as_str()),
            (text, 3, "abc")
        );
        let c = parse_invocation(object.to_string().as_bytes(), "report").unwrap();
        assert_eq!(
            serde_json::to_value(Stats::default()).unwrap()["reports_refused"],
            0,
            "counters serialise as plain numbers"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&c.text).unwrap(),
            json!({"v": 1, "id": "x"})
        );
        assert!(parse_invocation(b"[]", "report").is_err());
        assert!(parse_invocation(br#"{"Data": {"req": {}}}"#, "report").is_err());
        assert!(parse_invocation(br#"{"Data": {"report": 5}}"#, "report").is_err());
    }

    /// If the host hands the message over as a parsed object (key order lost), the report still verifies:
    /// the signature covers canonical bytes rebuilt from the parsed fields.
    #[test]
    fn a_report_delivered_as_an_object_still_verifies() {
        let key = SigningKey::from_bytes(vec![4; 32]).unwrap();
        let report = Report {
            id: uuid::Uuid::from_u128(9),
            site: "home".to_owned(),
            agent_version: "0.1.0".to_owned(),
            created_at: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 1, 6, 0, 0).unwrap(),
            body: queue_message::ReportBody::Heartbeat(queue_message::Heartbeat {
                backend: "nftables".to_owned(),
                healthy: true,
                problems: Vec::new(),
                active_blocks: 3,
                last_commit_at: None,
                outbox_depth: 0,
                poisoned_since_last: 0,
            }),
        };
        let object: Value = serde_json::from_str(&report.encode(&key)).unwrap();
        for data in [object.clone(), Value::String(object.to_string())] {
            let envelope = json!({"Data": {"report": data}, "Metadata": {"DequeueCount": 1}});
            let invocation = parse_invocation(envelope.to_string().as_bytes(), "report").unwrap();
            assert_eq!(
                Report::decode(&invocation.text, std::slice::from_ref(&key)).unwrap(),
                report
            );
        }
    }

    #[test]
    fn recent_forgets_the_oldest() {
        let mut r = Recent::default();
        for i in 0..=Recent::CAPACITY {
            r.insert(i.to_string());
        }
        assert!(!r.contains("0"));
        assert!(r.contains("1"));
        assert!(r.contains(&Recent::CAPACITY.to_string()));
    }
}
