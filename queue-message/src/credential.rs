//! A time bound around any Entra ID token credential, so a failing token endpoint costs at most as long as the
//! queue retries of one operation.
//!
//! azure_identity retries token requests with its own policy: 6 retries within 72 s for the VM identity
//! endpoint (fixed by the crate, whatever options are passed), 8 within a minute by default for the App
//! Service one. The queue operation waiting for the token sees none of that, so a handler with a broken
//! managed identity answered after 82 s instead of the ~15 s its queue retries allow. The SDK has no
//! overall deadline for a token request; this wrapper is that deadline.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error, ErrorKind};

/// A [`TokenCredential`] whose `get_token` fails with a credential error after `limit` instead of waiting for
/// the inner credential's retries. The error is not a transport error, so the queue client's retry policy
/// does not retry it either.
pub struct BoundedCredential {
    inner: Arc<dyn TokenCredential>,
    limit: Duration,
}

impl BoundedCredential {
    /// Wraps `inner`; every token request takes at most `limit`.
    pub fn new(inner: Arc<dyn TokenCredential>, limit: Duration) -> Arc<Self> {
        Arc::new(Self { inner, limit })
    }

    /// The bound of one token request.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl fmt::Debug for BoundedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedCredential")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for BoundedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        match tokio::time::timeout(self.limit, self.inner.get_token(scopes, options)).await {
            Ok(result) => result,
            Err(_) => {
                let secs = self.limit.as_secs_f64();
                Err(Error::with_message_fn(ErrorKind::Credential, move || {
                    format!("no Entra ID token within {secs:.0} s (the identity endpoint keeps failing or does not answer)")
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A token endpoint that never answers.
    #[derive(Debug, Default)]
    struct Hangs {
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Hangs {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    /// Answers at once.
    #[derive(Debug)]
    struct Answers;

    #[async_trait::async_trait]
    impl TokenCredential for Answers {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            Ok(AccessToken::new(
                "token",
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
            ))
        }
    }

    // Paused clock: the bound is measured on tokio's virtual time, not the wall clock.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_token_endpoint_fails_at_the_bound_not_later() {
        let inner = Arc::new(Hangs::default());
        let bounded = BoundedCredential::new(inner.clone(), Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        let err = bounded
            .get_token(&["https://storage.azure.com/.default"], None)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(*err.kind(), ErrorKind::Credential);
        assert!(err.to_string().contains("within 10 s"), "{err}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_working_endpoint_is_unaffected() {
        let bounded = BoundedCredential::new(Arc::new(Answers), Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        let token = bounded.get_token(&["scope"], None).await.unwrap();
        assert_eq!(token.token.secret(), "token");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
