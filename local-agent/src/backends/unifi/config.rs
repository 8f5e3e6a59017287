//! `[firewall.unifi]`: the raw TOML keys and their validated form.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::backends::http::{self, Endpoint, RawConnection, SecretSource};
use crate::config::ConfigError;
use crate::span::Span;

/// The table's dotted name, for error messages.
pub const TABLE: &str = "firewall.unifi";

/// Environment variable for the password when neither `password` nor `password_file` is set.
pub const PASSWORD_ENV: &str = "PORTCULLIS_UNIFI_PASSWORD";
/// Environment variable for the integration API key when neither `api_key` nor `api_key_file` is set.
pub const API_KEY_ENV: &str = "PORTCULLIS_UNIFI_API_KEY";

/// The `[firewall.unifi]` table as written. Keys are fixed: packaging and tests depend on them.
/// Unknown keys are refused by name in `from_raw` (`deny_unknown_fields` does not work with `flatten`).
#[derive(Debug, Deserialize)]
pub struct RawUnifiConfig {
    /// Console or controller base URL (`https://192.168.1.1`, `https://controller:8443`); the login style
    /// (UniFi OS or classic controller) is detected from it.
    pub url: String,
    /// Site name as in the controller's URLs (`default`), or, with `api_key`, the site's name or id.
    #[serde(default = "default_site")]
    pub site: String,
    /// Local admin account without 2FA (classic and UniFi OS login). Leave out to use `api_key`.
    pub username: Option<String>,
    /// Password of `username`; or `password_file`, or the `PORTCULLIS_UNIFI_PASSWORD` environment variable.
    pub password: Option<String>,
    /// File holding the password (one line).
    pub password_file: Option<PathBuf>,
    /// Official integration API key (`X-API-KEY`, Network → Settings → Control Plane → Integrations): the
    /// blocks then live in traffic matching lists instead of firewall groups. Or `api_key_file`, or the
    /// `PORTCULLIS_UNIFI_API_KEY` environment variable when `username` is not set.
    pub api_key: Option<String>,
    /// File holding the API key (one line).
    pub api_key_file: Option<PathBuf>,
    /// Prefix of the groups the agent owns: `<group_name>-v4-0`, `-v4-1`, … and `<group_name>-v6-0`, ….
    #[serde(default = "http::default_object_name")]
    pub group_name: String,
    /// Create missing groups (the first of each family at start, further shards when one is full). The
    /// firewall rule or zone policy that drops traffic from them is always a manual step.
    #[serde(default)]
    pub create_groups: bool,
    /// Most members per group before the next shard is used (UniFi community limit: 10,000).
    #[serde(default = "default_max_group_size")]
    pub max_group_size: usize,
    /// Least time between two writes to the controller ("5s"), so a burst never becomes a write storm.
    pub min_write_interval: Option<Span>,
    /// How long the agent keeps collecting messages before one commit ("5s").
    pub batch_window: Option<Span>,
    /// Certificate trust and request time limit: `ca_file`, `fingerprint`, `insecure_skip_verify`,
    /// `timeout`; and every other key, refused by name (see [`RawConnection`]).
    #[serde(flatten)]
    pub connection: RawConnection,
}

fn default_site() -> String {
    "default".to_owned()
}

fn default_max_group_size() -> usize {
    10_000
}

/// How the agent talks to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Cookie login (`/api/login` or `/api/auth/login`, detected) with a local account; firewall groups.
    Login {
        /// Account name.
        username: String,
        /// Its password.
        password: SecretSource,
    },
    /// Official integration API with `X-API-KEY`; traffic matching lists.
    ApiKey(SecretSource),
}

/// The validated `[firewall.unifi]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiConfig {
    /// Where the console is and how it is trusted.
    pub endpoint: Endpoint,
    /// Site name (or id with the API key).
    pub site: String,
    /// Credentials.
    pub auth: Auth,
    /// Group name prefix.
    pub group_name: String,
    /// Create missing groups.
    pub create_groups: bool,
    /// Members per group before sharding.
    pub max_group_size: usize,
    /// Least time between writes.
    pub min_write_interval: Duration,
    /// The agent's batch window.
    pub batch_window: Duration,
}

/// Default least time between writes.
pub const DEFAULT_MIN_WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// Default batch window.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(5);

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("{TABLE}.{key}"), message)
}

impl UnifiConfig {
    /// Checks the raw keys; no I/O (secrets are read in `build`).
    // Long: one check per `[firewall.unifi]` key, each naming its key.
    pub fn from_raw(raw: RawUnifiConfig) -> Result<Self, ConfigError> {
        raw.connection.refuse_unknown(TABLE)?;
        let endpoint = raw.connection.endpoint(TABLE, &raw.url, None)?;
        let key_given = raw.api_key.is_some() || raw.api_key_file.is_some();
        let password_given = raw.password.is_some() || raw.password_file.is_some();
        let auth = match raw.username {
            Some(username) => {
                if key_given {
                    return Err(bad(
                        "api_key",
                        "set either `username` (and a password) or `api_key`, not both",
                    ));
                }
                if username.trim().is_empty() {
                    return Err(bad("username", "is empty"));
                }
                if !raw
                    .site
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                {
                    return Err(bad(
                        "site",
                        format!(
                            "{:?}: use the site's short name as in the controller's URLs (`default`)",
                            raw.site
                        ),
                    ));
                }
                Auth::Login {
                    username,
                    password: SecretSource::new(
                        TABLE,
                        "password",
                        raw.password,
                        raw.password_file,
                        PASSWORD_ENV,
                    )?,
                }
            }
            None => {
                if password_given {
                    return Err(bad("password", "is set but `username` is not"));
                }
                Auth::ApiKey(SecretSource::new(
                    TABLE,
                    "api_key",
                    raw.api_key,
                    raw.api_key_file,
                    API_KEY_ENV,
                )?)
            }
        };
        let group_name = raw.group_name.trim().to_owned();
        if group_name.is_empty()
            || !group_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "group_name",
                format!(
                    "{:?}: use letters, digits, `-`, `_` and `.` only",
                    raw.group_name
                ),
            ));
        }
        if raw.site.trim().is_empty() {
            return Err(bad("site", "is empty"));
        }
        if raw.max_group_size == 0 || raw.max_group_size > 100_000 {
            return Err(bad(
                "max_group_size",
                format!("{} is outside 1..=100000", raw.max_group_size),
            ));
        }
        Ok(Self {
            endpoint,
            site: raw.site.trim().to_owned(),
            auth,
            group_name,
            create_groups: raw.create_groups,
            max_group_size: raw.max_group_size,
            min_write_interval: raw
                .min_write_interval
                .map_or(DEFAULT_MIN_WRITE_INTERVAL, Span::get),
            batch_window: raw.batch_window.map_or(DEFAULT_BATCH_WINDOW, Span::get),
        })
    }
}
