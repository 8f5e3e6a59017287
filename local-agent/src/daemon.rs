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
                    let mut report = StatusReport::configured(&config);
                    report.add_live(&health, unhealthy_after);
                    report.add_queue_depth(&queue).await;
                    let now = engine.clock().now();
                    let stored = engine
                        .db()
                        .call(move |s| {
                            let failed = report.add_stored(s, now).err();
                            Ok((report, failed))
                        })
                        .await;
                    let report = match stored {
                        Ok((report, None)) => report,
                        Ok((mut report, Some(e))) => {
                            report.problems.push(format!("state: {e}"));
                            report
                        }
                        Err(e) => {
                            let mut report = StatusReport::configured(&config);
                            report.problems.push(format!("state: {e}"));
                            report
                        }
                    };
                    serde_json::to_value(report).unwrap_or_default()
                })
            }),
            sync: Arc::new(move || {
                let engine = Arc::clone(&sync_engine);
                let runner = sync_runner.clone();
                Box::pin(async move {
                    match expire::reconcile_once(&engine, &runner, protect, retention).await {
                        Ok(r) => serde_json::to_value(r).unwrap_or_default(),
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
        let router = endpoint::router(
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
