//! Benchmark P2 (see BENCHMARKS.md): extraction from a ~1 MB incident vs `serde_json::from_slice::<Value>`
//! of the same bytes, interleaved in the same run. `cargo bench -p portcullis --bench extract`.
//!
//! A hand-rolled loop (no criterion): each round times both sides over the same number of iterations, and
//! the medians of the per-round ratios are reported. It also prints where the time of one P1 request goes
//! (the 20-entity incident of `examples/bench_server.rs`, read from the file given in `P1_BODY`).

use std::hint::black_box;
use std::time::Instant;

use portcullis::alert::{self, ExtractConfig};
use serde_json::{json, Value};

fn incident(target_bytes: usize) -> Vec<u8> {
    let entity = |i: usize| {
        let address = format!(
            "{}.{}.{}.{}",
            20 + i % 200,
            (i / 250) % 250,
            i % 250,
            1 + (i * 7) % 250
        );
        json!({
            "id": format!("/subscriptions/d0cfe6b2-9ac0-4464-9919-dccaee2e48c0/resourceGroups/myRg/providers/Microsoft.OperationalInsights/workspaces/myWorkspace/providers/Microsoft.SecurityInsights/Entities/{i:08x}-e11f-478b-98e3-bb381539a8e1"),
            "name": format!("{i:08x}-e11f-478b-98e3-bb381539a8e1"),
            "type": "Microsoft.SecurityInsights/Entities",
            "kind": if i.is_multiple_of(5) { "Host" } else { "Ip" },
            "properties": {"address": address, "friendlyName": address}
        })
    };
    let mut entities = Vec::new();
    let mut size = 0;
    while size < target_bytes {
        let e = entity(entities.len());
        size += e.to_string().len() + 1;
        entities.push(e);
    }
    json!({
        "objectSchemaType": "Incident", "objectEventType": "Create",
        "object": {"id": "/subscriptions/x/incidents/1", "properties": {
            "title": "bulk", "severity": "High", "status": "New", "relatedEntities": entities,
            "alerts": [{"kind": "SecurityAlert", "properties": {"systemAlertId": "a", "additionalData": {"Custom Details": "{\"PortcullisBlockFor\":[\"P2D\"]}"}}}]
        }}
    })
    .to_string()
    .into_bytes()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Microseconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Where one P1 request's handler time goes, without HTTP.
fn breakdown(path: &str) {
    use std::sync::Arc;
    let Ok(body) = std::fs::read(path) else {
        return;
    };
    let queues = Arc::new(portcullis::MemoryQueues::new(&["portcullis"]));
    let key = queue_message::SigningKey::from_bytes(vec![7; 32]).expect("32 bytes");
    let state = portcullis::memory_state(key, &queues);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let n = 20_000;
    let value = per_call(n, || {
        black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap());
    });
    let parse = per_call(n, || {
        black_box(alert::parse(black_box(&body), &state.extract).unwrap());
    });
    let parsed = alert::parse(&body, &state.extract).unwrap();
    let plan = per_call(n, || {
        black_box(state.policy.plan(&parsed, chrono::Utc::now()).unwrap());
    });
    let mut i = 0u32;
    let process = per_call(n, || {
        runtime.block_on(async {
            black_box(
                portcullis::service::process(
                    &state,
                    portcullis::Function::Alerts,
                    Some("application/json"),
                    &body,
                )
                .await,
            );
        });
        i += 1;
        if i.is_multiple_of(1000) {
            queues.clear();
        }
    });
    println!(
        "P1 breakdown ({} bytes): serde_json Value {value:.1} us; extraction {parse:.1} us, policy {plan:.1} us, whole request without HTTP {process:.1} us",
        body.len()
    );
}

fn main() {
    if let Ok(path) = std::env::var("P1_BODY") {
        breakdown(&path);
    }
    let body = incident(1024 * 1024);
    let config = ExtractConfig::default();
    let found = alert::parse(&body, &config)
        .expect("an incident")
        .candidates
        .len();
    let iterations = 20;
    let rounds = 15;
    let (mut ratios, mut value_ms, mut extract_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap());
        }
        let value = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(alert::parse(black_box(&body), &config).unwrap());
        }
        let extract = start.elapsed().as_secs_f64();
        ratios.push(value / extract);
        value_ms.push(value * 1000.0 / f64::from(iterations));
        extract_ms.push(extract * 1000.0 / f64::from(iterations));
    }
    println!(
        "P2: body {} bytes, {found} IP entities; serde_json Value {:.2} ms, extraction {:.2} ms (medians of {rounds} rounds x {iterations}); ratio Value/extraction = {:.2} (goal >= 0.8)",
        body.len(),
        median(value_ms),
        median(extract_ms),
        median(ratios)
    );
}
