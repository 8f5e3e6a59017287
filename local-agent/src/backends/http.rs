//! Shared HTTPS plumbing for the appliance backends (UniFi, OPNsense, MikroTik, pfSense).
//!
//! Owns what every appliance needs and nothing vendor-specific: the TLS trust decision (a CA file, a pinned
//! SHA-256 certificate fingerprint, or an explicit and loudly logged `insecure_skip_verify`), one `reqwest`
//! client with timeouts on every request and no redirect following, secrets that never reach a log or a
//! `Debug` output, and the mapping of HTTP failures to [`BackendError`]s that the agent can act on.
//!
//! The vendor modules own their URLs, bodies, credentials and envelopes; they call [`call`] (or [`send`])
//! and [`json_body`] and decide what a status code means for their API (a 401 means "log in again" on UniFi
//! but "wrong key" on OPNsense).
//!
//! The table keys every appliance shares ([`RawConnection`]: CA file, fingerprint, `insecure_skip_verify`,
//! timeout) are declared and checked here once, with [`RawConnection::refuse_unknown`] standing in for
//! `deny_unknown_fields`, which does not work with `flatten`.
//!
//! The staged batch every backend collects between two commits is not HTTP: it is
//! [`super::staged::Staged`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use super::BackendError;
use crate::config::ConfigError;
use crate::span::Span;

/// The default time limit for one HTTP request (connect, send, and read the whole answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Marker in the error text of a fingerprint mismatch, so the failure is reported as a configuration
/// problem rather than an outage.
const PIN_MISMATCH: &str = "does not match the pinned fingerprint";

/// The largest answer we read from an appliance; a 10k-member group is about 200 KB.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------------------

/// A password, API key or secret. Its `Debug` output is redacted and it has no `Display`, so it cannot end
/// up in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret comes from: the config file, a file named in it, or an environment variable, in that order
/// of precedence. Resolved in `build()` (reading files is I/O, which `validate()` must not do).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSource {
    /// What the secret is, for error messages (`password`, `api_secret`).
    what: &'static str,
    inline: Option<Secret>,
    file: Option<PathBuf>,
    env: &'static str,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = if self.inline.is_some() {
            "config".to_owned()
        } else if let Some(file) = &self.file {
            format!("file {}", file.display())
        } else {
            format!("environment {}", self.env)
        };
        write!(f, "SecretSource({} from {from})", self.what)
    }
}

impl SecretSource {
    /// A secret given inline or in a file (never both), falling back to the environment variable `env`.
    pub fn new(
        table: &str,
        what: &'static str,
        inline: Option<String>,
        file: Option<PathBuf>,
        env: &'static str,
    ) -> Result<Self, ConfigError> {
        if inline.is_some() && file.is_some() {
            return Err(ConfigError::new(
                format!("{table}.{what}"),
                format!("set either `{what}` or `{what}_file`, not both"),
            ));
        }
        Ok(Self {
            what,
            inline: inline.map(Secret::new),
            file,
            env,
        })
    }

    /// True when the secret is set in the config file or a file is named for it.
    pub fn is_configured(&self) -> bool {
        self.inline.is_some() || self.file.is_some()
    }

    /// Reads the secret. A file's trailing newline is dropped; an empty secret is refused.
    pub fn resolve(&self) -> Result<Secret, BackendError> {
        let value = if let Some(inline) = &self.inline {
            inline.expose().to_owned()
        } else if let Some(file) = &self.file {
            std::fs::read_to_string(file)
                .map_err(|err| {
                    BackendError::Config(format!(
                        "cannot read `{}_file` {}: {err}",
                        self.what,
                        file.display()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        } else {
            std::env::var(self.env).map_err(|_| {
                BackendError::Config(format!(
                    "no {what}: set `{what}`, `{what}_file`, or the environment variable {env}",
                    what = self.what,
                    env = self.env
                ))
            })?
        };
        if value.is_empty() {
            return Err(BackendError::Config(format!("the {} is empty", self.what)));
        }
        Ok(Secret(value))
    }
}

// ---------------------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------------------

/// A SHA-256 fingerprint of the appliance's certificate (DER), as shown by
/// `openssl x509 -noout -fingerprint -sha256`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parses `sha256:AB:CD:…`, `AB:CD:…` or plain hex (64 digits, any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{text:?} is not a SHA-256 fingerprint ({why}); expected \"sha256:AB:CD:…\" as printed by \
                 `openssl x509 -noout -fingerprint -sha256`"
            )
        };
        let trimmed = text.trim();
        let hex_part = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .or_else(|| trimmed.strip_prefix("sha256="))
            .or_else(|| trimmed.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(trimmed);
        let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return Err(bad("not 32 bytes"));
        }
        let mut out = [0_u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16)
                .map_err(|_| bad("not hexadecimal"))?;
        }
        Ok(Self(out))
    }

    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How the appliance's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's trust store (a certificate from a public CA, e.g. via ACME).
    System,
    /// Certificates (PEM) of the CA that issued the appliance's certificate, or the appliance's own
    /// certificate (a self-signed CA:TRUE one too, as curl accepts it); the host name is checked too.
    CaFile(PathBuf),
    /// Exactly this certificate, whoever issued it and whatever names it carries (self-signed appliances).
    Pinned(Fingerprint),
    /// No verification at all: anyone on the path can read the credentials. Logged at every start.
    InsecureSkipVerify,
}

impl TlsTrust {
    /// Chooses the trust mode from the config keys every appliance shares; at most one may be set.
    pub fn from_options(
        table: &str,
        ca_file: Option<PathBuf>,
        fingerprint: Option<&str>,
        insecure_skip_verify: bool,
    ) -> Result<Self, ConfigError> {
        let set = usize::from(ca_file.is_some())
            + usize::from(fingerprint.is_some())
            + usize::from(insecure_skip_verify);
        if set > 1 {
            return Err(ConfigError::new(
                table,
                "set only one of `ca_file`, `fingerprint` and `insecure_skip_verify`",
            ));
        }
        Ok(match (ca_file, fingerprint) {
            (Some(path), _) => Self::CaFile(path),
            (None, Some(pin)) => Self::Pinned(
                Fingerprint::parse(pin)
                    .map_err(|why| ConfigError::new(format!("{table}.fingerprint"), why))?,
            ),
            (None, None) if insecure_skip_verify => Self::InsecureSkipVerify,
            (None, None) => Self::System,
        })
    }
}

/// Accepts exactly one certificate, identified by its SHA-256 fingerprint; handshake signatures are still
/// verified, so the peer must hold the certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    /// `None` accepts any certificate (`insecure_skip_verify`).
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

/// The handshake-signature part of [`ServerCertVerifier`], the same for every verifier here: rustls's own
/// checks with the algorithms of `self.provider`. Only certificate acceptance differs between verifiers.
macro_rules! signature_checks_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = Fingerprint::of(end_entity.as_ref());
        if seen == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the appliance's certificate {seen} {PIN_MISMATCH} {pin}"
            )))
        }
    }

    signature_checks_by_provider!();
}

/// Verifies against the `ca_file` certificates like OpenSSL and curl do (issue 9 item 14).
///
/// The usual self-signed appliance certificate (`openssl req -x509`) is marked CA:TRUE, and webpki refuses
/// a CA certificate as the server's own (`CaUsedAsEndEntity`), while OpenSSL accepts a trusted certificate
/// that *is* the server's. So: the normal chain check first; if it fails and the server presented exactly
/// one of the `ca_file` certificates, that certificate is accepted once its names cover the host name
/// (validity dates are not checked on this path, as with `fingerprint`). Any other failure keeps its
/// reason and suggests `fingerprint`, the simpler choice for a self-signed appliance.
#[derive(Debug)]
struct CaFileVerifier {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    /// The certificates of the `ca_file`, DER.
    own: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

/// Marker in the error text of a `ca_file` failure, for [`transport_error`].
const CA_FILE_FAILED: &str = "is not trusted by `ca_file`";

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain_error = match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(err) => err,
        };
        if self.own.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::General(format!(
            "the appliance's certificate {} {CA_FILE_FAILED} ({chain_error})",
            Fingerprint::of(end_entity.as_ref())
        )))
    }

    signature_checks_by_provider!();
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, BackendError> {
    let bad = |why: String| BackendError::Config(format!("`ca_file` {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|err| bad(err.to_string()))?;
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        certs.push(cert.map_err(|err| bad(format!("not PEM: {err}")))?);
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

fn ca_file_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<CaFileVerifier, BackendError> {
    let bad = |why: String| BackendError::Config(format!("`ca_file` {}: {why}", path.display()));
    let own = read_ca_file(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in &own {
        roots
            .add(cert.clone())
            .map_err(|err| bad(format!("unusable certificate: {err}")))?;
    }
    let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    )
    .build()
    .map_err(|err| bad(err.to_string()))?;
    Ok(CaFileVerifier {
        chain,
        own,
        provider: Arc::clone(provider),
    })
}

fn tls_config(trust: &TlsTrust) -> Result<Option<rustls::ClientConfig>, BackendError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| BackendError::Unsupported(format!("TLS setup: {err}")))?;
    let config = match trust {
        TlsTrust::System => return Ok(None),
        TlsTrust::CaFile(path) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ca_file_verifier(path, &provider)?))
            .with_no_client_auth(),
        TlsTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: Some(*pin),
                provider,
            }))
            .with_no_client_auth(),
        TlsTrust::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(Some(config))
}

// ---------------------------------------------------------------------------------------------------------
// The shared config keys
// ---------------------------------------------------------------------------------------------------------

/// The trust and time-limit keys every appliance table has, flattened (`#[serde(flatten)]`) into each
/// vendor's raw config, and the keys nobody takes. `url` stays in the vendor's struct, whose doc says where
/// that vendor's API lives.
#[derive(Debug, Deserialize)]
pub struct RawConnection {
    /// PEM file with the CA (or the CA certificate itself) that signed the appliance's certificate.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the appliance's own certificate (`sha256:AB:CD:…`); the usual choice for the
    /// self-signed certificates appliances ship with.
    pub fingerprint: Option<String>,
    /// Skip certificate verification entirely. Never in production; logged as a warning at every start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Time limit for each HTTP request ("15s"; on pfSense "30s", because an apply reloads the filter).
    pub timeout: Option<Span>,
    /// Every other key of the table (the vendor's own fields have taken theirs before this struct sees
    /// the rest); refused by [`RawConnection::refuse_unknown`].
    #[serde(flatten)]
    pub unknown: UnknownKeys,
}

impl RawConnection {
    /// Refuses the first unknown key of `table` by name, as `deny_unknown_fields` would: call it before
    /// any other check, so a typo is reported as such.
    pub fn refuse_unknown(&self, table: &str) -> Result<(), ConfigError> {
        match self.unknown.keys().next() {
            Some(key) => Err(ConfigError::new(table, format!("unknown field `{key}`"))),
            None => Ok(()),
        }
    }

    /// Checks these keys together with the table's `url`; `default_timeout` applies when `timeout` is not
    /// set (`None`: [`DEFAULT_TIMEOUT`]).
    pub fn endpoint(
        self,
        table: &str,
        url: &str,
        default_timeout: Option<Span>,
    ) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(
            table,
            url,
            self.ca_file,
            self.fingerprint.as_deref(),
            self.insecure_skip_verify,
            self.timeout.or(default_timeout),
        )
    }
}

/// The default name of what the agent owns on every appliance (alias, address list, group prefix, comment):
/// `portcullis`.
pub fn default_object_name() -> String {
    "portcullis".to_owned()
}

/// Checks a pf alias name (OPNsense and pfSense share the rule, not the limit): letters, digits and
/// underscores, at most `max_len` characters. `vendor` names the product in the message.
pub fn pf_alias_name(
    table: &str,
    raw: &str,
    max_len: usize,
    vendor: &str,
) -> Result<String, ConfigError> {
    let alias = raw.trim().to_owned();
    if alias.is_empty()
        || alias.len() > max_len
        || !alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ConfigError::new(
            format!("{table}.alias"),
            format!("{raw:?}: {vendor} alias names are up to {max_len} letters, digits and `_`"),
        ));
    }
    Ok(alias)
}

/// The keys of an appliance table that no field takes. serde's `deny_unknown_fields` does not work together
/// with `flatten`, so [`RawConnection`] collects them here and refuses them itself.
pub type UnknownKeys = BTreeMap<String, serde::de::IgnoredAny>;

// ---------------------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------------------

/// What every appliance backend shares to reach its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL (`https://host[:port]`), without a trailing slash.
    pub url: Url,
    /// How the certificate is trusted.
    pub trust: TlsTrust,
    /// Limit for each request.
    pub timeout: Duration,
}

impl Endpoint {
    /// Checks the URL (HTTPS only: the requests carry credentials) and the TLS options of the backend table
    /// `table` (`firewall.unifi`).
    pub fn parse(
        table: &str,
        url: &str,
        ca_file: Option<PathBuf>,
        fingerprint: Option<&str>,
        insecure_skip_verify: bool,
        timeout: Option<Span>,
    ) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::new(format!("{table}.url"), message);
        let mut parsed = Url::parse(url.trim()).map_err(|err| bad(format!("{url:?}: {err}")))?;
        if parsed.scheme() != "https" {
            return Err(bad(format!(
                "{url:?}: only https:// is supported, because every request carries credentials"
            )));
        }
        if parsed.host().is_none() {
            return Err(bad(format!("{url:?} has no host")));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "must not carry credentials; use the credential keys".to_owned()
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(format!("{url:?}: no query or fragment, please")));
        }
        let path = parsed.path().trim_end_matches('/').to_owned();
        parsed.set_path(&path);
        let timeout = timeout.map_or(DEFAULT_TIMEOUT, Span::get);
        if timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{table}.timeout"),
                "must be more than zero",
            ));
        }
        Ok(Self {
            url: parsed,
            trust: TlsTrust::from_options(table, ca_file, fingerprint, insecure_skip_verify)?,
            timeout,
        })
    }

    /// The URL of `path` (which starts with `/`) below the base URL.
    pub fn join(&self, path: &str) -> String {
        let base = self.url.as_str().trim_end_matches('/');
        format!("{base}{path}")
    }

    /// Builds the HTTP client (reads the CA file). Warns when verification is off; called at every start.
    pub fn client(&self, backend: &'static str) -> Result<reqwest::Client, BackendError> {
        if self.trust == TlsTrust::InsecureSkipVerify {
            tracing::warn!(
                backend,
                url = %self.url,
                "TLS certificate verification is OFF (insecure_skip_verify = true): anyone between this host \
                 and the firewall can read its credentials. Pin the certificate with `fingerprint` instead."
            );
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("portcullis-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(config) = tls_config(&self.trust)? {
            builder = builder.tls_backend_preconfigured(config);
        }
        builder
            .build()
            .map_err(|err| BackendError::Unsupported(format!("HTTP client: {err}")))
    }
}

/// One answer, read completely.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A short, printable excerpt of the body for error messages (never contains request secrets).
    pub fn excerpt(&self) -> String {
        excerpt(&self.body)
    }

    /// True when the body is an HTML page (a login page, a proxy's error page).
    pub fn is_html(&self) -> bool {
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.contains("text/html") {
            return true;
        }
        let start = self
            .body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.body.len());
        let head = &self.body[start..self.body.len().min(start + 15)];
        head.eq_ignore_ascii_case(b"<!doctype html>") || head.starts_with(b"<html")
    }
}

/// At most 200 characters of a body, control characters replaced.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 200 {
        out.push('…');
    }
    out
}

/// Turns a transport failure into a backend error; `what` names the call (`GET /rest/…`).
pub fn transport_error(what: &str, err: &reqwest::Error) -> BackendError {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    if chain.contains(PIN_MISMATCH) {
        return BackendError::Config(format!(
            "{what}: {chain}. If the appliance's certificate was renewed, update `fingerprint`."
        ));
    }
    if chain.contains(CA_FILE_FAILED) {
        return BackendError::Config(format!(
            "{what}: {chain}. For an appliance's self-signed certificate, pin it with `fingerprint` \
             (openssl x509 -noout -fingerprint -sha256) instead of `ca_file`."
        ));
    }
    if err.is_timeout() {
        return BackendError::Unreachable(format!("{what}: timed out ({chain})"));
    }
    if err.is_body() || err.is_decode() {
        return BackendError::Unreachable(format!("{what}: the answer was cut off ({chain})"));
    }
    BackendError::Unreachable(format!("{what}: {chain}"))
}

/// Sends one request and reads the whole answer. Transport failures become [`BackendError::Unreachable`]
/// (or `Config` for a certificate pin mismatch); the status is left to the caller.
pub async fn send(what: &str, request: reqwest::RequestBuilder) -> Result<Reply, BackendError> {
    let response = request
        .send()
        .await
        .map_err(|err| transport_error(what, &err))?;
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(BackendError::Rejected(format!(
            "{what}: the answer is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|err| transport_error(what, &err))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(BackendError::Rejected(format!(
            "{what}: the answer is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(Reply {
        status,
        headers,
        body: body.to_vec(),
    })
}

/// Decodes a JSON body, with errors that say what went wrong: an HTML page instead of JSON (a login page, a
/// changed firmware path), a cut-off body (retryable), or JSON of the wrong shape.
pub fn json_body<T: DeserializeOwned>(what: &str, reply: &Reply) -> Result<T, BackendError> {
    if reply.is_html() {
        return Err(BackendError::Rejected(format!(
            "{what}: the appliance answered with an HTML page instead of JSON (HTTP {}): a login page, a \
             reverse proxy, or an API path that moved in a firmware update; check `url`. Page starts: {}",
            reply.status,
            reply.excerpt()
        )));
    }
    serde_json::from_slice(&reply.body).map_err(|err| {
        if err.is_eof() {
            BackendError::Unreachable(format!(
                "{what}: the answer was cut off after {} bytes ({err})",
                reply.body.len()
            ))
        } else {
            BackendError::Rejected(format!(
                "{what}: unexpected answer (HTTP {}): {err}; body starts: {}",
                reply.status,
                reply.excerpt()
            ))
        }
    })
}

/// The generic meaning of a failed status for calls whose vendor gives it no special meaning.
pub fn status_error(what: &str, reply: &Reply) -> BackendError {
    let status = reply.status;
    let body = reply.excerpt();
    match status.as_u16() {
        401 | 403 => BackendError::Config(format!(
            "{what}: HTTP {status}: the credentials were refused or lack the rights for this call: {body}"
        )),
        404 => BackendError::Rejected(format!(
            "{what}: HTTP 404: the API path does not exist on this appliance (wrong `url`, or the API \
             moved in a firmware update): {body}"
        )),
        408 | 429 => BackendError::Unreachable(format!("{what}: HTTP {status}, try later: {body}")),
        500..=599 => BackendError::Unreachable(format!("{what}: HTTP {status}: {body}")),
        _ => BackendError::Rejected(format!("{what}: HTTP {status}: {body}")),
    }
}

/// A method and a path, for error messages (`PUT /proxy/network/api/s/default/rest/firewallgroup/…`).
pub fn describe(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

/// Builds `method path` on `endpoint` with `body` as JSON when given, lets `auth` add the vendor's
/// credentials and headers, and sends it. Returns the call's description (for error messages, see
/// [`describe`]) and the reply; what the status means is left to the caller.
pub async fn call(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    auth: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(String, Reply), BackendError> {
    let what = describe(&method, path);
    let mut request = auth(http.request(method, endpoint.join(path)));
    if let Some(body) = body {
        request = request.json(body);
    }
    let reply = send(&what, request).await?;
    Ok((what, reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `names`, self-signed unless `issuer` is given; CA:TRUE when `ca`.
    fn cert(
        names: &[&str],
        ca: bool,
        issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
    ) -> (rcgen::Certificate, rcgen::KeyPair, rcgen::CertificateParams) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.is_ca = if ca {
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            rcgen::IsCa::ExplicitNoCa
        };
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert, key, params)
    }

    fn verify(pem_file: &str, presented: &rcgen::Certificate, host: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem_file).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = ca_file_verifier(&path, &provider).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(
                &CertificateDer::from(presented.der().to_vec()),
                &[],
                &ServerName::try_from(host.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Issue 9 item 14: `openssl req -x509` makes a CA:TRUE certificate; given as `ca_file` while the
    /// appliance presents it, webpki refused it (`CaUsedAsEndEntity`) where curl accepts it.
    #[test]
    fn a_ca_file_holding_the_servers_own_ca_certificate_is_accepted_with_the_host_name_checked() {
        let (own, _, _) = cert(&["fw.lan", "192.0.2.1"], true, None);
        // The chain check alone (what `ca_file` used before) refuses it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, own.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let before = ca_file_verifier(&path, &provider)
            .unwrap()
            .chain
            .verify_server_cert(
                &CertificateDer::from(own.der().to_vec()),
                &[],
                &ServerName::try_from("fw.lan").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        assert!(
            format!("{before:?}").contains("CaUsedAsEndEntity"),
            "{before:?}"
        );
        assert_eq!(verify(&own.pem(), &own, "fw.lan"), Ok(()));
        assert_eq!(verify(&own.pem(), &own, "192.0.2.1"), Ok(()));
        let wrong_name = verify(&own.pem(), &own, "other.lan").unwrap_err();
        assert!(wrong_name.to_lowercase().contains("name"), "{wrong_name}");
    }

    #[test]
    fn a_ca_file_still_verifies_chains_and_refuses_strangers() {
        let (ca, ca_key, ca_params) = cert(&["Portcullis test CA"], true, None);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let (leaf, _, _) = cert(&["fw.lan"], false, Some(&issuer));
        assert_eq!(verify(&ca.pem(), &leaf, "fw.lan"), Ok(()));
        assert!(verify(&ca.pem(), &leaf, "other.lan").is_err());
        // A self-signed certificate that is not in the file.
        let (stranger, _, _) = cert(&["fw.lan"], true, None);
        let err = verify(&ca.pem(), &stranger, "fw.lan").unwrap_err();
        assert!(err.contains(CA_FILE_FAILED), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let source = SecretSource::new("t", "password", Some("hunter2".into()), None, "X").unwrap();
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn secret_from_file_drops_the_newline_and_env_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let source = SecretSource::new("t", "password", None, Some(path), "UNUSED").unwrap();
        assert_eq!(source.resolve().unwrap().expose(), "s3cret");

        let source = SecretSource::new(
            "t",
            "password",
            None,
            None,
            "PORTCULLIS_TEST_SURELY_UNSET_VARIABLE",
        )
        .unwrap();
        let err = source.resolve().unwrap_err().to_string();
        assert!(
            err.contains("PORTCULLIS_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
        assert!(
            SecretSource::new("t", "password", Some("a".into()), Some("b".into()), "X").is_err()
        );
    }

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let hex = "AB".repeat(32);
        let colon = vec!["ab"; 32].join(":");
        let a = Fingerprint::parse(&format!("sha256:{colon}")).unwrap();
        assert_eq!(a, Fingerprint::parse(&hex).unwrap());
        assert_eq!(
            a,
            Fingerprint::parse(&format!("SHA256 Fingerprint={colon}")).unwrap()
        );
        assert!(a.to_string().starts_with("sha256:AB:AB"));
        assert!(Fingerprint::parse("sha256:abcd").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn endpoints_are_https_only_and_trust_is_exclusive() {
        let parse =
            |url: &str, ca: Option<&str>, fp: Option<&str>, skip: bool, timeout: Option<Span>| {
                Endpoint::parse("t", url, ca.map(PathBuf::from), fp, skip, timeout)
            };
        let ok = parse("https://192.0.2.1:8443/", None, None, false, None).unwrap();
        assert_eq!(ok.join("/api/login"), "https://192.0.2.1:8443/api/login");
        assert_eq!(ok.trust, TlsTrust::System);
        let err = parse("http://192.0.2.1", None, None, false, None).unwrap_err();
        assert_eq!(err.key, "t.url");
        assert!(parse("https://u:p@192.0.2.1", None, None, false, None).is_err());
        let fp = "AB".repeat(32);
        assert!(parse("https://h", None, Some(&fp), true, None).is_err());
        assert!(parse("https://h", Some("/x"), Some(&fp), false, None).is_err());
        assert!(parse("https://h", None, None, false, Some(Span::secs(0))).is_err());
    }

    #[test]
    fn html_and_truncated_bodies_give_clear_errors() {
        let reply = |body: &str| Reply {
            status: StatusCode::OK,
            headers: reqwest::header::HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        };
        let err = json_body::<serde_json::Value>("GET /x", &reply("<!DOCTYPE html><html>login"))
            .unwrap_err();
        assert!(matches!(&err, BackendError::Rejected(m) if m.contains("HTML page")));
        let err = json_body::<serde_json::Value>("GET /x", &reply("{\"data\":[1,2")).unwrap_err();
        assert!(matches!(&err, BackendError::Unreachable(m) if m.contains("cut off")));
        assert!(err.is_retryable());
    }
}
