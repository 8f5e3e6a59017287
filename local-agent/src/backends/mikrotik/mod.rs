//! MikroTik backend: RouterOS 7 REST, address-list entries with the native `timeout`, tagged by a comment.
//!
//! `config` (the `[firewall.mikrotik]` keys) → `client` (REST calls) → `backend` (add/extend/remove,
//! reconcile). See `shared/reference/firewalls.md` §9.

mod backend;
mod client;
mod config;
#[cfg(test)]
mod tests;

pub use backend::{MikrotikBackend, MAX_TIMEOUT};
pub use client::{format_timeout, parse_timeout};
pub use config::{MikrotikConfig, RawMikrotikConfig, PASSWORD_ENV, TABLE};

use super::{parse_table, Backend, BackendError};
use crate::config::ConfigError;
use client::RestClient;

/// Checks a `[firewall.mikrotik]` table without any I/O; unknown keys are refused with their name.
pub fn validate(value: Option<toml::Value>) -> Result<MikrotikConfig, ConfigError> {
    MikrotikConfig::from_raw(parse_table(config::TABLE, value)?)
}

/// Reads the password and the CA file and builds the backend; the router is contacted in `init`.
pub async fn build(config: MikrotikConfig) -> Result<Box<dyn Backend>, BackendError> {
    let client = RestClient::new(
        config.endpoint.client("mikrotik")?,
        config.endpoint.clone(),
        config.username.clone(),
        config.password.resolve()?,
    );
    Ok(Box::new(MikrotikBackend::new(config, client)))
}
