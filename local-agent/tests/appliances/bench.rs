//! The appliance numbers in BENCHMARKS.md, counted by the fakes (calls and request bytes, not time).
//!
//! Run: `cargo test -p portcullis-agent --test integration appliances::bench -- --ignored --nocapture`

use std::sync::atomic::Ordering;

use chrono::{Duration, Utc};
use portcullis_agent::backends::{Backend, BlockEntry};

use super::server::Counters;
use crate::contract::bulk_targets;

const BULK: usize = 10_000;

fn stage_all(b: &mut dyn Backend, n: usize) {
    let expires_at = Utc::now() + Duration::hours(4);
    for target in bulk_targets(n) {
        b.stage_add(BlockEntry { target, expires_at });
    }
}

/// What a [`BULK`]-IP batch committed at once costs on the fake: (write calls, write bytes, all calls).
async fn bulk_commit(b: &mut dyn Backend, counters: &Counters) -> (usize, usize, usize) {
    let (w0, b0, o0) = (
        counters.writes(),
        counters.write_bytes(),
        counters.other.load(Ordering::SeqCst),
    );
    stage_all(b, BULK);
    b.commit().await.unwrap();
    let writes = counters.writes() - w0;
    let all = writes + counters.other.load(Ordering::SeqCst) - o0;
    (writes, counters.write_bytes() - b0, all)
}

/// One table row; `all` is `None` where the scenario does not count every call.
fn row(
    backend: &str,
    scenario: &str,
    (writes, bytes, all): (usize, usize, Option<usize>),
    ips: usize,
) {
    let all = all.map_or_else(|| "—".to_owned(), |all| all.to_string());
    println!(
        "| {backend} | {scenario} | {writes} | {bytes} | {all} | {:.4} |",
        writes as f64 / ips as f64
    );
}

#[tokio::test]
#[ignore = "benchmark: prints the numbers for BENCHMARKS.md"]
async fn appliance_write_counts() {
    println!(
        "| Backend | Scenario | Write calls | Write bytes | All calls | Writes per blocked IP |"
    );
    println!("|---|---|---|---|---|---|");

    // UniFi: a 10k-IP bulk alert into empty groups.
    {
        use super::unifi::{logged_in, FakeUnifi, Style};
        let fake = FakeUnifi::new(Style::UnifiOs);
        fake.add_first_groups();
        let running = fake.start().await;
        let mut b = logged_in(&running).await;
        let (writes, bytes, all) = bulk_commit(b.as_mut(), &fake.counters).await;
        row(
            "unifi (UniFi OS, groups)",
            &format!("{BULK}-IP bulk alert, one commit"),
            (writes, bytes, Some(all)),
            BULK,
        );
    }
    {
        // A burst of 100 single-IP alerts inside the batch window: the agent stages all, commits once.
        use super::unifi::{logged_in, FakeUnifi, Style};
        let fake = FakeUnifi::new(Style::UnifiOs);
        fake.add_first_groups();
        let running = fake.start().await;
        let mut b = logged_in(&running).await;
        let (w0, b0) = (fake.counters.writes(), fake.counters.write_bytes());
        let expires_at = Utc::now() + Duration::hours(4);
        for i in 0..100 {
            let target = queue_message::Target::parse(&format!("203.0.113.{i}")).unwrap();
            b.stage_add(BlockEntry { target, expires_at });
        }
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        row(
            "unifi (UniFi OS, groups)",
            "burst of 100 single-IP alerts within the batch window",
            (writes, bytes, None),
            100,
        );

        // For contrast: the same burst without batching (one commit per alert, min_write_interval 0).
        let (w0, b0) = (fake.counters.writes(), fake.counters.write_bytes());
        for i in 100..200 {
            let target = queue_message::Target::parse(&format!("203.0.112.{}", i - 100)).unwrap();
            b.stage_add(BlockEntry { target, expires_at });
            b.commit().await.unwrap();
        }
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        row(
            "unifi (UniFi OS, groups)",
            "same burst, one commit per alert (no batch window)",
            (writes, bytes, None),
            100,
        );
    }

    // UniFi integration API (traffic matching lists).
    {
        use super::unifi::{backend, config_text, FakeUnifi, Style};
        let fake = FakeUnifi::new(Style::UnifiOs);
        fake.add_list("portcullis-v4-0", false);
        fake.add_list("portcullis-v6-0", true);
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, true, "")).await.unwrap();
        b.init().await.unwrap();
        let (writes, bytes, _) = bulk_commit(b.as_mut(), &fake.counters).await;
        row(
            "unifi (integration API, lists)",
            &format!("{BULK}-IP bulk alert, one commit"),
            (writes, bytes, None),
            BULK,
        );
    }

    // MikroTik, OPNsense, pfSense: calls per blocked IP in bulk.
    let scenario = format!("{BULK}-IP bulk alert");
    {
        use super::mikrotik::{backend, config_text, FakeRouter};
        let fake = FakeRouter::new();
        let running = fake.start().await;
        let mut b = backend(&config_text(&running)).await.unwrap();
        b.init().await.unwrap();
        let (writes, bytes, all) = bulk_commit(b.as_mut(), &fake.counters).await;
        row("mikrotik", &scenario, (writes, bytes, Some(all)), BULK);
    }
    {
        use super::opnsense::{backend, config_text, FakeOpnsense};
        let fake = FakeOpnsense::new();
        fake.add_alias("portcullis", "external");
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, "")).await;
        b.init().await.unwrap();
        let (writes, bytes, all) = bulk_commit(b.as_mut(), &fake.counters).await;
        row("opnsense", &scenario, (writes, bytes, Some(all)), BULK);
    }
    {
        use super::pfsense::{backend, config_text, FakePfsense};
        let fake = FakePfsense::new();
        fake.add_alias("portcullis", "network");
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, "")).await;
        b.init().await.unwrap();
        let (writes, bytes, all) = bulk_commit(b.as_mut(), &fake.counters).await;
        row("pfsense", &scenario, (writes, bytes, Some(all)), BULK);
    }
}
