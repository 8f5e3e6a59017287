//! Queue connections: connection strings, SAS URLs and Entra credentials turned into queue clients, and the
//! few queue operations Portcullis uses (send, receive, delete, count, create).
//!
//! Both binaries reach Azure Storage Queues only through [`QueueConnection`] and [`Queue`]. Secrets (account
//! keys, SAS signatures) never appear in `Debug` output or in [`QueueError`] texts.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ExponentialRetryOptions, RetryOptions, StatusCode, Url};
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientPeekMessagesOptions,
    QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};

use crate::credential::BoundedCredential;
use crate::sas::{redact, AccountSas};

/// Azurite's published development account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development account key.
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Lifetime of the account SAS derived from an account key; clients are rebuilt before it runs out.
const DERIVED_SAS_LIFETIME: Duration = Duration::hours(1);
const DERIVED_SAS_REFRESH_BEFORE: Duration = Duration::minutes(10);

/// Why a connection setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The connection string or URL cannot be understood; the text says which part.
    #[error("invalid queue connection: {0}")]
    Invalid(String),
    /// The credential could not be built.
    #[error("cannot build the queue credential: {0}")]
    Credential(String),
}

/// A queue operation failed. Texts are redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist.
    #[error("queue `{0}` does not exist")]
    NotFound(String),
    /// Authentication or authorisation failed (401/403): a wrong key, an expired SAS, a missing role.
    #[error("queue access denied: {0}")]
    Denied(String),
    /// The message's pop receipt no longer matches (someone else received it, or it became visible again).
    #[error("message receipt is stale: {0}")]
    StaleReceipt(String),
    /// Anything else (network, 5xx after the SDK's retries, bad responses).
    #[error("queue service unavailable: {0}")]
    Unavailable(String),
}

impl QueueError {
    fn from_azure(err: &azure_core::Error, queue: &str) -> Self {
        let text = redact(&format!("{err:?}"));
        match err.http_status() {
            Some(StatusCode::NotFound) if text.contains("QueueNotFound") => {
                Self::NotFound(queue.to_owned())
            }
            Some(StatusCode::NotFound) | Some(StatusCode::BadRequest)
                if text.contains("MessageNotFound")
                    || text.contains("PopReceipt")
                    || text.contains("popreceipt") =>
            {
                Self::StaleReceipt(text)
            }
            Some(StatusCode::NotFound) => Self::NotFound(queue.to_owned()),
            Some(StatusCode::Unauthorized) | Some(StatusCode::Forbidden) => {
                Self::Denied(readable(err))
            }
            _ => Self::Unavailable(readable(err)),
        }
    }
}

/// One readable line for an SDK error: the HTTP status and the service's error code, or the chain of causes of a
/// transport error ("… : Connection refused (os error 111)"). The SDK's `Debug` output, which this replaces in
/// messages, spans many lines, embeds the raw response and, with `RUST_BACKTRACE=1`, a backtrace.
fn readable(err: &azure_core::Error) -> String {
    let line = match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let code = error_code
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!(
                "HTTP {} {}{code}",
                u16::from(*status),
                status.canonical_reason()
            )
        }
        _ => {
            let mut parts: Vec<String> = vec![err.to_string()];
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                source = cause.source();
            }
            parts.join(": ")
        }
    };
    redact(&line.replace(['\n', '\r'], " "))
}

enum Auth {
    /// A SAS query string to put on every URL.
    Sas(String),
    /// An account key from which short-lived account SAS tokens are derived.
    AccountKey { account: String, key: Vec<u8> },
    /// An Entra ID credential (managed identity, service principal, Azure CLI).
    Token(Arc<dyn TokenCredential>),
}

/// Where the queues are and how to authenticate; cheap to share behind an `Arc`.
pub struct QueueConnection {
    service_url: Url,
    auth: Auth,
    queue_hint: Option<String>,
    api_version: Option<String>,
    retry: Option<RetryLimits>,
    sas_permissions: &'static str,
}

/// Bounds on the SDK's retries of one operation (see [`QueueConnection::with_retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLimits {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry starts after this long since the first attempt.
    pub max_total: std::time::Duration,
}

/// Permissions of the account SAS derived from an account key, unless narrowed with
/// [`QueueConnection::with_account_sas_permissions`]: everything either binary may do.
const DEFAULT_SAS_PERMISSIONS: &str = "rwdlacup";

impl fmt::Debug for QueueConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::Sas(_) => "sas",
            Auth::AccountKey { .. } => "account-key",
            Auth::Token(_) => "entra-token",
        };
        f.debug_struct("QueueConnection")
            .field("service_url", &self.service_url.as_str())
            .field("auth", &auth)
            .field("queue_hint", &self.queue_hint)
            .field("retry", &self.retry)
            .finish()
    }
}

fn invalid(why: impl Into<String>) -> ConnectionError {
    ConnectionError::Invalid(why.into())
}

fn trim_slash(mut url: Url) -> Url {
    // A trailing slash on a path-style (emulator) URL makes the SDK build `//queue`.
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    url
}

/// Longest unknown key named in an error; longer texts, or any with other than ASCII letters, may be a
/// secret pasted in the wrong place and are referred to by position only.
const MAX_ECHOED_KEY: usize = 40;

fn unknown_key(position: usize, name: &str) -> String {
    let looks_like_a_key = !name.is_empty()
        && name.len() <= MAX_ECHOED_KEY
        && name.bytes().all(|b| b.is_ascii_alphabetic());
    if looks_like_a_key {
        format!("unknown connection string key `{name}` (part {position})")
    } else {
        format!("part {position} of the connection string is not a known key")
    }
}

impl QueueConnection {
    /// Parses what a user puts in one setting: a connection string (`UseDevelopmentStorage=true`,
    /// `AccountName=…;AccountKey=…`, `…;SharedAccessSignature=…`) or a SAS URL of a queue or the service.
    pub fn parse(text: &str) -> Result<Self, ConnectionError> {
        let text = text.trim();
        if text.starts_with("http://") || text.starts_with("https://") {
            return Self::from_sas_url(text);
        }
        Self::from_connection_string(text)
    }

    /// Parses a storage connection string.
    pub fn from_connection_string(text: &str) -> Result<Self, ConnectionError> {
        let mut account = None;
        let mut key = None;
        let mut protocol = "https".to_owned();
        let mut suffix = "core.windows.net".to_owned();
        let mut queue_endpoint = None;
        let mut sas = None;
        let mut dev = false;
        let mut dev_proxy = None;
        // Errors name a part by its position, never by its text: a pasted account key or SAS is "a part
        // that is not a key", and must not end up in a start-up error or a log.
        for (index, part) in text.split(';').map(str::trim).enumerate() {
            let position = index + 1;
            if part.is_empty() {
                continue;
            }
            let (name, value) = part.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "part {position} of the connection string is not a key=value pair"
                ))
            })?;
            match name.trim().to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" => dev = value.trim().eq_ignore_ascii_case("true"),
                "developmentstorageproxyuri" => dev_proxy = Some(value.trim().to_owned()),
                "defaultendpointsprotocol" => protocol = value.trim().to_ascii_lowercase(),
                "accountname" => account = Some(value.trim().to_owned()),
                "accountkey" => key = Some(value.trim().to_owned()),
                "endpointsuffix" => suffix = value.trim().to_owned(),
                "queueendpoint" => queue_endpoint = Some(value.trim().to_owned()),
                "sharedaccesssignature" => {
                    sas = Some(value.trim().trim_start_matches('?').to_owned())
                }
                // Other services' endpoints are legal in a storage connection string and irrelevant here.
                "blobendpoint" | "tableendpoint" | "fileendpoint" => {}
                other => return Err(invalid(unknown_key(position, other))),
            }
        }
        if dev {
            let base = dev_proxy.unwrap_or_else(|| "http://127.0.0.1".to_owned());
            let url = Url::parse(&format!(
                "{}:10001/{DEV_ACCOUNT}",
                base.trim_end_matches('/')
            ))
            .map_err(|e| invalid(format!("DevelopmentStorageProxyUri: {e}")))?;
            return Ok(Self {
                service_url: url,
                auth: Auth::AccountKey {
                    account: DEV_ACCOUNT.to_owned(),
                    key: BASE64
                        .decode(DEV_ACCOUNT_KEY)
                        .expect("well-known key is base64"),
                },
                queue_hint: None,
                api_version: None,
                retry: None,
                sas_permissions: DEFAULT_SAS_PERMISSIONS,
            });
        }
        let service_url = match (&queue_endpoint, &account) {
            (Some(endpoint), _) => {
                Url::parse(endpoint).map_err(|e| invalid(format!("QueueEndpoint: {e}")))?
            }
            (None, Some(account)) => Url::parse(&format!("{protocol}://{account}.queue.{suffix}"))
                .map_err(|e| invalid(format!("AccountName/EndpointSuffix: {e}")))?,
            (None, None) => return Err(invalid("needs AccountName or QueueEndpoint")),
        };
        let service_url = trim_slash(service_url);
        let auth = match (sas, key) {
            (Some(sas), _) => Auth::Sas(sas),
            (None, Some(key)) => {
                let account = account.ok_or_else(|| invalid("AccountKey needs AccountName"))?;
                let key = BASE64
                    .decode(&key)
                    .map_err(|_| invalid("AccountKey is not base64"))?;
                Auth::AccountKey { account, key }
            }
            (None, None) => return Err(invalid("needs AccountKey or SharedAccessSignature")),
        };
        Ok(Self {
            service_url,
            auth,
            queue_hint: None,
            api_version: None,
            retry: None,
            sas_permissions: DEFAULT_SAS_PERMISSIONS,
        })
    }

    /// Parses a SAS URL: `https://acct.queue.core.windows.net/queue?sv=…&sig=…` (queue-scoped) or the
    /// service URL with an account SAS. Path-style URLs (`http://127.0.0.1:10001/devstoreaccount1/queue?…`)
    /// work too.
    pub fn from_sas_url(text: &str) -> Result<Self, ConnectionError> {
        let url = Url::parse(text).map_err(|e| invalid(format!("SAS URL: {e}")))?;
        let query = url
            .query()
            .filter(|q| q.contains("sig="))
            .ok_or_else(|| invalid("the URL has no SAS (`sig=`)"))?;
        let query = query.to_owned();
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let host = url.host_str().unwrap_or_default();
        let path_style = host.parse::<std::net::IpAddr>().is_ok() || host == "localhost";
        let account_segments = usize::from(path_style);
        if segments.len() > account_segments + 1 {
            return Err(invalid(
                "the SAS URL has more path segments than account and queue",
            ));
        }
        let queue_hint = segments.get(account_segments).cloned();
        let mut service_url = url.clone();
        service_url.set_query(None);
        service_url.set_path(&segments[..account_segments.min(segments.len())].join("/"));
        Ok(Self {
            service_url: trim_slash(service_url),
            auth: Auth::Sas(query),
            queue_hint,
            api_version: None,
            retry: None,
            sas_permissions: DEFAULT_SAS_PERMISSIONS,
        })
    }

    /// Entra ID through a managed identity (system-assigned, or user-assigned by client id).
    pub fn managed_identity(
        service_uri: &str,
        client_id: Option<&str>,
    ) -> Result<Self, ConnectionError> {
        // The App Service (Functions) identity endpoint honours these retries; the VM one keeps its own
        // (72 s). Either way [`Self::with_retry`] bounds the whole token request (BoundedCredential).
        let client_options = azure_core::http::ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: 3,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(2),
                ..ExponentialRetryOptions::default()
            }),
            ..azure_core::http::ClientOptions::default()
        };
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_owned())),
            client_options,
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| ConnectionError::Credential(format!("{e:?}")))?;
        Self::with_credential(service_uri, credential)
    }

    /// Entra ID through a service principal's client secret.
    pub fn client_secret(
        service_uri: &str,
        tenant_id: &str,
        client_id: &str,
        secret: &str,
    ) -> Result<Self, ConnectionError> {
        let credential = ClientSecretCredential::new(
            tenant_id,
            client_id.to_owned(),
            Secret::new(secret.to_owned()),
            None,
        )
        .map_err(|e| ConnectionError::Credential(redact(&format!("{e:?}"))))?;
        Self::with_credential(service_uri, credential)
    }

    /// Entra ID through the signed-in Azure CLI (development only).
    pub fn azure_cli(service_uri: &str) -> Result<Self, ConnectionError> {
        let credential = AzureCliCredential::new(None)
            .map_err(|e| ConnectionError::Credential(format!("{e:?}")))?;
        Self::with_credential(service_uri, credential)
    }

    /// Any token credential; the service URI must be https.
    pub fn with_credential(
        service_uri: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, ConnectionError> {
        let url =
            Url::parse(service_uri).map_err(|e| invalid(format!("queue service URI: {e}")))?;
        if url.scheme() != "https" {
            return Err(invalid(
                "an Entra ID credential needs an https queue service URI",
            ));
        }
        Ok(Self {
            service_url: trim_slash(url),
            auth: Auth::Token(credential),
            queue_hint: None,
            api_version: None,
            retry: None,
            sas_permissions: DEFAULT_SAS_PERMISSIONS,
        })
    }

    /// Overrides the `x-ms-version` the client sends (the SDK's default is newer than some emulators).
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// The `x-ms-version` set by [`Self::with_api_version`], if any.
    pub fn api_version(&self) -> Option<&str> {
        self.api_version.as_deref()
    }

    /// Bounds the SDK's retries of every operation: at most `max_retries` retries (exponential back-off
    /// from 200 ms, at most 2 s apart), none started later than `max_total` after the first attempt. The
    /// SDK's default (8 retries within a minute, up to 30 s apart) makes a dead queue take well over a
    /// minute to report, longer than a webhook caller waits for an answer. An Entra ID token request is
    /// bounded by `max_total` as well (the identity crate retries on its own, for up to 72 s).
    pub fn with_retry(mut self, max_retries: u32, max_total: std::time::Duration) -> Self {
        if let Auth::Token(credential) = &self.auth {
            self.auth = Auth::Token(BoundedCredential::new(Arc::clone(credential), max_total));
        }
        self.retry = Some(RetryLimits {
            max_retries,
            max_total,
        });
        self
    }

    /// The retry bounds set by [`Self::with_retry`], if any.
    pub fn retry(&self) -> Option<RetryLimits> {
        self.retry
    }

    /// Narrows the account SAS derived from an account key to `permissions` (account SAS letters, e.g.
    /// `"a"` to add messages, `"ac"` to also create queues). No effect on SAS and Entra connections,
    /// whose rights are fixed by whoever issued them. The default grants everything either binary does.
    pub fn with_account_sas_permissions(mut self, permissions: &'static str) -> Self {
        self.sas_permissions = permissions;
        self
    }

    /// The queue named in a queue-scoped SAS URL, if any.
    pub fn queue_hint(&self) -> Option<&str> {
        self.queue_hint.as_deref()
    }

    /// The service URL without credentials.
    pub fn service_url(&self) -> &Url {
        &self.service_url
    }

    /// A handle on one queue of this connection.
    pub fn queue(self: &Arc<Self>, name: &str) -> Queue {
        Queue {
            connection: Arc::clone(self),
            name: name.to_owned(),
            cached: Mutex::new(None),
            transactions: AtomicU64::new(0),
        }
    }

    fn build_client(&self, name: &str) -> Result<(QueueClient, Option<DateTime<Utc>>), QueueError> {
        let mut url = self.service_url.clone();
        let path = format!("{}/{name}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let (credential, refresh_at) = match &self.auth {
            Auth::Sas(query) => {
                url.set_query(Some(query));
                (None, None)
            }
            Auth::AccountKey { account, key } => {
                let now = Utc::now();
                let expiry = now + DERIVED_SAS_LIFETIME;
                let sas = AccountSas {
                    account,
                    permissions: self.sas_permissions,
                    resource_types: "sco",
                    // Tolerate a few minutes of clock skew against the service.
                    start: Some(now - Duration::minutes(5)),
                    expiry,
                    protocol: if url.scheme() == "https" {
                        "https"
                    } else {
                        "https,http"
                    },
                };
                url.set_query(Some(&sas.sign(key)));
                (None, Some(expiry - DERIVED_SAS_REFRESH_BEFORE))
            }
            Auth::Token(credential) => (Some(Arc::clone(credential)), None),
        };
        let mut options = QueueClientOptions::default();
        if let Some(version) = &self.api_version {
            options.version = version.clone();
        }
        if let Some(limits) = self.retry {
            let max_total = i64::try_from(limits.max_total.as_millis()).unwrap_or(i64::MAX);
            options.client_options.retry = RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: limits.max_retries,
                max_total_elapsed: azure_core::time::Duration::milliseconds(max_total),
                max_delay: azure_core::time::Duration::seconds(2),
                ..ExponentialRetryOptions::default()
            });
        }
        let client = QueueClient::new(url, credential, Some(options))
            .map_err(|e| QueueError::Unavailable(redact(&format!("{e:?}"))))?;
        Ok((client, refresh_at))
    }
}

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Service-assigned message id.
    pub id: String,
    /// Receipt needed to delete this delivery of the message.
    pub pop_receipt: String,
    /// The message text.
    pub text: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
}

/// A client and, for a derived SAS, when to rebuild it.
type CachedClient = (Arc<QueueClient>, Option<DateTime<Utc>>);

/// One message as peeked: visible to others, no delivery counted.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// Service-assigned message id.
    pub id: String,
    /// The message text.
    pub text: String,
    /// How many times the message has been received so far.
    pub dequeue_count: u32,
}

/// A handle on one queue; rebuilds its client before a derived SAS expires and counts storage transactions.
pub struct Queue {
    connection: Arc<QueueConnection>,
    name: String,
    cached: Mutex<Option<CachedClient>>,
    transactions: AtomicU64,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("connection", &self.connection)
            .finish()
    }
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Storage transactions this handle has made (one per REST call).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    fn client(&self) -> Result<Arc<QueueClient>, QueueError> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((client, refresh_at)) = cached.as_ref() {
            if refresh_at.is_none_or(|at| Utc::now() < at) {
                return Ok(Arc::clone(client));
            }
        }
        let (client, refresh_at) = self.connection.build_client(&self.name)?;
        let client = Arc::new(client);
        *cached = Some((Arc::clone(&client), refresh_at));
        Ok(client)
    }

    fn count(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates the queue if it does not exist (idempotent).
    pub async fn create_if_missing(&self) -> Result<(), QueueError> {
        let client = self.client()?;
        self.count();
        client
            .create(None)
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        Ok(())
    }

    /// True if the queue exists.
    pub async fn exists(&self) -> Result<bool, QueueError> {
        let client = self.client()?;
        self.count();
        client
            .exists()
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))
    }

    /// Sends one message that lives `ttl_secs` seconds (at least 1).
    pub async fn send(&self, text: &str, ttl_secs: i64) -> Result<(), QueueError> {
        let client = self.client()?;
        let message = QueueMessage {
            message_text: Some(text.to_owned()),
        };
        let ttl = i32::try_from(ttl_secs.max(1)).unwrap_or(i32::MAX);
        let options = QueueClientSendMessageOptions {
            message_time_to_live: Some(ttl),
            ..Default::default()
        };
        let content = message.try_into().map_err(|e: azure_core::Error| {
            QueueError::Unavailable(format!("cannot serialise message: {e}"))
        })?;
        self.count();
        client
            .send_message(content, Some(options))
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        Ok(())
    }

    /// Receives up to `max` (1–32) messages and hides them for `visibility_secs`.
    pub async fn receive(
        &self,
        max: u8,
        visibility_secs: u32,
    ) -> Result<Vec<Received>, QueueError> {
        let client = self.client()?;
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(i32::from(max.clamp(1, 32))),
            visibility_timeout: Some(i32::try_from(visibility_secs.max(1)).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        self.count();
        let response = client
            .receive_messages(Some(options))
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        let messages = response
            .into_model()
            .map_err(|e| QueueError::Unavailable(format!("unreadable receive response: {e}")))?;
        Ok(messages
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Received {
                    id: m.message_id?,
                    pop_receipt: m.pop_receipt?,
                    text: m.message_text.unwrap_or_default(),
                    dequeue_count: m
                        .dequeue_count
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(1),
                })
            })
            .collect())
    }

    /// Reads up to `max` (1–32) messages without hiding them or counting a delivery. Needs only read
    /// permission (SAS `r`, or the Message Processor role), so the agent's `check` can prove the queue is
    /// readable without consuming anything.
    pub async fn peek(&self, max: u8) -> Result<Vec<Peeked>, QueueError> {
        let client = self.client()?;
        let options = QueueClientPeekMessagesOptions {
            number_of_messages: Some(i32::from(max.clamp(1, 32))),
            ..Default::default()
        };
        self.count();
        let response = client
            .peek_messages(Some(options))
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        let messages = response
            .into_model()
            .map_err(|e| QueueError::Unavailable(format!("unreadable peek response: {e}")))?;
        Ok(messages
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(Peeked {
                    id: m.message_id?,
                    text: m.message_text.unwrap_or_default(),
                    dequeue_count: m
                        .dequeue_count
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                })
            })
            .collect())
    }

    /// Deletes one received message.
    pub async fn delete(&self, id: &str, pop_receipt: &str) -> Result<(), QueueError> {
        let client = self.client()?;
        self.count();
        client
            .delete_message(id, pop_receipt, None)
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        Ok(())
    }

    /// The approximate number of messages in the queue.
    pub async fn approximate_count(&self) -> Result<i64, QueueError> {
        let client = self.client()?;
        self.count();
        let response = client
            .get_properties(None)
            .await
            .map_err(|e| QueueError::from_azure(&e, &self.name))?;
        response
            .approximate_messages_count()
            .map_err(|e| QueueError::Unavailable(format!("unreadable queue properties: {e}")))
            .map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let c = QueueConnection::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            c.service_url().as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert!(!format!("{c:?}").contains("Eby8"));
    }

    #[test]
    fn account_key_with_explicit_endpoint() {
        let c = QueueConnection::parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};QueueEndpoint=http://127.0.0.1:12345/{DEV_ACCOUNT}/;"
        ))
        .unwrap();
        assert_eq!(
            c.service_url().as_str(),
            "http://127.0.0.1:12345/devstoreaccount1"
        );
        let (client, refresh) = c.build_client("portcullis").unwrap();
        assert!(client
            .url()
            .as_str()
            .starts_with("http://127.0.0.1:12345/devstoreaccount1/portcullis?sv="));
        assert!(refresh.is_some());
    }

    #[test]
    fn the_derived_sas_grants_what_was_asked() {
        let text = format!("AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY}");
        let c = QueueConnection::parse(&text).unwrap();
        let (client, _) = c.build_client("q").unwrap();
        assert!(client.url().as_str().contains("sp=rwdlacup&"));
        let c = QueueConnection::parse(&text)
            .unwrap()
            .with_account_sas_permissions("a");
        let (client, _) = c.build_client("q").unwrap();
        assert!(client.url().as_str().contains("sp=a&"), "{}", client.url());
        assert_eq!(c.retry(), None);
        let c = c.with_retry(2, std::time::Duration::from_secs(10));
        assert_eq!(
            c.retry(),
            Some(RetryLimits {
                max_retries: 2,
                max_total: std::time::Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn account_key_builds_the_public_endpoint() {
        let c = QueueConnection::parse(
            "AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(
            c.service_url().as_str(),
            "https://acct.queue.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn sas_connection_string_and_urls() {
        let c = QueueConnection::parse(
            "QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=sv=1&sig=x",
        )
        .unwrap();
        let (client, _) = c.build_client("q").unwrap();
        assert_eq!(
            client.url().as_str(),
            "https://acct.queue.core.windows.net/q?sv=1&sig=x"
        );

        let c =
            QueueConnection::parse("https://acct.queue.core.windows.net/site1?sv=1&sp=rup&sig=abc")
                .unwrap();
        assert_eq!(c.queue_hint(), Some("site1"));
        assert!(!format!("{c:?}").contains("abc"));

        let c =
            QueueConnection::parse("http://127.0.0.1:10001/devstoreaccount1/site2?sv=1&sig=abc")
                .unwrap();
        assert_eq!(c.queue_hint(), Some("site2"));
        assert_eq!(
            c.service_url().as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        for (text, needle) in [
            ("AccountName=a", "AccountKey or SharedAccessSignature"),
            ("Foo=bar", "unknown connection string key `foo`"),
            ("AccountName=a;AccountKey=!!", "not base64"),
            ("https://acct.queue.core.windows.net/q", "no SAS"),
            (
                "garbage",
                "part 1 of the connection string is not a key=value pair",
            ),
        ] {
            let err = QueueConnection::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = QueueConnection::with_credential(
            "http://x",
            ManagedIdentityCredential::new(None).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("https"));
    }

    // First-hour defect 2: errors were the SDK's multi-line Debug dump.
    #[test]
    fn sdk_errors_read_as_one_line_with_the_cause() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let err = azure_core::Error::with_error(
            azure_core::error::ErrorKind::Io,
            refused,
            "error sending request",
        );
        let e = QueueError::from_azure(&err, "q");
        assert_eq!(
            e.to_string(),
            "queue service unavailable: error sending request: Connection refused (os error 111)"
        );
        let err = azure_core::Error::new(
            azure_core::error::ErrorKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: Some("AuthenticationFailed".to_owned()),
                raw_response: None,
            },
            "Server failed to authenticate the request.\nRequestId:1",
        );
        assert_eq!(
            QueueError::from_azure(&err, "q").to_string(),
            "queue access denied: HTTP 403 Forbidden (AuthenticationFailed)"
        );
    }

    #[test]
    fn retry_bounds_also_bound_the_token_request() {
        let c = QueueConnection::with_credential(
            "https://acct.queue.core.windows.net",
            ManagedIdentityCredential::new(None).unwrap(),
        )
        .unwrap();
        assert!(!format!("{:?}", token_credential(&c)).contains("BoundedCredential"));
        let c = c.with_retry(3, std::time::Duration::from_secs(10));
        let debug = format!("{:?}", token_credential(&c));
        assert!(debug.contains("BoundedCredential"), "{debug}");
        assert!(debug.contains("limit: 10s"), "{debug}");
    }

    fn token_credential(c: &QueueConnection) -> &Arc<dyn TokenCredential> {
        match &c.auth {
            Auth::Token(credential) => credential,
            _ => panic!("not a token connection"),
        }
    }

    #[test]
    fn errors_never_echo_a_misplaced_secret() {
        // Review finding D2: a bare account key was echoed as an "unknown key", and a part without `=` was
        // printed verbatim.
        let sas = "sv=2024-11-04&ss=q&srt=sco&sp=rwdlacup&se=2030-01-01&sig=Ab%2Fcd%3D";
        for (text, needle, secret) in [
            (
                DEV_ACCOUNT_KEY.to_owned(),
                "part 1 of the connection string is not a known key",
                "Eby8vdM0",
            ),
            (
                "AccountName=a;SUPERSECRETKEYNOEQUALS".to_owned(),
                "part 2 of the connection string is not a key=value pair",
                "SUPERSECRET",
            ),
            (
                format!("AccountName=a;{DEV_ACCOUNT_KEY}"),
                "part 2 of the connection string is not a known key",
                "Eby8vdM0",
            ),
            (
                format!("AccountName=a;;{sas}"),
                "unknown connection string key `sv` (part 3)",
                "Ab%2Fcd",
            ),
            (
                "AccountName=a;supersecretkeymadeofonlylettersbutfarlongerthanforty=x".to_owned(),
                "part 2 of the connection string is not a known key",
                "supersecret",
            ),
        ] {
            let err = QueueConnection::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(
                !err.to_ascii_lowercase()
                    .contains(&secret.to_ascii_lowercase()),
                "{err}"
            );
            assert!(!err.contains("sig=") && !err.contains("=="), "{err}");
        }
        let err = QueueConnection::parse("AccountName=a;Bogus=1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown connection string key `bogus` (part 2)"),
            "{err}"
        );
    }
}
