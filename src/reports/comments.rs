//! Incident comments through Azure Resource Manager: `PUT {incident id}/comments/{comment id}`.
//!
//! The comment id is a UUID derived from the report id and the incident id, so a retried invocation (or
//! a report the agent sent twice) updates the same comment instead of adding a second one; ARM answers
//! 201 the first time and 200 after.

use sha2::{Digest, Sha256};
use url::Url;
use uuid::Uuid;

use super::token::{arm_audience, Tokens};
use super::Outcome;

/// The current GA api-version of `Microsoft.SecurityInsights` (incidents and their comments).
pub const INCIDENTS_API_VERSION: &str = "2025-12-01";

/// The comment id for `report_id` on `incident`: the first 16 bytes of SHA-256 over both, as a version 8
/// (custom) UUID. Incident ids compare case-insensitively in ARM, so the id is lower-cased first.
pub fn comment_id(report_id: &Uuid, incident: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"portcullis-comment\0")
        .chain_update(report_id.as_bytes())
        .chain_update(incident.to_ascii_lowercase().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The request URL; `incident` has been checked by [`super::rows::is_incident_id`].
pub fn comment_url(arm: &Url, incident: &str, id: &Uuid) -> String {
    format!(
        "{}{incident}/comments/{id}?api-version={INCIDENTS_API_VERSION}",
        arm.as_str().trim_end_matches('/')
    )
}

/// Writes one comment. 200/201 → done; 404 (incident deleted), 403 (no Sentinel Responder role) and 400
/// (refused text, the 100-comment limit) → permanent; 401, 408, 409, 429, 5xx and network errors →
/// transient.
pub async fn put_comment(
    http: &reqwest::Client,
    tokens: &dyn Tokens,
    arm: &Url,
    incident: &str,
    id: &Uuid,
    text: &str,
) -> Outcome {
    let token = match tokens.token(&arm_audience(arm)).await {
        Ok(token) => token,
        Err(why) => return Outcome::Transient(why),
    };
    let response = http
        .put(comment_url(arm, incident, id))
        .bearer_auth(token)
        .json(&serde_json::json!({ "properties": { "message": text } }))
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(err) => {
            return Outcome::Transient(format!(
                "incident comment: {}",
                super::describe_reqwest(&err)
            ))
        }
    };
    let status = response.status();
    let code = super::error_code(response).await;
    match status.as_u16() {
        200 | 201 => Outcome::Done,
        400 | 403 | 404 => Outcome::Permanent(format!("incident comment: {status} {code}")),
        _ => Outcome::Transient(format!("incident comment: {status} {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_ids_are_stable_and_distinct() {
        let r = Uuid::from_u128(1);
        let a = comment_id(&r, "/subscriptions/s/.../incidents/A");
        assert_eq!(a, comment_id(&r, "/SUBSCRIPTIONS/s/.../incidents/a"));
        assert_ne!(
            a,
            comment_id(&Uuid::from_u128(2), "/subscriptions/s/.../incidents/a")
        );
        assert_ne!(a, comment_id(&r, "/subscriptions/s/.../incidents/b"));
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn the_url_has_the_incident_path_and_version() {
        let arm = Url::parse("https://management.azure.com/").unwrap();
        let id = Uuid::from_u128(3);
        assert_eq!(
            comment_url(&arm, "/subscriptions/s/incidents/x", &id),
            format!("https://management.azure.com/subscriptions/s/incidents/x/comments/{id}?api-version=2025-12-01")
        );
    }
}
