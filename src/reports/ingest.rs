//! Rows into Log Analytics through the Logs Ingestion API:
//! `POST {endpoint}/dataCollectionRules/{rule id}/streams/{stream}?api-version=2023-01-01`, a gzipped JSON
//! array, bearer token for `https://monitor.azure.com` (`.us`, `.cn` in the sovereign clouds).
//!
//! Rows are cut into batches whose *uncompressed* JSON stays under [`MAX_BATCH_BYTES`] (the service's 1 MB
//! applies to compressed and uncompressed data; the official SDKs cut the same way). A 429 is retried
//! after its `Retry-After` within [`MAX_THROTTLE_WAIT`]; a 413 is never resent as is, its batch is halved.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;

use super::token::{monitor_audience, Tokens};
use super::Outcome;
use crate::settings::LogsSettings;

/// The GA api-version of the Logs Ingestion API.
pub const INGESTION_API_VERSION: &str = "2023-01-01";

/// Largest uncompressed JSON body of one call (the limit is 1 MB; keep room for the array brackets).
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// The longest one invocation waits in total for 429 `Retry-After`s before giving up (transient: the
/// host retries the whole report later).
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(30);

/// Splits rows into batches of at most [`MAX_BATCH_BYTES`] of JSON each, in order. A row larger than the
/// limit on its own is a batch of its own (the service answers it with 413, and it is reported as
/// permanent).
pub fn batches(rows: &[Value]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 2;
    for row in rows {
        let len = serde_json::to_vec(row).map_or(0, |v| v.len()) + 1;
        if !current.is_empty() && size + len > MAX_BATCH_BYTES {
            out.push(std::mem::take(&mut current));
            size = 2;
        }
        current.push(row.clone());
        size += len;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn gzip(rows: &[Value]) -> Vec<u8> {
    let json = serde_json::to_vec(rows).unwrap_or_else(|_| b"[]".to_vec());
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let _ = encoder.write_all(&json);
    encoder.finish().unwrap_or_default()
}

/// The request URL for `stream`.
pub fn ingest_url(logs: &LogsSettings, stream: &str) -> String {
    format!(
        "{}/dataCollectionRules/{}/streams/{stream}?api-version={INGESTION_API_VERSION}",
        logs.endpoint.as_str().trim_end_matches('/'),
        logs.rule_id
    )
}

/// Uploads one batch: 2xx → done; 413 → halved and each half uploaded; 429 → waits `Retry-After` (within
/// the budget) and tries again; 400/403/404 → permanent; 401, 5xx and network errors → transient.
pub async fn upload(
    http: &reqwest::Client,
    tokens: &dyn Tokens,
    logs: &LogsSettings,
    stream: &str,
    batch: Vec<Value>,
    waited: &mut Duration,
) -> Outcome {
    let mut pending = vec![batch];
    let mut permanent: Vec<String> = Vec::new();
    while let Some(rows) = pending.pop() {
        let token = match tokens.token(monitor_audience(&logs.endpoint)).await {
            Ok(token) => token,
            Err(why) => return Outcome::Transient(why),
        };
        let response = http
            .post(ingest_url(logs, stream))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string())
            .body(gzip(&rows))
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(err) => {
                return Outcome::Transient(format!(
                    "logs ingestion: {}",
                    super::describe_reqwest(&err)
                ))
            }
        };
        let status = response.status();
        if status.is_success() {
            continue;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let code = super::error_code(response).await;
        match status.as_u16() {
            413 if rows.len() > 1 => {
                let mut first = rows;
                let second = first.split_off(first.len() / 2);
                // Popped from the end: the first half goes last so rows keep their order.
                pending.push(second);
                pending.push(first);
            }
            429 => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1).max(1));
                if *waited + wait > MAX_THROTTLE_WAIT {
                    return Outcome::Transient(format!(
                        "logs ingestion throttled (429, Retry-After {}s) beyond {}s",
                        wait.as_secs(),
                        MAX_THROTTLE_WAIT.as_secs()
                    ));
                }
                tracing::info!(
                    stream,
                    retry_after_secs = wait.as_secs(),
                    "Logs ingestion throttled; waiting."
                );
                *waited += wait;
                tokio::time::sleep(wait).await;
                pending.push(rows);
            }
            400 | 403 | 404 | 413 => {
                permanent.push(format!(
                    "logs ingestion into {stream}: {status} {code} ({} rows)",
                    rows.len()
                ));
            }
            _ => {
                return Outcome::Transient(format!("logs ingestion into {stream}: {status} {code}"))
            }
        }
    }
    if permanent.is_empty() {
        Outcome::Done
    } else {
        Outcome::Permanent(permanent.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_stay_under_the_limit_and_keep_order() {
        let rows: Vec<Value> = (0..30_000)
            .map(|i| json!({"Target": format!("198.51.{}.{}", i / 256 % 256, i % 256), "Reason": "x".repeat(40)}))
            .collect();
        let cut = batches(&rows);
        assert!(cut.len() > 1);
        for b in &cut {
            assert!(serde_json::to_vec(b).unwrap().len() <= MAX_BATCH_BYTES);
        }
        assert_eq!(cut.concat(), rows);
        assert!(batches(&[]).is_empty());
    }
}
