//! One request, whatever the host mode: body → [`Alert`] → [`Plan`] → signed messages in every queue →
//! [`Reply`].
//!
//! [`AppState`] holds what every request needs; outside dependencies (the queues, the clock) are injected,
//! so tests and benchmarks run the same code with [`crate::enqueue::MemoryQueues`].

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use queue_message::{BlockMessage, QueueConnection, SigningKey};
use serde_json::json;
use uuid::Uuid;

use crate::alert::{self, Alert, ExtractConfig, ParseError};
use crate::enqueue::{Enqueue, StorageQueues};
use crate::error::{ApiError, Reply};
use crate::manual::{self, ManualError};
use crate::plan::{Plan, Policy, Status};
use crate::settings::{QueueAccess, Settings};

/// Queue API version sent to loopback (Azurite) endpoints (the agent sends the same).
pub const AZURITE_API_VERSION: &str = queue_message::AZURITE_API_VERSION;

/// Retries of one queue operation after the first attempt. Together with [`QUEUE_RETRY_WINDOW`] this
/// answers a dead queue with a 503 within about 15 s instead of the SDK's ~80 s, so the caller (a Logic
/// App, an action group) retries on its own schedule instead of timing out.
pub const QUEUE_MAX_RETRIES: u32 = 3;

/// No queue retry starts later than this after the first attempt.
pub const QUEUE_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Which function was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `alerts`: every alert payload kind, auto-detected.
    Alerts,
    /// `blocks`: the manual API.
    Blocks,
}

impl Function {
    /// The function (folder) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Blocks => "blocks",
        }
    }
}

/// What every request needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The never-block policy, lifetimes and target limit.
    pub policy: Policy,
    /// Extraction knobs.
    pub extract: ExtractConfig,
    /// Signs every message.
    pub signing_key: SigningKey,
    /// Where messages go.
    pub queues: Arc<dyn Enqueue>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// The clock (tests pin it).
    pub clock: fn() -> DateTime<Utc>,
    /// The `reports` and `watch` functions; `None` in states built without settings (tests, benchmarks),
    /// where both acknowledge and drop.
    pub reports: Option<Arc<crate::reports::Reports>>,
}

impl AppState {
    /// State with the default policy and limits.
    pub fn new(signing_key: SigningKey, queues: Arc<dyn Enqueue>) -> Self {
        Self {
            policy: Policy::default(),
            extract: ExtractConfig::default(),
            signing_key,
            queues,
            max_body_bytes: 4 * 1024 * 1024,
            clock: Utc::now,
            reports: None,
        }
    }

    /// State from validated settings, with Azure Storage queues. Also returns the queues, so the caller can
    /// create missing ones in the background. No I/O happens here.
    pub fn from_settings(settings: &Settings) -> Result<(Self, Arc<StorageQueues>), String> {
        let connection = connect(&settings.queue, settings.create_queues)?;
        let mut names = settings.queues.clone();
        if let Some(hint) = connection.queue_hint() {
            if !settings.queues_explicit {
                names = vec![hint.to_owned()];
            } else if names.iter().any(|n| n != hint) {
                return Err(format!(
                    "PORTCULLIS_QUEUE is a SAS URL for queue `{hint}`, but PORTCULLIS_QUEUES names other queues"
                ));
            }
        }
        let queues = Arc::new(StorageQueues::new(
            &connection,
            &names,
            settings.create_queues,
        ));
        let state = Self {
            policy: Policy {
                never: queue_message::NeverBlock::new(
                    settings.allowlist.clone(),
                    settings.lab_ranges.clone(),
                    settings.min_prefix_v4,
                    settings.min_prefix_v6,
                ),
                ttl: settings.ttl.clone(),
                max_targets: settings.max_targets,
            },
            extract: ExtractConfig {
                ip_dimensions: settings.ip_dimensions.clone(),
                rule_ids: settings.rule_ids.clone(),
                ..ExtractConfig::for_max_targets(settings.max_targets)
            },
            signing_key: settings.signing_key.clone(),
            queues: Arc::clone(&queues) as Arc<dyn Enqueue>,
            max_body_bytes: settings.max_body_bytes,
            clock: Utc::now,
            reports: Some(Arc::new(reports_from_settings(settings)?)),
        };
        Ok((state, queues))
    }
}

/// The return path's state: the signing key verifies reports, tokens come from the managed identity of
/// the queue connection (system-assigned unless `PORTCULLIS_QUEUE__clientId`), and `watch` reads the
/// poison queue of every block queue and of the reports queue with a read-only connection.
fn reports_from_settings(settings: &Settings) -> Result<crate::reports::Reports, String> {
    let client_id = match &settings.queue {
        QueueAccess::ManagedIdentity { client_id, .. } => client_id.as_deref(),
        _ => None,
    };
    let tokens = crate::reports::token::ManagedIdentityTokens::new(client_id)?;
    let reader = connect_with(&settings.queue, "r")?;
    let reader_hint = reader.queue_hint().map(str::to_owned);
    let mut poison_queues = Vec::new();
    // A SAS URL reaches one queue only; its poison queue is out of its reach, so nothing is counted then.
    if reader_hint.is_none() {
        for site in &settings.queues {
            poison_queues.push((
                site.clone(),
                Arc::new(reader.queue(&format!("{site}-poison"))),
            ));
        }
        let reports = &settings.reports.queue;
        poison_queues.push((
            reports.clone(),
            Arc::new(reader.queue(&format!("{reports}-poison"))),
        ));
    }
    crate::reports::Reports::new(
        settings.reports.clone(),
        vec![settings.signing_key.clone()],
        Arc::new(tokens),
        poison_queues,
    )
}

/// Builds the queue connection (no I/O). Errors name the setting, never its value. Retries are bounded
/// ([`QUEUE_MAX_RETRIES`], [`QUEUE_RETRY_WINDOW`]), and an account SAS derived from an account key grants
/// only what the handler does: add messages, and create queues when `create_queues` is set.
pub fn connect(access: &QueueAccess, create_queues: bool) -> Result<Arc<QueueConnection>, String> {
    connect_with(access, if create_queues { "ac" } else { "a" })
}

/// [`connect`] with the given account-SAS permissions (`r` for `watch`'s counts).
fn connect_with(
    access: &QueueAccess,
    permissions: &'static str,
) -> Result<Arc<QueueConnection>, String> {
    let setting = match access {
        QueueAccess::ConnectionText(_) => "PORTCULLIS_QUEUE",
        _ => "PORTCULLIS_QUEUE__queueServiceUri",
    };
    let connection = access.connect().map_err(|e| format!("{setting}: {e}"))?;
    let loopback = queue_message::is_loopback(connection.service_url());
    let connection = connection
        .with_retry(QUEUE_MAX_RETRIES, QUEUE_RETRY_WINDOW)
        .with_account_sas_permissions(permissions);
    Ok(Arc::new(if loopback {
        connection.with_api_version(AZURITE_API_VERSION)
    } else {
        connection
    }))
}

/// True for `application/json`, `text/json` and `application/*+json`, with any parameters.
pub fn is_json_content_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json"
        || mime == "text/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The result of one request: the reply and a one-line summary for logs.
#[derive(Debug)]
pub struct Processed {
    /// What the caller gets.
    pub reply: Reply,
    /// What the logs get (no secrets, no payload excerpts beyond the summary).
    pub summary: String,
}

/// Handles one request body. `content_type` is `None` when the request had none (accepted as JSON).
pub async fn process(
    state: &AppState,
    function: Function,
    content_type: Option<&str>,
    body: &[u8],
) -> Processed {
    match try_process(state, function, content_type, body).await {
        Ok(processed) => processed,
        Err(err) => {
            let reply = err.reply();
            let summary = format!("{}: {} {err}", function.name(), reply.status.as_u16());
            match &err {
                ApiError::QueueUnavailable(cause) => {
                    tracing::error!(function = function.name(), error = %cause, "Queue write failed; answered 503.");
                }
                _ => tracing::info!(
                    function = function.name(),
                    status = reply.status.as_u16(),
                    problem = %err,
                    "Request refused."
                ),
            }
            Processed { reply, summary }
        }
    }
}

async fn try_process(
    state: &AppState,
    function: Function,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Processed, ApiError> {
    if let Some(ct) = content_type {
        if !is_json_content_type(ct) {
            return Err(ApiError::UnsupportedMediaType(alert::clip(ct, 100)));
        }
    }
    if body.len() > state.max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: state.max_body_bytes,
        });
    }
    let alert = match function {
        Function::Alerts => alert::parse(body, &state.extract).map_err(|e| match e {
            ParseError::Json(err) => ApiError::malformed(&err),
            ParseError::UnknownKind => ApiError::UnknownKind,
        })?,
        Function::Blocks => manual::parse(body).map_err(|e| match e {
            ManualError::Json(err) => ApiError::malformed(&err),
            ManualError::Invalid(problems) => ApiError::InvalidRequest(problems),
        })?,
    };
    let now = (state.clock)();
    let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let plan = state.policy.plan(&alert, now)?;
    let mut message_ids = Vec::new();
    if let (Some(action), Some(expires_at)) = (plan.action, plan.expires_at) {
        if !plan.targets.is_empty() {
            let template = BlockMessage {
                id: Uuid::new_v4(),
                action,
                targets: Vec::new(),
                expires_at,
                reason: alert.reason.clone(),
                source: alert.source.clone(),
                issued_at: now,
            };
            let messages = BlockMessage::pack(&template, &plan.targets, &state.signing_key);
            let texts: Vec<String> = messages
                .iter()
                .map(|m| m.encode(&state.signing_key))
                .collect();
            // A message lives until the block ends: after that it could only block an expired target.
            let ttl_secs = (expires_at - now).num_seconds().max(1);
            state.queues.send(&texts, ttl_secs).await?;
            message_ids = messages.iter().map(|m| m.id).collect();
        }
    }
    Ok(respond(state, &alert, &plan, &message_ids))
}

fn respond(state: &AppState, alert: &Alert, plan: &Plan, message_ids: &[Uuid]) -> Processed {
    let queued = plan
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Queued)
        .count();
    let skipped = plan.outcomes.len() - queued;
    let queues = state.queues.queue_names();
    let action = plan.action.map(|a| a.to_string());
    let mut body = json!({
        "status": if message_ids.is_empty() { "nothing-queued" } else { "queued" },
        "kind": alert.kind.as_str(),
        "action": action,
        "reason": alert.reason,
        "source": alert.source,
        "queued": queued,
        "skipped": skipped,
        "targets": plan.outcomes,
    });
    if let Some(expires_at) = plan.expires_at {
        body["expires_at"] = expires_at.to_rfc3339_opts(SecondsFormat::Secs, true).into();
    }
    if let Some(basis) = &plan.expiry_basis {
        body["expiry"] = basis.clone().into();
    }
    if let Some(why) = &plan.no_action {
        body["note"] = why.clone().into();
    }
    if !message_ids.is_empty() {
        body["messages"] = json!(message_ids);
        body["queues"] = json!(queues);
    }
    if !alert.details.notes.is_empty() {
        body["notes"] = json!(alert.details.notes);
    }
    let kind = alert.kind;
    let verb = action.as_deref().unwrap_or("no action");
    let count = message_ids.len();
    let target_queues = if message_ids.is_empty() {
        String::new()
    } else {
        format!(" in {}", queues.join(", "))
    };
    let summary = format!(
        "{kind}: {verb} {queued} queued, {skipped} skipped, {count} message(s){target_queues}"
    );

    tracing::info!(
        kind = alert.kind.as_str(),
        action = action.as_deref().unwrap_or("none"),
        source_id = alert.source.id.as_deref().unwrap_or(""),
        queued,
        skipped,
        messages = message_ids.len(),
        "Alert processed."
    );
    Processed {
        reply: Reply::json(axum::http::StatusCode::OK, body),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_connection_retries_briefly() {
        let access = QueueAccess::ConnectionText("UseDevelopmentStorage=true".to_owned());
        for create in [false, true] {
            let connection = connect(&access, create).unwrap();
            assert_eq!(
                connection.retry(),
                Some(queue_message::connection::RetryLimits {
                    max_retries: QUEUE_MAX_RETRIES,
                    max_total: QUEUE_RETRY_WINDOW,
                })
            );
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/json",
            "application/problem+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }
}
