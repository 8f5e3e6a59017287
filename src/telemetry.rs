//! Logging: `tracing` to stdout (the Functions host collects it), human-readable or one JSON object per line.
//!
//! Each request runs in a span carrying the host's `X-Azure-Functions-InvocationId` (see [`crate::http`]),
//! so every line of one invocation can be found again in Application Insights.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("portcullis=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
