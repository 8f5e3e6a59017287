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
use tokio_util::sync::CancellationToken;

use crate::apply::{Engine, EngineParts};
use crate::backends::exec::Runner;
use crate::backends::{self, BackendError};
use crate::clock::Clock;
use crate::config::Config;
use crate::control::{self, Handlers};
use crate::endpoint;
use crate::expire;
use crate::health::Health;
use crate::poll::Consumer;
use crate::status::StatusReport;
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

/// The queue handles for a configuration.
pub fn queues(config: &Config) -> anyhow::Result<(queue_message::Queue, queue_message::Queue)> {
    let q = &config.queue;
    let connection = Arc::new(
        crate::config::connect(&q.connection, q.api_version.as_deref())
            .context("queue connection")?,
    );
    let poison_connection = match &q.poison_connection {
        Some(c) => Arc::new(
            crate::config::connect(c, q.api_version.as_deref())
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
    let engine = Arc::new(Engine::new(EngineParts {
        backend,
        store,
        never_block: config.policy.never_block.clone(),
        max_new_per_hour: config.policy.max_new_blocks_per_hour,
        clock: Clock::System,
        health,
    }));
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
        if let Ok(c) = crate::config::connect(connection, q.api_version.as_deref()) {
            hosts.extend(c.service_url().host_str().map(str::to_owned));
        }
        if connection.signs_in_at_entra() {
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

/// Name of the reports queue log batches go to (the handler's `PORTCULLIS_REPORTS_QUEUE` default).
pub const REPORTS_QUEUE: &str = "portcullis-reports";

/// Starts the firewall-log receiver of `[logs]`: spool beside the state database, batches signed with the
/// queue's signing key and sent to [`REPORTS_QUEUE`] over the block queue's connection, site = the block
/// queue's name.
async fn start_logs(
    config: &Config,
    logs: crate::logs::config::LogsConfig,
    metrics: &Arc<crate::metrics::Metrics>,
    token: CancellationToken,
) -> anyhow::Result<crate::logs::Running> {
    let q = &config.queue;
    let connection = Arc::new(
        crate::config::connect(&q.connection, q.api_version.as_deref())
            .context("queue connection for the reports queue")?,
    );
    let reports = connection.queue(REPORTS_QUEUE);
    if q.create_queues {
        if let Err(e) = reports.create_if_missing().await {
            tracing::warn!(queue = REPORTS_QUEUE, error = %e, "Could not create the queue.");
        }
    }
    let key = q.keys.first().cloned().context("no signing key")?;
    let shipper = Arc::new(crate::logs::ship::QueueShipper::new(
        reports,
        key,
        q.name.clone(),
    ));
    let log_metrics = Arc::new(crate::logs::metrics::LogMetrics::default());
    let _ = metrics.logs.set(Arc::clone(&log_metrics));
    let spool = config
        .state
        .path
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("logs-spool");
    crate::logs::start(logs, q.name.clone(), &spool, shipper, log_metrics, token).with_context(
        || {
            format!(
                "starting the firewall-log receiver (spool {})",
                spool.display()
            )
        },
    )
}

/// What the daemon's request handlers share, built once at start: a named context instead of a ladder
/// of cloned handles captured by closures. New daemon parts (an outbox sender, a log receiver) take what
/// they need from here.
#[derive(Debug)]
pub struct Daemon {
    /// The validated configuration.
    pub config: Config,
    /// The single writer to the firewall and the state.
    pub engine: Arc<Engine>,
    /// The health state machine.
    pub health: Arc<Health>,
    /// Runs host commands (in the backend's network namespace, if any).
    pub runner: Runner,
    /// A handle on the main queue for the status report's depth.
    pub status_queue: queue_message::Queue,
}

impl Daemon {
    /// How long a failure may last before the daemon counts as unhealthy.
    pub fn unhealthy_after(&self) -> Duration {
        self.config
            .metrics
            .map(|m| m.unhealthy_after.get())
            .unwrap_or(Duration::from_secs(300))
    }

    /// The status report: configured, live, queue depth, then the stored part (on the state's thread).
    pub async fn status_report(&self) -> StatusReport {
        let mut report = StatusReport::configured(&self.config);
        report.add_live(&self.health, self.unhealthy_after());
        report.add_queue_depth(&self.status_queue).await;
        let now = self.engine.clock().now();
        let stored = self
            .engine
            .db()
            .call(move |s| {
                let failed = report.add_stored(s, now).err();
                Ok((report, failed))
            })
            .await;
        let (mut report, failed) = match stored {
            Ok((report, failed)) => (report, failed),
            Err(e) => (StatusReport::configured(&self.config), Some(e)),
        };
        if let Some(e) = failed {
            report.problems.push(format!("state: {e}"));
        }
        report.logs = self.engine.metrics().logs.get().map(|l| l.counts());
        report
    }
}

#[async_trait::async_trait]
impl Handlers for Daemon {
    async fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.status_report().await).unwrap_or_default()
    }

    async fn sync(&self) -> serde_json::Value {
        let (protect, retention) = (
            self.config.policy.protect_host_addresses,
            self.config.state.audit_retention.get(),
        );
        match expire::reconcile_once(&self.engine, &self.runner, protect, retention).await {
            Ok(r) => serde_json::to_value(r).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    }
}

/// Return path (issue 10): the executor queues commit reports in the durable outbox; a task sends them to
/// the reports queue until `token`. Off when `[reports] enabled = false` or no signing key is configured.
async fn start_reports(
    daemon: &Arc<Daemon>,
    tasks: &mut tokio::task::JoinSet<()>,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    let config = &daemon.config;
    let (true, Some(key)) = (config.reports.enabled, config.queue.keys.first()) else {
        return Ok(());
    };
    let r = &config.reports;
    let connection = Arc::new(
        crate::config::connect(&r.connection, config.queue.api_version.as_deref())
            .context("reports queue connection")?,
    );
    let reports_queue = connection.queue(&r.queue);
    if config.queue.create_queues {
        if let Err(e) = reports_queue.create_if_missing().await {
            tracing::warn!(queue = %r.queue, error = %e, "Could not create the reports queue.");
        }
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let sink = Arc::new(crate::reports::Sink {
        site: r.site.clone(),
        key: key.clone(),
        bound: crate::reports::outbox::DEFAULT_BOUND,
        wake: Arc::clone(&wake),
    });
    daemon.engine.send_reports(Arc::clone(&sink));
    tasks.spawn(crate::reports::sender::run(
        daemon.engine.db().clone(),
        reports_queue,
        wake,
        crate::reports::sender::Backoff::default(),
        token.clone(),
    ));
    tasks.spawn(Arc::clone(daemon).heartbeats(sink, r.heartbeat.get(), token.clone()));
    Ok(())
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let lock = StateLock::acquire(&config.state.path)?;
    let health = Arc::new(Health::default());
    health.started();
    let engine = engine(&config, Arc::clone(&health)).await?;
    let (queue, poison) = queues(&config)?;
    if config.queue.create_queues {
        for q in [&queue, &poison] {
            if let Err(e) = q.create_if_missing().await {
                tracing::warn!(queue = q.name(), error = %e, "Could not create the queue.");
            }
        }
    }
    let daemon = Arc::new(Daemon {
        status_queue: queues(&config)?.0,
        runner: Runner::new(config.firewall.backend.netns().map(str::to_owned)),
        config,
        engine,
        health,
    });
    let token = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    daemon.serve_control(&mut tasks, &token)?;
    daemon.serve_metrics(&mut tasks, &token).await?;
    start_reports(&daemon, &mut tasks, &token).await?;
    if let Some(logs) = &daemon.config.logs {
        let running = start_logs(
            &daemon.config,
            logs.clone(),
            daemon.engine.metrics(),
            token.clone(),
        )
        .await?;
        tasks.spawn(running.join());
    }
    tracing::info!(
        backend = daemon.engine.backend_name(),
        queue = %daemon.config.queue.name,
        poison_queue = %daemon.config.queue.poison_name,
        state = %daemon.config.state.path.display(),
        lock = %lock.path().display(),
        "Portcullis agent starting."
    );
    let work = tokio::spawn(Arc::clone(&daemon).work(queue, poison, token.clone()));
    tokio::pin!(work);
    let result = tokio::select! {
        () = shutdown => {
            tracing::info!("Shutdown requested; finishing the current batch.");
            daemon.health.stopping();
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
    daemon.engine.shutdown().await;
    let _ = std::fs::remove_file(&daemon.config.state.socket);
    tracing::info!("Portcullis agent stopped; blocks stay in place.");
    result
}

impl Daemon {
    /// Sends a heartbeat at start and then every `every` until `token`: Sentinel's "site silent" rule
    /// fires when they stop. Each carries the daemon's own status report and the messages poisoned since
    /// the previous one (counted in the durable audit log).
    async fn heartbeats(
        self: Arc<Self>,
        sink: Arc<crate::reports::Sink>,
        every: Duration,
        token: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = self.engine.clock().now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = token.cancelled() => return,
            }
            let now = self.engine.clock().now();
            let since = previous;
            let poisoned = self
                .engine
                .db()
                .call(move |s| s.count_events_since(crate::store::EventKind::Poisoned, since))
                .await
                .unwrap_or(0);
            previous = now;
            let status = self.status_report().await;
            let heartbeat = crate::reports::heartbeat(status, poisoned);
            sink.enqueue_heartbeat(self.engine.db(), now, heartbeat)
                .await;
        }
    }

    /// Opens the control socket (status, sync, block, unblock) and serves it until `token`.
    fn serve_control(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let socket = &self.config.state.socket;
        let listener = control::bind(socket)
            .with_context(|| format!("opening the control socket {}", socket.display()))?;
        tasks.spawn(control::serve(
            listener,
            Arc::clone(&self.engine),
            Arc::clone(self) as Arc<dyn Handlers>,
            token.clone(),
        ));
        Ok(())
    }

    /// Opens the `/metrics` and `/healthz` endpoint when configured, served until `token`.
    async fn serve_metrics(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        token: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(m) = self.config.metrics else {
            return Ok(());
        };
        let router = endpoint::router(
            Arc::clone(self.engine.metrics()),
            Arc::clone(&self.health),
            m.unhealthy_after.get(),
        );
        let listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .with_context(|| format!("binding the metrics endpoint {}", m.listen))?;
        tracing::info!(listen = %m.listen, "Metrics endpoint listening.");
        let token = token.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "Metrics endpoint failed.");
            }
        });
        Ok(())
    }

    /// The agent's work: initialise the backend (retrying while unreachable), reconcile once, then run the
    /// consumer, the expiry task and the periodic reconcile until `token`.
    async fn work(
        self: Arc<Self>,
        queue: queue_message::Queue,
        poison: queue_message::Queue,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let engine = &self.engine;
        if !init_with_retry(engine, &token).await? {
            return Ok(());
        }
        let retention = self.config.state.audit_retention.get();
        let protect = self.config.policy.protect_host_addresses;
        match expire::reconcile_once(engine, &self.runner, protect, retention).await {
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
        let consumer = Consumer::new(Arc::clone(engine), queue, poison, self.config.queue.clone());
        let mut inner = tokio::task::JoinSet::new();
        inner.spawn(expire::run_expiry(Arc::clone(engine), token.clone()));
        inner.spawn(expire::run_reconcile(
            Arc::clone(engine),
            self.runner.clone(),
            self.config.firewall.reconcile_interval.get(),
            protect,
            retention,
            token.clone(),
        ));
        tracing::info!("Consuming the queue.");
        consumer.run(token).await;
        while inner.join_next().await.is_some() {}
        Ok(())
    }
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
