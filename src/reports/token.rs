//! Bearer tokens for the return path's two outbound APIs (ARM, Logs Ingestion), from the app's managed
//! identity.
//!
//! [`Tokens`] is the seam: [`ManagedIdentityTokens`] asks `azure_identity`'s managed-identity credential
//! (on App Service and Functions it reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`), which caches each
//! token until shortly before it expires. Errors never carry the token or the identity header.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

/// Audience of incident comments (Azure Resource Manager).
pub const ARM_AUDIENCE: &str = "https://management.azure.com";

/// Audience of the Logs Ingestion API.
pub const MONITOR_AUDIENCE: &str = "https://monitor.azure.com";

/// The token audience for an ARM endpoint: the endpoint's origin (`https://management.usgovcloudapi.net` in
/// Azure Government), except loopback test endpoints, which stand in for the public cloud.
pub fn arm_audience(endpoint: &url::Url) -> String {
    match endpoint.host() {
        Some(url::Host::Domain(d)) if !d.eq_ignore_ascii_case("localhost") => {
            format!("{}://{d}", endpoint.scheme())
        }
        _ => ARM_AUDIENCE.to_owned(),
    }
}

/// The token audience for a Logs Ingestion endpoint: `https://monitor.azure.us` / `.cn` in the sovereign
/// clouds (by the endpoint's domain), `https://monitor.azure.com` everywhere else.
pub fn monitor_audience(endpoint: &url::Url) -> &'static str {
    match endpoint.host_str() {
        Some(h) if h.ends_with(".azure.us") => "https://monitor.azure.us",
        Some(h) if h.ends_with(".azure.cn") => "https://monitor.azure.cn",
        _ => MONITOR_AUDIENCE,
    }
}

/// Hands out bearer tokens by audience.
#[async_trait::async_trait]
pub trait Tokens: Send + Sync + fmt::Debug {
    /// A bearer token for `audience` (`https://management.azure.com`, `https://monitor.azure.com`).
    /// Failing is transient: the identity endpoint may be briefly unavailable.
    async fn token(&self, audience: &str) -> Result<String, String>;
}

/// The app's managed identity: system-assigned, or user-assigned by client id.
pub struct ManagedIdentityTokens {
    credential: Arc<dyn TokenCredential>,
}

impl fmt::Debug for ManagedIdentityTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManagedIdentityTokens")
    }
}

impl ManagedIdentityTokens {
    /// The credential for `client_id` (the same as the queue connection's), or the system identity.
    pub fn new(client_id: Option<&str>) -> Result<Self, String> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_owned())),
            ..Default::default()
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| format!("cannot build the managed identity credential: {}", e.kind()))?;
        Ok(Self { credential })
    }
}

#[async_trait::async_trait]
impl Tokens for ManagedIdentityTokens {
    async fn token(&self, audience: &str) -> Result<String, String> {
        let scope = format!("{audience}/.default");
        self.credential
            .get_token(&[&scope], None)
            .await
            .map(|t| t.token.secret().to_owned())
            // The error's kind only: its text can echo the identity endpoint's answer.
            .map_err(|e| format!("no managed identity token for {audience}: {}", e.kind()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[test]
    fn audiences_follow_the_cloud() {
        assert_eq!(
            arm_audience(&url("https://management.azure.com/")),
            ARM_AUDIENCE
        );
        assert_eq!(
            arm_audience(&url("https://management.usgovcloudapi.net")),
            "https://management.usgovcloudapi.net"
        );
        assert_eq!(arm_audience(&url("http://127.0.0.1:8080")), ARM_AUDIENCE);
        assert_eq!(arm_audience(&url("http://localhost:8080")), ARM_AUDIENCE);
        assert_eq!(
            monitor_audience(&url("https://dcr-1.westeurope-1.ingest.monitor.azure.com")),
            MONITOR_AUDIENCE
        );
        assert_eq!(
            monitor_audience(&url(
                "https://dcr-1.usgovvirginia-1.ingest.monitor.azure.us"
            )),
            "https://monitor.azure.us"
        );
        assert_eq!(
            monitor_audience(&url("http://127.0.0.1:9")),
            MONITOR_AUDIENCE
        );
    }
}
