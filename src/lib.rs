//! Portcullis Functions handler: turns Microsoft Sentinel and Azure Monitor alerts into signed block messages
//! on Azure Storage Queues.
//!
//! # Layout
//! `http` (routes, the host's two invocation modes) → `alert` / `manual` (vendor payloads → [`Alert`]) →
//! `plan` (never-block policy, limits, expiry → [`Plan`]) → `service` (signed messages via
//! `queue_message`) → `enqueue` (every message into every queue).
//! `settings` (the one table of environment settings), `error` (RFC 7807 replies), `telemetry` (tracing),
//! `lenient` (serde helpers for other people's JSON).
//! `reports` is the return path: the queue-triggered `reports` function (verified agent reports →
//! incident comments and Log Analytics rows) and the timer-triggered `watch` (poison queue counts).

pub mod alert;
pub mod check;
pub mod enqueue;
pub mod error;
pub mod http;
mod lenient;
pub mod manual;
pub mod plan;
pub mod reports;
pub mod service;
pub mod settings;
pub mod telemetry;
#[cfg(test)]
mod testdata;

use std::future::Future;
use std::sync::Arc;

pub use alert::{Alert, Kind};
pub use enqueue::{Enqueue, MemoryQueues, StorageQueues};
pub use error::{ApiError, Reply};
pub use http::app;
pub use plan::{Plan, Policy};
pub use service::{AppState, Function};
pub use settings::{Settings, SETTINGS};

/// Serves `router` on `listener` until `shutdown` resolves; in-flight requests are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Convenience for tests and benchmarks: state around in-memory queues.
pub fn memory_state(
    signing_key: queue_message::SigningKey,
    queues: &Arc<MemoryQueues>,
) -> AppState {
    AppState::new(signing_key, Arc::clone(queues) as Arc<dyn Enqueue>)
}
