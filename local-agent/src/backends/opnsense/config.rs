//! `[firewall.opnsense]`: the raw TOML keys and their validated form.

use std::path::PathBuf;

use serde::Deserialize;

use crate::backends::http::{self, Endpoint, RawConnection, SecretSource};
use crate::config::ConfigError;

/// The table's dotted name, for error messages.
pub const TABLE: &str = "firewall.opnsense";
/// Environment variable for the API key when neither `api_key` nor `api_key_file` is set.
pub const API_KEY_ENV: &str = "PORTCULLIS_OPNSENSE_API_KEY";
/// Environment variable for the API secret when neither `api_secret` nor `api_secret_file` is set.
pub const API_SECRET_ENV: &str = "PORTCULLIS_OPNSENSE_API_SECRET";

/// The `[firewall.opnsense]` table as written.
///
/// Unknown keys are refused by name in `from_raw` (`deny_unknown_fields` does not work with `flatten`).
#[derive(Debug, Deserialize)]
pub struct RawOpnsenseConfig {
    /// Web GUI base URL (`https://192.168.1.1`); the API is below `/api`.
    pub url: String,
    /// API key of the agent's user (System → Access → Users → API keys); or `api_key_file`, or the
    /// `PORTCULLIS_OPNSENSE_API_KEY` environment variable.
    pub api_key: Option<String>,
    /// File holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// The key's secret; or `api_secret_file`, or the `PORTCULLIS_OPNSENSE_API_SECRET` environment variable.
    pub api_secret: Option<String>,
    /// File holding the API secret.
    pub api_secret_file: Option<PathBuf>,
    /// Name of the "External (advanced)" alias that holds the blocks (both families).
    #[serde(default = "http::default_object_name")]
    pub alias: String,
    /// Create the alias at start when it does not exist (`addItem` + `reconfigure`). The firewall rule that
    /// blocks its sources is always a manual step.
    #[serde(default)]
    pub create_alias: bool,
    /// Certificate trust and request time limit: `ca_file`, `fingerprint`, `insecure_skip_verify`,
    /// `timeout`; and every other key, refused by name (see [`RawConnection`]).
    #[serde(flatten)]
    pub connection: RawConnection,
}

/// The validated `[firewall.opnsense]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpnsenseConfig {
    /// Where the firewall is and how it is trusted.
    pub endpoint: Endpoint,
    /// API key.
    pub api_key: SecretSource,
    /// API secret.
    pub api_secret: SecretSource,
    /// Alias name.
    pub alias: String,
    /// Create the alias when missing.
    pub create_alias: bool,
}

impl OpnsenseConfig {
    /// Checks the raw keys; no I/O.
    pub fn from_raw(raw: RawOpnsenseConfig) -> Result<Self, ConfigError> {
        raw.connection.refuse_unknown(TABLE)?;
        let alias = http::pf_alias_name(TABLE, &raw.alias, 32, "OPNsense")?;
        Ok(Self {
            endpoint: raw.connection.endpoint(TABLE, &raw.url, None)?,
            api_key: SecretSource::new(
                TABLE,
                "api_key",
                raw.api_key,
                raw.api_key_file,
                API_KEY_ENV,
            )?,
            api_secret: SecretSource::new(
                TABLE,
                "api_secret",
                raw.api_secret,
                raw.api_secret_file,
                API_SECRET_ENV,
            )?,
            alias,
            create_alias: raw.create_alias,
        })
    }
}
