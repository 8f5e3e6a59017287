//! `run`: wires the daemon together and shuts it down cleanly.
//!
//! Start-up: take the state lock (one agent per state database), open the state, build the backend,
//! learn this host's addresses, connect to the queues, open the control socket and the metrics endpoint,
//! initialise the backend (retrying with backoff while it is unreachable: messages simply stay queued),
//! reconcile once, then run three tasks: the consumer, the expiry task and the periodic reconcile.
//!
//! Shutdown (SIGINT/SIGTERM, or the future passed to [`run`]): the tasks finish what they are doing (the
//! consumer completes its current batch: commit, record, delete), the backend's `shutdown` is called once,
//! and blocks stay in place: kernel timeouts keep ending them while the agent is down.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::apply::Engine;
use crate::backends::exec::Runner;
use crate::backends::{self, BackendError};
use crate::config::Config;
use crate::control::{self, Handlers};
use crate::expire;
use crate::metrics::{self, Health, Metrics};
use crate::poll::Consumer;
use crate::store::Store;

/// How long shutdown waits for the tasks to finish their current work.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// An exclusive lock on the state database (a `.lock` file beside it), held for the process's life.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(state_path: &Path) -> anyhow::Result<Self> {
        let mut name = state_path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another portcullis-agent is using the state {} (lock {} is held)",
                state_path.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `status` as reported by a running daemon or read offline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// Whether a daemon answered.
    pub running: bool,
    /// The backend in use.
    pub backend: String,
    /// The queue consumed.
    pub queue: String,
    /// Approximate number of messages waiting.
    pub queue_depth: Option<i64>,
    /// Why the depth is unknown.
    pub queue_depth_error: Option<String>,
    /// Blocks in force.
    pub active_blocks: u64,
    /// The earliest expiry.
    pub next_expiry: Option<DateTime<Utc>>,
    /// New blocks in the last hour, and the hourly limit.
    pub new_blocks_last_hour: u64,
    /// `max_new_blocks_per_hour`.
    pub max_new_blocks_per_hour: u32,
    /// New blocks held back until then.
    pub rate_limited_until: Option<DateTime<Utc>>,
    /// Daemon start.
    pub started_at: Option<DateTime<Utc>>,
    /// Last queue poll.
    pub last_poll: Option<DateTime<Utc>>,
    /// Last successful firewall commit.
    pub last_commit: Option<DateTime<Utc>>,
    /// Last error and when.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// Health problems (as `/healthz` reports them).
    pub problems: Vec<String>,
}

/// Fills the stored part of a status report.
pub fn stored_status(
    store: &Store,
    config: &Config,
    report: &mut StatusReport,
) -> anyhow::Result<()> {
    let now = Utc::now();
    report.backend = config.firewall.backend.kind().to_string();
    report.queue = config.queue.name.clone();
    report.active_blocks = store.active_count(now)?;
    report.next_expiry = store.next_expiry()?;
    report.new_blocks_last_hour = store.new_blocks_since(now - chrono::Duration::hours(1))?.0;
    report.max_new_blocks_per_hour = config.policy.max_new_blocks_per_hour;
    if report.last_commit.is_none() {
        report.last_commit = store
            .meta("last_commit_at")?
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
    }
    if report.last_error.is_none() {
        report.last_error = store.meta("last_error")?.and_then(|t| {
            let (at, text) = t.split_once(' ')?;
            let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
            Some((at, text.to_owned()))
        });
    }
    Ok(())
}

/// The queue's approximate depth, or why it is unknown (the Processor role cannot read queue metadata).
pub async fn queue_depth(queue: &queue_message::Queue) -> (Option<i64>, Option<String>) {
    match tokio::time::timeout(Duration::from_secs(10), queue.approximate_count()).await {
        Ok(Ok(n)) => (Some(n), None),
        Ok(Err(queue_message::QueueError::Denied(_))) => (
            None,
            Some("not permitted (reading queue metadata needs the Storage Queue Data Reader role or SAS `r`)".to_owned()),
        ),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some("timed out".to_owned())),
    }
}

/// The queue handles for a configuration.
pub fn queues(config: &Config) -> anyhow::Result<(queue_message::Queue, queue_message::Queue)> {
    let q = &config.queue;
    let connection = Arc::new(
        q.connection
            .connect(q.api_version.as_deref())
            .context("queue connection")?,
    );
    let poison_connection = match &q.poison_connection {
        Some(c) => Arc::new(
            c.connect(q.api_version.as_deref())
                .context("poison queue connection")?,
        ),
        None => Arc::clone(&connection),
    };
    Ok((
        connection.queue(&q.name),
        poison_connection.queue(&q.poison_name),
    ))
}

/// Builds the engine (state, backend, policy with host addresses) without initialising the backend.
pub async fn engine(config: &Config, health: Arc<Health>) -> anyhow::Result<Arc<Engine>> {
    let store = Store::open(&config.state.path)?;
    let backend = backends::build(config.firewall.backend.clone())
        .await
        .context("building the firewall backend")?;
    let engine = Arc::new(Engine::new(
        backend,
        store,
        config.policy.never_block.clone(),
        config.policy.max_new_blocks_per_hour,
        Arc::new(Metrics::default()),
        health,
    ));
    engine.set_service_hosts(service_hosts(config));
    let runner = Runner::new(config.firewall.backend.netns().map(str::to_owned));
    expire::refresh_host_addresses(&engine, &runner, config.policy.protect_host_addresses).await;
    Ok(engine)
}

/// The host names the agent must reach: the queue and poison-queue endpoints, and the Entra login host
/// when it signs in with a client secret or the Azure CLI. Their addresses are never blocked.
pub fn service_hosts(config: &Config) -> Vec<String> {
    let q = &config.queue;
    let mut hosts = Vec::new();
    for connection in std::iter::once(&q.connection).chain(q.poison_connection.as_ref()) {
        if let Ok(c) = connection.connect(q.api_version.as_deref()) {
            hosts.extend(c.service_url().host_str().map(str::to_owned));
        }
        if matches!(
            connection,
            crate::config::Connection::ClientSecret { .. }
                | crate::config::Connection::AzureCli { .. }
        ) {
            hosts.push("login.microsoftonline.com".to_owned());
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

async fn init_with_retry(engine: &Engine, token: &CancellationToken) -> anyhow::Result<bool> {
    let mut wait = Duration::from_secs(1);
    loop {
        match engine.init_backend().await {
            Ok(()) => return Ok(true),
            Err(e @ (BackendError::Unsupported(_) | BackendError::Config(_))) => {
                return Err(e).context("initialising the firewall backend")
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "Firewall not ready; messages stay queued until it is.");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = token.cancelled() => return Ok(false),
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let lock = StateLock::acquire(&config.state.path)?;
    let health = Arc::new(Health::default());
    health.started();
    let engine = engine(&config, Arc::clone(&health)).await?;
    let metrics = Arc::clone(engine.metrics());
    let (queue, poison) = queues(&config)?;
    if config.queue.create_queues {
        for q in [&queue, &poison] {
            if let Err(e) = q.create_if_missing().await {
                tracing::warn!(queue = q.name(), error = %e, "Could not create the queue.");
            }
        }
    }
    let token = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    // Control socket: status, sync, block, unblock.
    let status_queue = Arc::new(queues(&config)?.0);
    let runner = Runner::new(config.firewall.backend.netns().map(str::to_owned));
    let handlers = {
        let status_engine = Arc::clone(&engine);
        let status_config = config.clone();
        let status_health = Arc::clone(&health);
        let unhealthy_after = config
            .metrics
            .map(|m| m.unhealthy_after.get())
            .unwrap_or(Duration::from_secs(300));
        let sync_engine = Arc::clone(&engine);
        let sync_runner = runner.clone();
        let protect = config.policy.protect_host_addresses;
        let retention = config.state.audit_retention.get();
        Handlers {
            status: Arc::new(move || {
                let engine = Arc::clone(&status_engine);
                let config = status_config.clone();
                let health = Arc::clone(&status_health);
                let queue = Arc::clone(&status_queue);
                Box::pin(async move {
                    let live = health.snapshot();
                    let (depth, depth_error) = queue_depth(&queue).await;
                    let mut report = StatusReport {
                        running: true,
                        queue_depth: depth,
                        queue_depth_error: depth_error,
                        rate_limited_until: live.rate_limited_until,
                        started_at: live.started_at,
                        last_poll: live.last_poll,
                        last_commit: live.last_commit,
                        last_error: live.last_error,
                        problems: health.problems(unhealthy_after),
                        ..StatusReport::default()
                    };
                    if let Err(e) = stored_status(&engine.store(), &config, &mut report) {
                        report.problems.push(format!("state: {e}"));
                    }
                    serde_json::to_value(report).unwrap_or_default()
                })
            }),
            sync: Arc::new(move || {
                let engine = Arc::clone(&sync_engine);
                let runner = sync_runner.clone();
                Box::pin(async move {
                    match expire::reconcile_once(&engine, &runner, protect, retention).await {
                        Ok(r) => serde_json::json!({
                            "readded": r.readded, "removed": r.removed, "refused": r.refused, "active": r.active
                        }),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    }
                })
            }),
        }
    };
    let listener = control::bind(&config.state.socket).with_context(|| {
        format!(
            "opening the control socket {}",
            config.state.socket.display()
        )
    })?;
    tasks.spawn(control::serve(
        listener,
        Arc::clone(&engine),
        handlers,
        token.clone(),
    ));

    if let Some(m) = config.metrics {
        let router = metrics::router(
            Arc::clone(&metrics),
            Arc::clone(&health),
            m.unhealthy_after.get(),
        );
        let t = token.clone();
        let listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .with_context(|| format!("binding the metrics endpoint {}", m.listen))?;
        tracing::info!(listen = %m.listen, "Metrics endpoint listening.");
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(async move { t.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "Metrics endpoint failed.");
            }
        });
    }

    tracing::info!(
        backend = engine.backend_name(),
        queue = %config.queue.name,
        poison_queue = %config.queue.poison_name,
        state = %config.state.path.display(),
        lock = %lock.path().display(),
        "Portcullis agent starting."
    );

    let work = {
        let engine = Arc::clone(&engine);
        let token = token.clone();
        let config = config.clone();
        async move {
            if !init_with_retry(&engine, &token).await? {
                return Ok::<(), anyhow::Error>(());
            }
            let retention = config.state.audit_retention.get();
            let protect = config.policy.protect_host_addresses;
            match expire::reconcile_once(&engine, &runner, protect, retention).await {
                Ok(r) => tracing::info!(
                    active = r.active,
                    readded = r.readded,
                    removed = r.removed,
                    "Start-up reconcile done."
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "Start-up reconcile failed; the periodic reconcile will retry.")
                }
            }
            let consumer = Consumer::new(Arc::clone(&engine), queue, poison, config.queue.clone());
            let mut inner = tokio::task::JoinSet::new();
            inner.spawn(expire::run_expiry(Arc::clone(&engine), token.clone()));
            inner.spawn(expire::run_reconcile(
                Arc::clone(&engine),
                runner,
                config.firewall.reconcile_interval.get(),
                protect,
                retention,
                token.clone(),
            ));
            tracing::info!("Consuming the queue.");
            consumer.run(token.clone()).await;
            while inner.join_next().await.is_some() {}
            Ok(())
        }
    };
    let work = tokio::spawn(work);
    tokio::pin!(work);

    let result = tokio::select! {
        () = shutdown => {
            tracing::info!("Shutdown requested; finishing the current batch.");
            health.stopping();
            token.cancel();
            match tokio::time::timeout(SHUTDOWN_LIMIT, &mut work).await {
                Ok(joined) => joined.context("agent task")?,
                Err(_) => {
                    tracing::error!(limit_s = SHUTDOWN_LIMIT.as_secs(), "Tasks did not stop in time.");
                    Ok(())
                }
            }
        }
        joined = &mut work => {
            token.cancel();
            joined.context("agent task")?
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    engine.shutdown().await;
    let _ = std::fs::remove_file(&config.state.socket);
    tracing::info!("Portcullis agent stopped; blocks stay in place.");
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
