//! Benchmark P2 (see BENCHMARKS.md): extraction from a ~1 MB incident vs `serde_json::from_slice::<Value>`
//! of the same bytes, interleaved in the same run. `cargo bench -p portcullis --bench extract`.
//!
//! A hand-rolled loop (no criterion): each round times both sides over the same number of iterations, and
//! the medians of the per-round ratios are reported.

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

fn main() {
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
