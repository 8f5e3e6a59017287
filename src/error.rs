//! HTTP answers: [`Reply`] (status, JSON body, headers) and [`ApiError`], rendered as RFC 7807
//! `application/problem+json`.
//!
//! Both host modes render the same [`Reply`]: forwarding mode sends it as the HTTP response
//! ([`IntoResponse`]); Data/Metadata mode wraps it into `Outputs.res` ([`Reply::to_output`]) and answers the
//! host 200. `ApiError` texts never contain secrets: queue errors are redacted by `queue_message`, and
//! payload excerpts are clipped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::alert::UNDERSTOOD;
use crate::enqueue::EnqueueError;
use crate::plan::TooManyTargets;

/// Seconds a caller should wait before retrying after a queue failure.
pub const RETRY_AFTER_SECS: u64 = 30;

/// A finished answer, independent of the host mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The status the caller sees.
    pub status: StatusCode,
    /// `application/json` or `application/problem+json`.
    pub content_type: &'static str,
    /// The JSON body.
    pub body: Value,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
            retry_after: None,
        }
    }

    /// `Outputs.res` for the Data/Metadata protocol: status, body (as a string, so the host sends it
    /// verbatim) and headers.
    pub fn to_output(&self) -> Value {
        let mut headers = serde_json::Map::new();
        headers.insert("Content-Type".into(), self.content_type.into());
        if let Some(secs) = self.retry_after {
            headers.insert("Retry-After".into(), secs.to_string().into());
        }
        json!({
            "statusCode": self.status.as_u16(),
            "body": self.body.to_string(),
            "headers": headers,
        })
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let bytes = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("malformed JSON at line {line}, column {column}: {detail}")]
    MalformedJson {
        /// serde_json's description.
        detail: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (0 at the start of an empty body).
        column: usize,
    },
    /// 400: a Data/Metadata invocation without the host's envelope.
    #[error("not a Functions host invocation: {0}")]
    BadEnvelope(String),
    /// 413: body over `PORTCULLIS_MAX_BODY_BYTES`.
    #[error("the body is larger than {limit} bytes (PORTCULLIS_MAX_BODY_BYTES)")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// 415: a content type that is not JSON.
    #[error("content type `{0}` is not JSON")]
    UnsupportedMediaType(String),
    /// 422: JSON, but no kind we understand.
    #[error("unknown payload kind")]
    UnknownKind,
    /// 422: more distinct targets than allowed.
    #[error(transparent)]
    TooManyTargets(#[from] TooManyTargets),
    /// 422: an invalid manual request.
    #[error("invalid block request")]
    InvalidRequest(Vec<String>),
    /// 503: a queue could not be written.
    #[error("cannot write to the queue: {0}")]
    QueueUnavailable(#[from] EnqueueError),
    /// 404.
    #[error("no such route")]
    NotFound,
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// A 400 from a serde_json error.
    pub fn malformed(err: &serde_json::Error) -> Self {
        Self::MalformedJson {
            detail: crate::alert::clip(&err.to_string(), 300),
            line: err.line(),
            column: err.column(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson { .. } | Self::BadEnvelope(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnknownKind | Self::TooManyTargets(_) | Self::InvalidRequest(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::QueueUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::MalformedJson { .. } => ("malformed-json", "Malformed JSON"),
            Self::BadEnvelope(_) => ("bad-envelope", "Not a Functions host invocation"),
            Self::PayloadTooLarge { .. } => ("payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported media type"),
            Self::UnknownKind => ("unknown-kind", "Unknown payload kind"),
            Self::TooManyTargets(_) => ("too-many-targets", "Too many targets"),
            Self::InvalidRequest(_) => ("invalid-request", "Invalid block request"),
            Self::QueueUnavailable(_) => ("queue-unavailable", "Queue unavailable"),
            Self::NotFound => ("not-found", "Not found"),
            Self::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
        }
    }

    /// The RFC 7807 answer.
    pub fn reply(&self) -> Reply {
        let status = self.status();
        let (slug, title) = self.slug_and_title();
        let mut body = json!({
            "type": format!("urn:portcullis:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        match self {
            Self::MalformedJson { line, column, .. } => {
                body["line"] = (*line).into();
                body["column"] = (*column).into();
            }
            Self::UnknownKind => {
                body["detail"] =
                    "the body is JSON but not a payload kind this function understands".into();
                body["understood"] = json!(UNDERSTOOD);
            }
            Self::TooManyTargets(t) => {
                body["found"] = t.found.into();
                body["max"] = t.max.into();
            }
            Self::InvalidRequest(problems) => {
                body["detail"] = problems.join("; ").into();
                body["errors"] = json!(problems);
            }
            Self::QueueUnavailable(err) => {
                body["detail"] = format!(
                    "queue `{}` could not be written after retries; nothing is lost if you retry (messages already written are harmless duplicates)",
                    err.queue
                )
                .into();
                body["queue"] = err.queue.clone().into();
            }
            _ => {}
        }
        Reply {
            status,
            content_type: "application/problem+json",
            body,
            retry_after: matches!(self, Self::QueueUnavailable(_)).then_some(RETRY_AFTER_SECS),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.reply().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_have_the_rfc7807_members() {
        let err = serde_json::from_str::<Value>("{\n\"a\" 1}").unwrap_err();
        let reply = ApiError::malformed(&err).reply();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.content_type, "application/problem+json");
        assert_eq!(reply.body["type"], "urn:portcullis:problem:malformed-json");
        assert_eq!(reply.body["status"], 400);
        assert_eq!(
            (reply.body["line"].as_u64(), reply.body["column"].as_u64()),
            (Some(2), Some(5))
        );
    }

    #[test]
    fn queue_failures_ask_for_a_retry_without_leaking() {
        // Raw, unredacted texts, as a careless error path might produce them: none of it may reach the
        // caller, in either host mode.
        let key = queue_message::connection::DEV_ACCOUNT_KEY;
        let raw = format!(
            "GET https://acct.queue.core.windows.net/site1?sv=2024-11-04&sig=Ab%2Fcd failed; \
             connection AccountName=acct;AccountKey={key}"
        );
        for source in [
            queue_message::QueueError::Denied(raw.clone()),
            queue_message::QueueError::Unavailable(raw),
        ] {
            let reply = ApiError::from(EnqueueError {
                queue: "site1".into(),
                source,
            })
            .reply();
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(reply.retry_after, Some(RETRY_AFTER_SECS));
            let output = reply.to_output();
            for text in [reply.body.to_string(), output.to_string()] {
                for secret in ["sig=", "Ab%2Fcd", "AccountKey", &key[..20]] {
                    assert!(
                        !text.contains(secret),
                        "{secret} reached the answer: {text}"
                    );
                }
            }
            assert_eq!(output["statusCode"], 503);
            assert_eq!(output["headers"]["Retry-After"], "30");
            assert!(output["body"].is_string());
        }
    }
}
