//! The Portcullis queue message and everything both binaries must agree on.
//!
//! # Layout
//! `target` (one address or network, canonical) → `policy` (the never-block rules) → `message` (the signed
//! wire format) → `connection` (queue settings and operations; `sas` derives account SAS tokens) and
//! `access` (the queue-name rule, how a binary authenticates, the shared log-format setting).
//! `report` is the return path's signed format (commit reports, heartbeats, firewall log batches), signed
//! with the same key as `message`. `duration` parses the ISO-8601 durations used in settings and payloads.

pub mod access;
pub mod connection;
pub mod credential;
pub mod duration;
/// The known-answer signing test shared by the handler's and the agent's tests.
#[cfg(any(test, feature = "testing"))]
pub mod golden;
pub mod message;
pub mod policy;
pub mod report;
pub mod sas;
pub mod target;

pub use access::{valid_queue_name, LogFormat, QueueAccess};
pub use connection::{ConnectionError, Peeked, Queue, QueueConnection, QueueError, Received};
pub use duration::{format_duration, parse_duration, DurationError};
pub use message::{
    Action, BlockMessage, DecodeError, KeyError, SigningKey, Source, MAX_MESSAGE_BYTES,
};
pub use policy::{NeverBlock, Refusal, SpecialRange};
pub use report::{
    CommitEvent, CommitReport, EventKind, EventTotal, FirewallAction, FirewallRow, Heartbeat,
    LogBatch, Report, ReportBody,
};
pub use target::{Target, TargetError};

/// Queue API version (`x-ms-version`) both binaries send to loopback endpoints (Azurite), unless configured: the
/// newest Azurite 3.35 accepts without `--skipApiVersionCheck`. The SDK's default is newer, and Azurite refuses
/// it. Real Azure gets the SDK's default.
pub const AZURITE_API_VERSION: &str = "2025-11-05";

/// The endpoint is on this machine (`127.0.0.1`, `localhost`, `[::1]`): an emulator, not Azure.
pub fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

#[cfg(feature = "testing")]
pub mod testing;
