//! Handler soak (issue 9, "fault soak", handler part), run by hand through `make soak-handler`:
//!
//! ```bash
//! cargo build --release --locked --bin portcullis-handler --example soak_handler
//! target/release/examples/soak_handler            # SOAK_RATE=1000 SOAK_SECONDS=300 by default
//! ```
//!
//! Starts Azurite (from `.tools/`, `make tools`) and the release handler binary as the host would, then
//! posts a Sentinel incident naming one documentation address (a lab range, so every request is queued
//! for real) at a fixed rate, open loop: a request is started every 1/rate s whatever the previous ones
//! do, at most 2,000 in flight (a request that finds no slot counts as an error). Every 10 s it samples
//! the handler's resident memory (`VmRSS`). Prints the totals and whether memory stayed flat: the mean of
//! the last minute within 20 % (plus 8 MiB) of the mean of the second minute (the first is warm-up).
//! Exits non-zero on any error or growth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_message::testing::{free_port, Azurite};

const KEY_B64: &str = "cG9ydGN1bGxpcy1pbnRlZ3JhdGlvbi10ZXN0LWtleSE=";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn body(i: u64) -> String {
    let address = format!("198.51.100.{}", i % 250 + 1);
    format!(
        r#"{{"objectSchemaType":"Incident","object":{{"id":"/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w/providers/Microsoft.SecurityInsights/Incidents/soak-{i}","properties":{{"title":"soak","severity":"Low","status":"New","incidentNumber":{i},"relatedEntities":[{{"kind":"Ip","properties":{{"address":"{address}"}}}}]}}}}}}"#
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    let rate = env_or("SOAK_RATE", 1000).max(1);
    let seconds = env_or("SOAK_SECONDS", 300).max(60);
    let azurite = Azurite::start();
    let port = free_port();
    let handler_bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("portcullis-handler")))
        .expect("target/release/portcullis-handler");
    let mut handler = std::process::Command::new(&handler_bin)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("PORTCULLIS_QUEUE", azurite.connection_string())
        .env("PORTCULLIS_SIGNING_KEY", KEY_B64)
        .env("PORTCULLIS_CREATE_QUEUES", "true")
        .env("PORTCULLIS_LAB_RANGES", "198.51.100.0/24")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the handler binary");
    let pid = handler.id();
    let url = format!("http://127.0.0.1:{port}/api/alerts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2000)
        .build()
        .expect("client");
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // One request queued for real before the clock starts (the queue is created on first use).
    for _ in 0..100 {
        let warm = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body(0))
            .send()
            .await;
        if warm.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outcomes = Arc::new(Outcomes::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(2000));
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let start = Instant::now();
    let total = rate * seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_sample = Duration::from_secs(10);
    for i in 0..total {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            outcomes.not_sent.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (client, url, outcomes) = (client.clone(), url.clone(), Arc::clone(&outcomes));
        tokio::spawn(async move {
            let sent = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body(i))
                .send()
                .await;
            outcomes.count(&sent);
            drop(permit);
        });
        if start.elapsed() >= next_sample {
            samples.push((next_sample.as_secs(), rss_kib(pid)));
            next_sample += Duration::from_secs(10);
        }
    }
    let _ = slots.acquire_many(2000).await;
    let elapsed = start.elapsed().as_secs_f64();
    samples.push((elapsed as u64, rss_kib(pid)));
    let _ = handler.kill();
    let _ = handler.wait();

    let [ok, not_sent, client_errors, server_errors, timeouts, connect, other] =
        outcomes.snapshot();
    let errors = not_sent + client_errors + server_errors + timeouts + connect + other;
    let mean = |from: u64, to: u64| {
        let window: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, r)| *r)
            .collect();
        window.iter().sum::<u64>() / window.len().max(1) as u64
    };
    let early = mean(60, 120);
    let late = mean(seconds.saturating_sub(60), seconds + 60);
    let flat = late <= early + early / 5 + 8 * 1024;
    println!(
        "soak: {ok} ok, {errors} errors in {elapsed:.1} s ({:.0} req/s achieved, {rate} asked)",
        (ok + errors) as f64 / elapsed
    );
    println!(
        "soak: errors by kind: {not_sent} not sent (all 2,000 in-flight slots busy: the load generator, not the \
         handler, fell behind), {client_errors} 4xx, {server_errors} 5xx, {timeouts} timeouts, {connect} connect \
         errors, {other} other"
    );
    let trace: Vec<String> = samples
        .iter()
        .map(|(t, r)| format!("{t}s:{:.1}", *r as f64 / 1024.0))
        .collect();
    println!("soak: handler VmRSS MiB every 10 s: {}", trace.join(" "));
    println!(
        "soak: RSS second minute {:.1} MiB, last minute {:.1} MiB: {}",
        early as f64 / 1024.0,
        late as f64 / 1024.0,
        if flat { "flat" } else { "GROWING" }
    );
    if errors == 0 && flat {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Every request's outcome, by kind: an error budget of zero must say whose error it was.
#[derive(Default)]
struct Outcomes {
    ok: AtomicU64,
    not_sent: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
    connect: AtomicU64,
    other: AtomicU64,
}

impl Outcomes {
    fn count(&self, sent: &Result<reqwest::Response, reqwest::Error>) {
        let counter = match sent {
            Ok(r) if r.status().is_success() => &self.ok,
            Ok(r) if r.status().is_client_error() => &self.client_errors,
            Ok(r) if r.status().is_server_error() => &self.server_errors,
            Err(e) if e.is_timeout() => &self.timeouts,
            Err(e) if e.is_connect() => &self.connect,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 7] {
        [
            &self.ok,
            &self.not_sent,
            &self.client_errors,
            &self.server_errors,
            &self.timeouts,
            &self.connect,
            &self.other,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}
