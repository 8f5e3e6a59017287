//! `[firewall.mikrotik]`: the raw TOML keys and their validated form.

use std::path::PathBuf;

use serde::Deserialize;

use crate::backends::http::{self, Endpoint, RawConnection, SecretSource};
use crate::config::ConfigError;

/// The table's dotted name, for error messages.
pub const TABLE: &str = "firewall.mikrotik";
/// Environment variable for the password when neither `password` nor `password_file` is set.
pub const PASSWORD_ENV: &str = "PORTCULLIS_MIKROTIK_PASSWORD";

/// The `[firewall.mikrotik]` table as written.
///
/// Unknown keys are refused by name in `from_raw` (`deny_unknown_fields` does not work with `flatten`).
#[derive(Debug, Deserialize)]
pub struct RawMikrotikConfig {
    /// Router base URL with the `www-ssl` service (`https://192.168.88.1`); the REST API is below `/rest`.
    pub url: String,
    /// RouterOS user in a group with the `read`, `write`, `api` and `rest-api` policies.
    pub username: String,
    /// Its password; or `password_file`, or the `PORTCULLIS_MIKROTIK_PASSWORD` environment variable.
    pub password: Option<String>,
    /// File holding the password (one line).
    pub password_file: Option<PathBuf>,
    /// Address list the agent adds to (`/ip firewall address-list` and `/ipv6 firewall address-list`).
    #[serde(default = "http::default_object_name")]
    pub list: String,
    /// Comment that tags the agent's entries; entries without it are never changed or removed.
    #[serde(default = "http::default_object_name")]
    pub comment: String,
    /// Certificate trust and request time limit: `ca_file`, `fingerprint`, `insecure_skip_verify`,
    /// `timeout`; and every other key, refused by name (see [`RawConnection`]).
    #[serde(flatten)]
    pub connection: RawConnection,
}

/// The validated `[firewall.mikrotik]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MikrotikConfig {
    /// Where the router is and how it is trusted.
    pub endpoint: Endpoint,
    /// RouterOS user.
    pub username: String,
    /// Its password.
    pub password: SecretSource,
    /// Address list name.
    pub list: String,
    /// Ownership tag.
    pub comment: String,
}

fn plain(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(ConfigError::new(
            format!("{TABLE}.{key}"),
            format!("{value:?}: use letters, digits, `-`, `_`, `.` and `:` only"),
        ));
    }
    Ok(value.to_owned())
}

impl MikrotikConfig {
    /// Checks the raw keys; no I/O.
    pub fn from_raw(raw: RawMikrotikConfig) -> Result<Self, ConfigError> {
        raw.connection.refuse_unknown(TABLE)?;
        Ok(Self {
            endpoint: raw.connection.endpoint(TABLE, &raw.url, None)?,
            username: plain("username", &raw.username)?,
            password: SecretSource::new(
                TABLE,
                "password",
                raw.password,
                raw.password_file,
                PASSWORD_ENV,
            )?,
            list: plain("list", &raw.list)?,
            comment: plain("comment", &raw.comment)?,
        })
    }
}
