//! OPNsense backend: an "External (advanced)" alias changed with `alias_util` add/delete and read back
//! with `alias_util/list`.
//!
//! `config` (the `[firewall.opnsense]` keys) → `client` (API calls) → `backend` (cached diff, per-address
//! calls). See `shared/reference/firewalls.md` §8.

mod backend;
mod client;
mod config;
#[cfg(test)]
mod tests;

pub use backend::{manual_step, OpnsenseBackend};
pub use config::{OpnsenseConfig, RawOpnsenseConfig, API_KEY_ENV, API_SECRET_ENV, TABLE};

use super::{parse_table, Backend, BackendError};
use crate::config::ConfigError;
use client::ApiClient;

/// Checks a `[firewall.opnsense]` table without any I/O; unknown keys are refused with their name.
pub fn validate(value: Option<toml::Value>) -> Result<OpnsenseConfig, ConfigError> {
    OpnsenseConfig::from_raw(parse_table(config::TABLE, value)?)
}

/// Reads the API key, secret and CA file and builds the backend; the firewall is contacted in `init`.
pub async fn build(config: OpnsenseConfig) -> Result<Box<dyn Backend>, BackendError> {
    let client = ApiClient::new(
        config.endpoint.client("opnsense")?,
        config.endpoint.clone(),
        config.api_key.resolve()?,
        config.api_secret.resolve()?,
    );
    Ok(Box::new(OpnsenseBackend::new(config, client)))
}
