//! UniFi backend: blocks in address groups on a UniFi console or controller (or, with an API key, in the
//! integration API's traffic matching lists).
//!
//! `config` (the `[firewall.unifi]` keys) → `client` (the trait over the two APIs) with `login` (cookie
//! sessions, both login styles) and `integration` (API key) → `backend`
//! (sharding, diff, debounced whole-list writes). See `shared/reference/firewalls.md` §7.

mod backend;
mod client;
mod config;
mod integration;
mod login;
#[cfg(test)]
mod tests;

pub use backend::{manual_step, UnifiBackend};
pub use client::{Family, GroupApi, RemoteGroup};
pub use config::{
    Auth, RawUnifiConfig, UnifiConfig, API_KEY_ENV, DEFAULT_BATCH_WINDOW,
    DEFAULT_MIN_WRITE_INTERVAL, PASSWORD_ENV, TABLE,
};
pub use integration::IntegrationApi;
pub use login::{LoginApi, LoginStyle};

use super::{parse_table, Backend, BackendError};
use crate::config::ConfigError;

/// Checks a `[firewall.unifi]` table without any I/O; unknown keys are refused with their name.
pub fn validate(value: Option<toml::Value>) -> Result<UnifiConfig, ConfigError> {
    UnifiConfig::from_raw(parse_table(config::TABLE, value)?)
}

/// Reads the credentials and the CA file and builds the backend; the console is contacted in `init`.
pub async fn build(config: UnifiConfig) -> Result<Box<dyn Backend>, BackendError> {
    let http = config.endpoint.client("unifi")?;
    let api: Box<dyn GroupApi> = match &config.auth {
        Auth::Login { username, password } => Box::new(LoginApi::new(
            http,
            config.endpoint.clone(),
            config.site.clone(),
            username.clone(),
            password.resolve()?,
        )),
        Auth::ApiKey(key) => Box::new(IntegrationApi::new(
            http,
            config.endpoint.clone(),
            config.site.clone(),
            key.resolve()?,
        )),
    };
    Ok(Box::new(UnifiBackend::new(config, api)))
}
