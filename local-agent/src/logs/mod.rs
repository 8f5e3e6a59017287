//! Firewall logs: the agent receives the firewall's syslog, parses and summarises it at the edge, spools
//! the batches on disk and ships them as reports.
//!
//! # Layout
//! [`receiver`] (UDP and TCP syslog, sender filter) → [`pipeline`] (per line: [`parse`], which reads the
//! [`envelope`] then the format into an [`event::Event`]; then [`summarise`], rows per window) →
//! [`spool`] (durable, bounded, in order) → [`ship`] (the boundary to the reports queue). Around them:
//! [`config`] (the `[logs]` section), [`metrics`] (counters) and [`generator`] (realistic traffic for
//! tests and benchmarks). [`start`] wires them and is what the daemon calls.

pub mod config;
pub mod envelope;
pub mod event;
pub mod generator;
pub mod metrics;
pub mod parse;
pub mod pipeline;
pub mod receiver;
pub mod ship;
pub mod spool;
pub mod summarise;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::config::LogsConfig;
use self::metrics::LogMetrics;
use self::pipeline::Pipeline;
use self::receiver::Shared;
use self::ship::Ship;
use self::spool::{Batch, Spool};

/// How often the kernel's UDP drop counter is read.
const SOCKET_STATS_EVERY: Duration = Duration::from_secs(5);

/// The running log receiver.
#[derive(Debug)]
pub struct Running {
    /// UDP addresses bound (with the real port when 0 was asked).
    pub udp: Vec<SocketAddr>,
    /// TCP addresses bound.
    pub tcp: Vec<SocketAddr>,
    /// The counters.
    pub metrics: Arc<LogMetrics>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Waits until every task has ended (after the shutdown token was cancelled): the open window is then
    /// in the spool.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds the listeners, opens the spool in `spool_dir` and starts receiving, summarising and shipping
/// until `shutdown` is cancelled; on shutdown the open window is written to the spool.
pub fn start(
    config: LogsConfig,
    site: String,
    spool_dir: &Path,
    shipper: Arc<dyn Ship>,
    metrics: Arc<LogMetrics>,
    shutdown: CancellationToken,
) -> io::Result<Running> {
    let config = Arc::new(config);
    let spool = Arc::new(Mutex::new(Spool::open(
        spool_dir,
        config.spool_max_bytes,
        metrics.clone(),
    )?));
    let shared = Arc::new(Shared {
        config: config.clone(),
        pipeline: Mutex::new(Pipeline::new(config.clone(), site, metrics.clone())),
        metrics: metrics.clone(),
        close_now: Notify::new(),
    });
    let mut tasks = JoinSet::new();
    let (mut udp, mut tcp, mut inodes, mut granted) =
        (Vec::new(), Vec::new(), Vec::new(), usize::MAX);
    for addr in &config.listen_udp {
        let (socket, size) = receiver::bind_udp(*addr)?;
        if size < receiver::UDP_RECEIVE_BUFFER {
            tracing::warn!(
                granted = size,
                requested = receiver::UDP_RECEIVE_BUFFER,
                "the kernel granted a smaller syslog receive buffer; raise net.core.rmem_max to avoid drops in bursts"
            );
        }
        granted = granted.min(size);
        udp.push(socket.local_addr()?);
        inodes.extend(receiver::socket_inode(&socket));
        tasks.spawn(receiver::udp_loop(socket, shared.clone(), shutdown.clone()));
    }
    for addr in &config.listen_tcp {
        let listener = receiver::bind_tcp(*addr)?;
        tcp.push(listener.local_addr()?);
        tasks.spawn(receiver::tcp_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(?udp, ?tcp, window = ?config.window, "receiving firewall logs");
    if !inodes.is_empty() {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SOCKET_STATS_EVERY);
            loop {
                receiver::publish_socket_stats(&metrics, &inodes, granted);
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
    let wake = Arc::new(Notify::new());
    tasks.spawn(window_loop(
        shared,
        spool.clone(),
        wake.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(ship::ship_loop(
        spool,
        shipper,
        metrics.clone(),
        wake,
        shutdown,
    ));
    Ok(Running {
        udp,
        tcp,
        metrics,
        tasks,
    })
}

/// Closes the window every `window` (or early when it is full) and spools its batches; closes it one
/// last time on shutdown.
async fn window_loop(
    shared: Arc<Shared>,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let window = shared.config.window;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = shared.close_now.notified() => false,
            () = shutdown.cancelled() => true,
        };
        let batches = shared
            .pipeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .close_window();
        if !batches.is_empty() {
            spool_batches(&spool, batches).await;
            wake.notify_one();
        }
        if last {
            return;
        }
    }
}

async fn spool_batches(spool: &Arc<Mutex<Spool>>, batches: Vec<Batch>) {
    let spool = spool.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut spool = spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for batch in &batches {
            spool.push(batch)?;
        }
        Ok::<_, io::Error>(())
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot write log batches to the spool; they are lost")
        }
        Err(error) => tracing::error!(%error, "spool writer failed"),
    }
}
