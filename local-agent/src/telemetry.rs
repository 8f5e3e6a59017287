//! Logging setup: `tracing` to stderr, text or JSON, filtered by `RUST_LOG` or `[log] level`.
//!
//! The daemon logs at the configured level; one-shot commands (`status`, `block`, …) default to warnings
//! only, so their own output stays readable.

use tracing_subscriber::EnvFilter;

use queue_message::LogFormat;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat, level: &str, daemon: bool) {
    let default = if daemon { level } else { "warn" };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
