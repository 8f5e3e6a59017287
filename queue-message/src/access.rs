//! How the handler and the agent reach the queue service, named once for both: the queue-name rule, the
//! connection and authentication model ([`QueueAccess`], whose `Debug` names nothing secret) and the
//! log-format setting both binaries share.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::connection::{ConnectionError, QueueConnection};

/// Azure queue names: 3–63 characters, lower-case letters, digits and single hyphens, starting and ending
/// with a letter or digit.
pub fn valid_queue_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// How a client reaches the queue service.
#[derive(Clone, PartialEq, Eq)]
pub enum QueueAccess {
    /// A connection string or SAS URL (secret).
    ConnectionText(String),
    /// A service principal's client secret.
    ClientSecret {
        /// `https://<account>.queue.core.windows.net`.
        service_uri: String,
        /// Tenant id.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// The signed-in Azure CLI (development).
    AzureCli {
        /// `https://<account>.queue.core.windows.net`.
        service_uri: String,
    },
    /// A managed identity (Azure Functions, VMs, Arc).
    ManagedIdentity {
        /// `https://<account>.queue.core.windows.net`.
        service_uri: String,
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
}

impl QueueAccess {
    /// Builds the connection (no I/O).
    pub fn connect(&self) -> Result<QueueConnection, ConnectionError> {
        match self {
            Self::ConnectionText(text) => QueueConnection::parse(text),
            Self::ClientSecret {
                service_uri,
                tenant_id,
                client_id,
                secret,
            } => QueueConnection::client_secret(service_uri, tenant_id, client_id, secret),
            Self::AzureCli { service_uri } => QueueConnection::azure_cli(service_uri),
            Self::ManagedIdentity {
                service_uri,
                client_id,
            } => QueueConnection::managed_identity(service_uri, client_id.as_deref()),
        }
    }

    /// Whether signing in goes through the Entra login host (client secret, Azure CLI).
    pub fn signs_in_at_entra(&self) -> bool {
        matches!(self, Self::ClientSecret { .. } | Self::AzureCli { .. })
    }
}

/// What kind of connection text this is, naming nothing secret: never a prefix of the text itself (a
/// connection string may start with `AccountKey=…`), only the recognised kind and, for a SAS URL, its host
/// and path.
fn describe_connection_text(text: &str) -> String {
    let text = text.trim();
    if let Ok(url) = url::Url::parse(text) {
        if matches!(url.scheme(), "http" | "https") {
            return format!(
                "SAS URL for {}{}",
                url.host_str().unwrap_or("?"),
                url.path()
            );
        }
    }
    let has = |key: &str| {
        text.split(';').any(|part| {
            part.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        })
    };
    if has("UseDevelopmentStorage") {
        "development storage connection string".to_owned()
    } else if has("AccountKey") {
        "account-key connection string".to_owned()
    } else if has("SharedAccessSignature") {
        "SAS connection string".to_owned()
    } else {
        "unrecognised connection text".to_owned()
    }
}

impl fmt::Debug for QueueAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectionText(text) => write!(
                f,
                "ConnectionText({}, <redacted>)",
                describe_connection_text(text)
            ),
            Self::ClientSecret {
                service_uri,
                tenant_id,
                client_id,
                ..
            } => write!(
                f,
                "ClientSecret({service_uri}, tenant {tenant_id}, client {client_id}, <redacted>)"
            ),
            Self::AzureCli { service_uri } => write!(f, "AzureCli({service_uri})"),
            Self::ManagedIdentity {
                service_uri,
                client_id,
            } => write!(f, "ManagedIdentity({service_uri}, {client_id:?})"),
        }
    }
}

/// Log output format (`text` or `json`), the same setting in both binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("`{s}` is not a log format (`text` or `json`)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_the_azure_rule() {
        for ok in ["abc", "portcullis", "site-1-poison", &"a".repeat(63)] {
            assert!(valid_queue_name(ok), "{ok}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a--b", "a_b", &"a".repeat(64)] {
            assert!(!valid_queue_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_names_the_kind_never_the_secret() {
        let key = "AccountName=a;AccountKey=c2VjcmV0c2VjcmV0;EndpointSuffix=core.windows.net";
        let shown = format!("{:?}", QueueAccess::ConnectionText(key.to_owned()));
        assert!(shown.contains("account-key connection string"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        let shown = format!(
            "{:?}",
            QueueAccess::ClientSecret {
                service_uri: "https://a.queue.core.windows.net".to_owned(),
                tenant_id: "t".to_owned(),
                client_id: "c".to_owned(),
                secret: "hunter2hunter2".to_owned(),
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn log_formats_parse_in_any_case() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
