//! Input-limit measurements for BENCHMARKS.md (issue 9 items 10 and 11), run by hand:
//!
//! ```bash
//! cargo run --release --example bench_limits
//! ```
//!
//! 1. Item 10: a 4 MiB Sentinel alert whose `Entities` are chains of nested `$id` objects (depth 100, each
//!    an IP entity) followed by a `$ref` to every one of them. Before the fix every reference re-walked
//!    the rest of its chain (the review measured 14.9 M candidates, 1.1 GB and 6 s on such a body).
//!    Printed: candidates handed to the policy, extraction time, peak RSS growth, the HTTP status.
//! 2. Item 11: a 24 MB invocation envelope of small JSON values, unwrapped as the Data/Metadata route
//!    does; printed: peak RSS growth against a `serde_json::Value` parse of the same bytes.

use std::sync::Arc;
use std::time::Instant;

use portcullis::alert::{self, ExtractConfig};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The nested-`$id` alert, about `size` bytes.
fn nested_refs(size: usize) -> String {
    let mut entities = Vec::new();
    let mut refs = Vec::new();
    let mut id = 0u32;
    let mut len = 0;
    while len < size {
        let depth = 100;
        let mut chain = String::new();
        for level in 0..depth {
            id += 1;
            let (a, b, c) = (id >> 16 & 0xff, id >> 8 & 0xff, id & 0xff);
            chain.push_str(&format!(
                "{{\"$id\":\"{id}\",\"Type\":\"ip\",\"Address\":\"20.{a}.{b}.{c}\",\"Inner\":"
            ));
            refs.push(format!("{{\"$ref\":\"{id}\"}}"));
            let _ = level;
        }
        chain.push_str("null");
        chain.push_str(&"}".repeat(depth));
        len += chain.len() + depth * 16;
        entities.push(chain);
    }
    entities.extend(refs);
    format!(
        "{{\"SystemAlertId\":\"x\",\"AlertDisplayName\":\"n\",\"Entities\":[{}]}}",
        entities.join(",")
    )
}

fn main() {
    let body = nested_refs(4 * 1024 * 1024 - 64 * 1024);
    let before = peak_rss_kib();
    let start = Instant::now();
    let parsed = alert::parse(body.as_bytes(), &ExtractConfig::default()).expect("an alert");
    let took = start.elapsed();
    let grown = peak_rss_kib().saturating_sub(before) / 1024;
    let state = portcullis::AppState::new(
        queue_message::SigningKey::from_bytes(vec![1; 32]).expect("key"),
        Arc::new(portcullis::MemoryQueues::new(&["q"])),
    );
    let status = state
        .policy
        .plan(&parsed, chrono::Utc::now())
        .map_or_else(|e| format!("refused: {e}"), |_| "accepted".to_owned());
    println!(
        "item 10: body {} bytes; {} candidates (capped: {}), extraction {:.1} ms, peak RSS +{grown} MiB; policy: {status}",
        body.len(),
        parsed.candidates.len(),
        parsed.capped,
        took.as_secs_f64() * 1000.0
    );

    let filler = "[],".repeat(8_000_000);
    let envelope = format!(
        "{{\"Metadata\":{{\"x\":[{filler}[]]}},\"Data\":{{\"req\":{{\"Method\":\"POST\",\"Body\":\"{{}}\"}}}}}}"
    );
    drop(filler);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = portcullis::app(Arc::new(state));
    let before = peak_rss_kib();
    let start = Instant::now();
    let status = runtime.block_on(async {
        use tower::ServiceExt as _;
        let request = axum::http::Request::post("/alerts")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(envelope.clone()))
            .expect("request");
        router.oneshot(request).await.expect("response").status()
    });
    let took = start.elapsed();
    let grown = peak_rss_kib().saturating_sub(before) / 1024;
    println!(
        "item 11: envelope {} bytes through POST /alerts: {status}, {:.1} ms, peak RSS +{grown} MiB",
        envelope.len(),
        took.as_secs_f64() * 1000.0
    );
    let before = peak_rss_kib();
    let value: serde_json::Value = serde_json::from_str(&envelope).expect("json");
    let grown = peak_rss_kib().saturating_sub(before) / 1024;
    drop(value);
    println!("item 11: the same envelope as a serde_json::Value (the old first step): peak RSS +{grown} MiB");
}
