//! The control socket: how `block`, `unblock`, `sync` and `status` reach a running daemon.
//!
//! A Unix socket beside the state database (mode 0600, so only root — the daemon's user — can use it),
//! one JSON request per line and one JSON response per line. Manual commands go through the same
//! [`Engine`] path as queue messages, so they are committed, recorded and audited the same way. When no
//! daemon runs, the CLI opens the state and the backend itself (see `cli`), holding the same lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use queue_message::{Source, Target};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::apply::{Applied, Engine, Group, Submission};
use crate::decide::{ClaimMeta, Intent, Op};
use crate::store::{AuditEvent, EventKind};

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Live status.
    Status,
    /// Block a target.
    Block {
        /// Address or CIDR.
        target: String,
        /// Length in seconds.
        for_secs: u64,
        /// Why.
        reason: Option<String>,
    },
    /// Lift every claim on a target.
    Unblock {
        /// Address or CIDR.
        target: String,
        /// Why.
        reason: Option<String>,
    },
    /// Reconcile now.
    Sync,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result (shape depends on the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Response {
    fn ok(result: impl Serialize) -> Self {
        Self {
            ok: true,
            error: None,
            result: serde_json::to_value(result).ok(),
        }
    }

    fn err(error: String) -> Self {
        Self {
            ok: false,
            error: Some(error),
            result: None,
        }
    }
}

/// Result of a manual block or unblock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManualResult {
    /// The canonical target.
    pub target: String,
    /// What happened: `blocked`, `extended`, `unchanged`, `unblocked`, `not-blocked`.
    pub outcome: String,
    /// The block's expiry afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

fn manual_source() -> Source {
    Source {
        kind: "manual".to_owned(),
        ..Source::default()
    }
}

fn outcome(applied: &Applied, blocking: bool) -> &'static str {
    match (blocking, applied) {
        (true, a) if a.blocked > 0 => "blocked",
        (true, a) if a.extended > 0 => "extended",
        (true, _) => "unchanged",
        (false, a) if a.unblocked > 0 => "unblocked",
        (false, _) => "not-blocked",
    }
}

/// A person's command on one target as a submission (claim `manual`, not rate-limited).
fn manual_submission(
    target: Target,
    intent: Intent,
    reason: String,
    detail: &str,
    now: DateTime<Utc>,
) -> Submission {
    let source = manual_source();
    Submission {
        ops: vec![Op {
            target,
            key: Arc::from(source.claim_key()),
            intent,
            meta: Arc::new(ClaimMeta {
                reason: reason.clone(),
                source,
                message_id: None,
            }),
            group: 0,
        }],
        groups: vec![Group {
            events: vec![AuditEvent::new(EventKind::Received, now)
                .target(&target)
                .claim("manual")
                .reason(reason)
                .detail(detail)],
            ..Group::default()
        }],
        rate_limited: false,
    }
}

/// Blocks `target` for `duration` on a person's behalf (claim `manual`, not rate-limited).
pub async fn manual_block(
    engine: &Engine,
    target: &str,
    duration: Duration,
    reason: Option<String>,
) -> Result<ManualResult, String> {
    let target = Target::parse(target).map_err(|e| e.to_string())?;
    engine
        .policy()
        .screen(&target)
        .map_err(|why| format!("{target} is never blocked here: {}", why.text))?;
    let now = engine.clock().now();
    // Checked: the duration may come from the control socket, not only from a parsed `--for`.
    let expires_at = chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| "the duration is too long".to_owned())?;
    let reason = reason.unwrap_or_else(|| "manual block".to_owned());
    let submission = manual_submission(
        target,
        Intent::Block { expires_at },
        reason,
        "block from the command line",
        now,
    );
    let applied = engine.apply(&submission).await.map_err(|e| e.to_string())?;
    let expires = engine
        .db()
        .call(move |s| s.claims_for([&target]))
        .await
        .ok()
        .and_then(|c| {
            c.get(&target)
                .and_then(|c| crate::decide::effective_expiry(c, engine.clock().now()))
        });
    Ok(ManualResult {
        target: target.to_string(),
        outcome: outcome(&applied, true).to_owned(),
        expires_at: expires,
    })
}

/// Lifts every claim on `target` on a person's behalf.
pub async fn manual_unblock(
    engine: &Engine,
    target: &str,
    reason: Option<String>,
) -> Result<ManualResult, String> {
    let target = Target::parse(target).map_err(|e| e.to_string())?;
    let reason = reason.unwrap_or_else(|| "manual unblock".to_owned());
    let submission = manual_submission(
        target,
        Intent::ReleaseAll,
        reason,
        "unblock from the command line",
        engine.clock().now(),
    );
    let applied = engine.apply(&submission).await.map_err(|e| e.to_string())?;
    Ok(ManualResult {
        target: target.to_string(),
        outcome: outcome(&applied, false).to_owned(),
        expires_at: None,
    })
}

/// What the server asks the daemon for `status` and `sync` (implemented by [`crate::daemon::Daemon`]).
#[async_trait::async_trait]
pub trait Handlers: Send + Sync {
    /// The live status report.
    async fn status(&self) -> serde_json::Value;
    /// Runs a reconcile and reports it.
    async fn sync(&self) -> serde_json::Value;
}

async fn handle(engine: &Engine, handlers: &dyn Handlers, line: &str) -> Response {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::err(format!("bad request: {e}")),
    };
    match request {
        Request::Status => Response::ok(handlers.status().await),
        Request::Sync => Response::ok(handlers.sync().await),
        Request::Block {
            target,
            for_secs,
            reason,
        } => match manual_block(engine, &target, Duration::from_secs(for_secs), reason).await {
            Ok(r) => Response::ok(r),
            Err(e) => Response::err(e),
        },
        Request::Unblock { target, reason } => {
            match manual_unblock(engine, &target, reason).await {
                Ok(r) => Response::ok(r),
                Err(e) => Response::err(e),
            }
        }
    }
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // The caller holds the state lock, so no other daemon is using it.
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// Serves requests until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    engine: Arc<Engine>,
    handlers: Arc<dyn Handlers>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "Control socket accept failed.");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let engine = Arc::clone(&engine);
        let handlers = Arc::clone(&handlers);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = handle(&engine, handlers.as_ref(), &line).await;
                let mut text = serde_json::to_string(&response)
                    .unwrap_or_else(|_| "{\"ok\":false}".to_owned());
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Sends one request to the daemon. `Ok(None)` when no daemon listens on `path`.
pub async fn request(path: &Path, request: &Request) -> std::io::Result<Option<Response>> {
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .map_err(|_| std::io::Error::other("the agent did not answer within 300 s"))??
        .ok_or_else(|| std::io::Error::other("the agent closed the control connection"))?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r = Request::Block {
            target: "198.51.100.7".to_owned(),
            for_secs: 60,
            reason: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"op":"block","target":"198.51.100.7","for_secs":60,"reason":null}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"sync"}"#).unwrap(),
            Request::Sync
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
