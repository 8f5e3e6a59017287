//! `[firewall.pfsense]`: the raw TOML keys and their validated form.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::backends::http::{self, Endpoint, RawConnection, SecretSource};
use crate::config::ConfigError;
use crate::span::Span;

/// The table's dotted name, for error messages.
pub const TABLE: &str = "firewall.pfsense";
/// Environment variable for the API key when neither `api_key` nor `api_key_file` is set.
pub const API_KEY_ENV: &str = "PORTCULLIS_PFSENSE_API_KEY";
/// Default batch window: every change is a config write and a filter reload.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(5);

/// The `[firewall.pfsense]` table as written.
///
/// Unknown keys are refused by name in `from_raw` (`deny_unknown_fields` does not work with `flatten`).
#[derive(Debug, Deserialize)]
pub struct RawPfsenseConfig {
    /// Web GUI base URL (`https://192.168.1.1`) with the REST API package (pfrest v2) installed.
    pub url: String,
    /// REST API key (System → REST API → Keys) sent as `X-API-Key`; or `api_key_file`, or the
    /// `PORTCULLIS_PFSENSE_API_KEY` environment variable.
    pub api_key: Option<String>,
    /// File holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// Name of the network alias that holds the blocks (both families).
    #[serde(default = "http::default_object_name")]
    pub alias: String,
    /// Create the alias at start when it does not exist. The firewall rule that blocks its sources is
    /// always a manual step.
    #[serde(default)]
    pub create_alias: bool,
    /// How long the agent keeps collecting messages before one commit ("5s"); each commit reloads the
    /// filter.
    pub batch_window: Option<Span>,
    /// Certificate trust and request time limit: `ca_file`, `fingerprint`, `insecure_skip_verify`,
    /// `timeout`; and every other key, refused by name (see [`RawConnection`]).
    #[serde(flatten)]
    pub connection: RawConnection,
}

/// The validated `[firewall.pfsense]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfsenseConfig {
    /// Where the firewall is and how it is trusted.
    pub endpoint: Endpoint,
    /// API key.
    pub api_key: SecretSource,
    /// Alias name.
    pub alias: String,
    /// Create the alias when missing.
    pub create_alias: bool,
    /// The agent's batch window.
    pub batch_window: Duration,
}

impl PfsenseConfig {
    /// Checks the raw keys; no I/O.
    pub fn from_raw(raw: RawPfsenseConfig) -> Result<Self, ConfigError> {
        raw.connection.refuse_unknown(TABLE)?;
        let alias = http::pf_alias_name(TABLE, &raw.alias, 31, "pfSense")?;
        Ok(Self {
            endpoint: raw
                .connection
                .endpoint(TABLE, &raw.url, Some(Span::secs(30)))?,
            api_key: SecretSource::new(
                TABLE,
                "api_key",
                raw.api_key,
                raw.api_key_file,
                API_KEY_ENV,
            )?,
            alias,
            create_alias: raw.create_alias,
            batch_window: raw.batch_window.map_or(DEFAULT_BATCH_WINDOW, Span::get),
        })
    }
}
