//! pfSense backend: the REST API package (pfrest v2), alias PATCH with `append`/`remove`, then apply.
//!
//! `config` (the `[firewall.pfsense]` keys) → `client` (pfrest calls) → `backend` (diff against the alias,
//! at most three writes per commit). See `shared/reference/firewalls.md` §10.

mod backend;
mod client;
mod config;
#[cfg(test)]
mod tests;

pub use backend::{manual_step, PfsenseBackend};
pub use config::{PfsenseConfig, RawPfsenseConfig, API_KEY_ENV, DEFAULT_BATCH_WINDOW, TABLE};

use super::{parse_table, Backend, BackendError};
use crate::config::ConfigError;
use client::RestClient;

/// Checks a `[firewall.pfsense]` table without any I/O; unknown keys are refused with their name.
pub fn validate(value: Option<toml::Value>) -> Result<PfsenseConfig, ConfigError> {
    PfsenseConfig::from_raw(parse_table(config::TABLE, value)?)
}

/// Reads the API key and the CA file and builds the backend; the firewall is contacted in `init`.
pub async fn build(config: PfsenseConfig) -> Result<Box<dyn Backend>, BackendError> {
    let client = RestClient::new(
        config.endpoint.client("pfsense")?,
        config.endpoint.clone(),
        config.api_key.resolve()?,
    );
    Ok(Box::new(PfsenseBackend::new(config, client)))
}
