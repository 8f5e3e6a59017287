//! The agent's configuration: one TOML file, unknown keys refused with the key named, secrets also from
//! environment variables or files.
//!
//! Raw serde structs (`deny_unknown_fields`, a doc on every field) are read first, then turned into
//! validated types in one place, so nothing downstream sees a raw string.

/// A configuration problem, naming the key (`firewall.nftables.hooks`, `queue.signing_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key or table.
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl ConfigError {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
