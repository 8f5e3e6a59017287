//! The appliance numbers in BENCHMARKS.md, counted by the fakes (calls and request bytes, not time).
//!
//! Run: `cargo test -p portcullis-agent --test integration appliances::bench -- --ignored --nocapture`

use std::sync::atomic::Ordering;

use chrono::{Duration, Utc};
use portcullis_agent::backends::{Backend, BlockEntry};

use crate::contract::bulk_targets;

fn stage_all(b: &mut dyn Backend, n: usize) {
    let expires_at = Utc::now() + Duration::hours(4);
    for target in bulk_targets(n) {
        b.stage_add(BlockEntry { target, expires_at });
    }
}

#[tokio::test]
#[ignore = "benchmark: prints the numbers for BENCHMARKS.md"]
async fn appliance_write_counts() {
    const BULK: usize = 10_000;
    println!(
        "| Backend | Scenario | Write calls | Write bytes | All calls | Writes per blocked IP |"
    );
    println!("|---|---|---|---|---|---|");

    // UniFi: a 10k-IP bulk alert into empty groups.
    {
        use super::unifi::{backend, config_text, FakeUnifi, Style};
        let fake = FakeUnifi::new(Style::UnifiOs);
        fake.add_group("portcullis-v4-0", false);
        fake.add_group("portcullis-v6-0", true);
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, false, "")).await.unwrap();
        b.init().await.unwrap();
        let (w0, b0, o0) = (
            fake.counters.writes(),
            fake.counters.write_bytes(),
            fake.counters.other.load(Ordering::SeqCst),
        );
        stage_all(b.as_mut(), BULK);
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        let all = writes + fake.counters.other.load(Ordering::SeqCst) - o0;
        println!("| unifi (UniFi OS, groups) | {BULK}-IP bulk alert, one commit | {writes} | {bytes} | {all} | {:.4} |", writes as f64 / BULK as f64);
    }
    {
        // A burst of 100 single-IP alerts inside the batch window: the agent stages all, commits once.
        use super::unifi::{backend, config_text, FakeUnifi, Style};
        let fake = FakeUnifi::new(Style::UnifiOs);
        fake.add_group("portcullis-v4-0", false);
        fake.add_group("portcullis-v6-0", true);
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, false, "")).await.unwrap();
        b.init().await.unwrap();
        // A burst of 100 single-IP alerts inside the batch window: the agent stages all, commits once.
        let (w0, b0) = (fake.counters.writes(), fake.counters.write_bytes());
        let expires_at = Utc::now() + Duration::hours(4);
        for i in 0..100 {
            let target = queue_message::Target::parse(&format!("203.0.113.{i}")).unwrap();
            b.stage_add(BlockEntry { target, expires_at });
        }
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        println!("| unifi (UniFi OS, groups) | burst of 100 single-IP alerts within the batch window | {writes} | {bytes} | — | {:.4} |", writes as f64 / 100.0);

        // For contrast: the same burst without batching (one commit per alert, min_write_interval 0).
        let (w0, b0) = (fake.counters.writes(), fake.counters.write_bytes());
        for i in 100..200 {
            let target = queue_message::Target::parse(&format!("203.0.112.{}", i - 100)).unwrap();
            b.stage_add(BlockEntry { target, expires_at });
            b.commit().await.unwrap();
        }
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        println!("| unifi (UniFi OS, groups) | same burst, one commit per alert (no batch window) | {writes} | {bytes} | — | {:.4} |", writes as f64 / 100.0);
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
        let (w0, b0) = (fake.counters.writes(), fake.counters.write_bytes());
        stage_all(b.as_mut(), BULK);
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let bytes = fake.counters.write_bytes() - b0;
        println!("| unifi (integration API, lists) | {BULK}-IP bulk alert, one commit | {writes} | {bytes} | — | {:.4} |", writes as f64 / BULK as f64);
    }

    // MikroTik, OPNsense, pfSense: calls per blocked IP in bulk.
    {
        use super::mikrotik::{backend, config_text, FakeRouter};
        let fake = FakeRouter::new();
        let running = fake.start().await;
        let mut b = backend(&config_text(&running)).await.unwrap();
        b.init().await.unwrap();
        let (w0, b0, o0) = (
            fake.counters.writes(),
            fake.counters.write_bytes(),
            fake.counters.other.load(Ordering::SeqCst),
        );
        stage_all(b.as_mut(), BULK);
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let all = writes + fake.counters.other.load(Ordering::SeqCst) - o0;
        println!(
            "| mikrotik | {BULK}-IP bulk alert | {writes} | {} | {all} | {:.4} |",
            fake.counters.write_bytes() - b0,
            writes as f64 / BULK as f64
        );
    }
    {
        use super::opnsense::{backend, config_text, FakeOpnsense};
        let fake = FakeOpnsense::new();
        fake.add_alias("portcullis", "external");
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, "")).await;
        b.init().await.unwrap();
        let (w0, b0, o0) = (
            fake.counters.writes(),
            fake.counters.write_bytes(),
            fake.counters.other.load(Ordering::SeqCst),
        );
        stage_all(b.as_mut(), BULK);
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let all = writes + fake.counters.other.load(Ordering::SeqCst) - o0;
        println!(
            "| opnsense | {BULK}-IP bulk alert | {writes} | {} | {all} | {:.4} |",
            fake.counters.write_bytes() - b0,
            writes as f64 / BULK as f64
        );
    }
    {
        use super::pfsense::{backend, config_text, FakePfsense};
        let fake = FakePfsense::new();
        fake.add_alias("portcullis", "network");
        let running = fake.start().await;
        let mut b = backend(&config_text(&running, "")).await;
        b.init().await.unwrap();
        let (w0, b0, o0) = (
            fake.counters.writes(),
            fake.counters.write_bytes(),
            fake.counters.other.load(Ordering::SeqCst),
        );
        stage_all(b.as_mut(), BULK);
        b.commit().await.unwrap();
        let writes = fake.counters.writes() - w0;
        let all = writes + fake.counters.other.load(Ordering::SeqCst) - o0;
        println!(
            "| pfsense | {BULK}-IP bulk alert | {writes} | {} | {all} | {:.4} |",
            fake.counters.write_bytes() - b0,
            writes as f64 / BULK as f64
        );
    }
}
