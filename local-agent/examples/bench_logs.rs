//! Firewall-log benchmarks (BENCHMARKS.md, section "Firewall logs"):
//! - P9: lines per second the agent's receive path (UDP receive, parse, summarise) drains on one core,
//!   divided by what a bare UDP reader with the same socket options (only counting datagrams) drains in
//!   the same run. Each round fills a fresh socket's kernel buffer with generated lines while nothing
//!   reads it, then times one reader draining it on a one-thread runtime; rounds alternate readers.
//! - P10: bytes shipped (signed, gzip'd report messages) divided by raw syslog bytes, for one simulated
//!   hour of scan-heavy traffic per format, windows of 60 s.
//! - nl: no loss: 20,000 lines/s over UDP for 60 s into the running receiver (`logs::start`), counting
//!   lines received against lines sent, the kernel's drops on the socket, and the process's peak RSS.
//!
//! Run with `cargo run --release -p portcullis-agent --example bench_logs -- [p9|p10|nl|all]`.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use portcullis_agent::logs::config::LogsConfig;
use portcullis_agent::logs::envelope::Zone;
use portcullis_agent::logs::event::Format;
use portcullis_agent::logs::generator::{Generator, Mix};
use portcullis_agent::logs::metrics::LogMetrics;
use portcullis_agent::logs::pipeline::Pipeline;
use portcullis_agent::logs::receiver::{self, Shared};
use portcullis_agent::logs::ship::{compressed_size, report_messages, Ship, ShipError};
use portcullis_agent::logs::spool::Batch;
use queue_message::SigningKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Datagrams queued per round: well inside the granted receive buffer (checked: no kernel drops).
const PER_ROUND: usize = 3000;
const ROUNDS: usize = 30;

fn config() -> LogsConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = LogsConfig::listening(vec![any], Vec::new());
    c.timezone = Zone::Named(chrono_tz::UTC);
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Counts datagrams like the agent's loop receives them, doing nothing else.
async fn bare_loop(
    socket: tokio::net::UdpSocket,
    count: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => { if r.is_ok() { count.fetch_add(1, Ordering::Relaxed); } }
            () = shutdown.cancelled() => return,
        }
        for _ in 0..255 {
            match socket.try_recv_from(&mut buf) {
                Ok(_) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Waits (on another thread) until `counter` reaches `target`, then cancels; returns the elapsed time.
fn watch(
    counter: Arc<AtomicU64>,
    target: u64,
    start: Instant,
    token: CancellationToken,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || loop {
        if counter.load(Ordering::Relaxed) >= target {
            let took = start.elapsed();
            token.cancel();
            return took;
        }
        if start.elapsed() > Duration::from_secs(60) {
            token.cancel();
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_micros(50));
    })
}

fn p9() {
    let rt = runtime();
    let mut generator = Generator::new(9, Mix::SCAN_HEAVY);
    let now = Utc::now();
    let lines: Vec<String> = (0..PER_ROUND * 4)
        .map(|i| generator.line(Format::ALL[i % 5], now))
        .collect();
    let avg = lines.iter().map(String::len).sum::<usize>() / lines.len();
    let config = Arc::new(config());
    let metrics = Arc::new(LogMetrics::default());
    let shared = Arc::new(Shared {
        config: config.clone(),
        pipeline: Mutex::new(Pipeline::new(config, "bench".to_owned(), metrics.clone())),
        metrics: metrics.clone(),
        close_now: Notify::new(),
    });
    let sender = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut bare_time, mut agent_time, mut drops, mut granted) =
        (Duration::ZERO, Duration::ZERO, 0, 0);
    for round in 0..ROUNDS {
        for agent in [round % 2 == 0, round % 2 == 1] {
            let (socket, size) = rt
                .block_on(async { receiver::bind_udp("127.0.0.1:0".parse().unwrap()) })
                .unwrap();
            granted = size;
            let addr = socket.local_addr().unwrap();
            let inode = receiver::socket_inode(&socket).unwrap_or(0);
            for i in 0..PER_ROUND {
                sender
                    .send_to(
                        lines[(round * PER_ROUND + i) % lines.len()].as_bytes(),
                        addr,
                    )
                    .unwrap();
            }
            drops += receiver::kernel_drops(&[inode]).unwrap_or(0);
            let token = CancellationToken::new();
            if agent {
                let before = metrics.lines_received.load(Ordering::Relaxed);
                let counter = Arc::new(AtomicU64::new(0));
                // Mirror lines_received into the watched counter from the agent's own metric.
                let shared_metrics = metrics.clone();
                let mirror = counter.clone();
                let mirror_token = token.clone();
                let mirror_thread = std::thread::spawn(move || {
                    while !mirror_token.is_cancelled() {
                        mirror.store(
                            shared_metrics.lines_received.load(Ordering::Relaxed) - before,
                            Ordering::Relaxed,
                        );
                        std::thread::sleep(Duration::from_micros(20));
                    }
                });
                let start = Instant::now();
                let watcher = watch(counter, PER_ROUND as u64, start, token.clone());
                rt.block_on(receiver::udp_loop(socket, shared.clone(), token));
                agent_time += watcher.join().unwrap();
                mirror_thread.join().unwrap();
                shared.pipeline.lock().unwrap().close_window();
            } else {
                let counter = Arc::new(AtomicU64::new(0));
                let start = Instant::now();
                let watcher = watch(counter.clone(), PER_ROUND as u64, start, token.clone());
                rt.block_on(bare_loop(socket, counter, token));
                bare_time += watcher.join().unwrap();
            }
        }
    }
    // Where the time goes: the same lines through the envelope + format parser alone, then alone + summariser.
    let context = portcullis_agent::logs::parse::Context {
        received: now,
        zone: Zone::Named(chrono_tz::UTC),
        sender: None,
    };
    let t = Instant::now();
    let mut events = 0;
    for _ in 0..5 {
        for line in &lines {
            events += usize::from(matches!(
                portcullis_agent::logs::parse::parse(line, &context).outcome,
                portcullis_agent::logs::parse::Outcome::Event(_)
            ));
        }
    }
    let parse_only = (lines.len() * 5) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut hosts = 0;
    for _ in 0..5 {
        for line in &lines {
            hosts += usize::from(
                portcullis_agent::logs::envelope::parse(line, Zone::Named(chrono_tz::UTC), now)
                    .host
                    .is_some(),
            );
        }
    }
    let envelope_only = (lines.len() * 5) as f64 / t.elapsed().as_secs_f64();
    println!("P9  in memory, no socket: syslog envelope alone {envelope_only:.0} lines/s ({hosts} with a host)");
    for (i, format) in Format::ALL.iter().enumerate() {
        let mine: Vec<&String> = lines.iter().skip(i).step_by(5).collect();
        let t = Instant::now();
        for _ in 0..5 {
            for line in &mine {
                std::hint::black_box(portcullis_agent::logs::parse::parse(line, &context));
            }
        }
        println!(
            "P9  in memory: parse {:<10} {:.0} lines/s",
            format.as_str(),
            (mine.len() * 5) as f64 / t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let mut p = Pipeline::new(
        Arc::new(self::config()),
        "bench".to_owned(),
        Arc::new(LogMetrics::default()),
    );
    for _ in 0..5 {
        for line in &lines {
            p.ingest(line.as_bytes(), "127.0.0.1".parse().unwrap(), now);
        }
    }
    let pipeline_only = (lines.len() * 5) as f64 / t.elapsed().as_secs_f64();
    println!("P9  in memory, no socket: parse {parse_only:.0} lines/s ({events} events), parse+summarise {pipeline_only:.0} lines/s");
    let total = (PER_ROUND * ROUNDS) as f64;
    let bare = total / bare_time.as_secs_f64();
    let agent = total / agent_time.as_secs_f64();
    let c = metrics.counts();
    println!("P9  lines per round {PER_ROUND}, rounds {ROUNDS}, mean line {avg} bytes, receive buffer granted {granted} bytes, kernel drops {drops}");
    println!(
        "P9  parsed {} not-firewall {} of {} received by the agent",
        c.lines_parsed, c.lines_not_firewall, c.lines_received
    );
    println!("P9  bare reader {bare:.0} lines/s, agent receive+parse+summarise {agent:.0} lines/s, ratio {:.2} (ceiling >= 0.5)", agent / bare);
}

fn p10() {
    let key = SigningKey::from_bytes((0..32u8).collect()).unwrap();
    let start = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
    let rate = 10; // lines per second: a busy home WAN interface
    println!("P10 one simulated hour at {rate} lines/s, window 60 s, scan-heavy mix (noisy 35%, scanners 52%, accepts 8%, other 5%)");
    let mut all = (0u64, 0u64, 0u64, 0u64);
    for (seed, format) in Format::ALL.iter().enumerate() {
        let config = Arc::new(config());
        let metrics = Arc::new(LogMetrics::default());
        let mut pipeline = Pipeline::new(config, "home".to_owned(), metrics.clone());
        let mut generator = Generator::new(seed as u64 + 100, Mix::SCAN_HEAVY);
        let sender = "192.168.1.1".parse().unwrap();
        let (mut raw, mut sent, mut gz, mut rows, mut json) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for second in 0..3600i64 {
            let t = start + chrono::Duration::seconds(second);
            for _ in 0..rate {
                let line = generator.line(*format, t);
                raw += line.len() as u64;
                pipeline.ingest(line.as_bytes(), sender, t);
            }
            if (second + 1) % 60 == 0 {
                for batch in pipeline.close_window() {
                    rows += batch.rows.len() as u64;
                    gz += compressed_size(&batch);
                    json += serde_json::to_vec(&batch.rows).map_or(0, |j| j.len() as u64);
                    sent += report_messages(&batch, &key, "home")
                        .iter()
                        .map(|m| m.len() as u64)
                        .sum::<u64>();
                }
            }
        }
        let c = metrics.counts();
        println!(
            "P10 {:<10} raw {raw:>9} B, {} lines ({} parsed), {rows:>5} rows; report messages {sent:>7} B = {:.4} of raw; rows as gzip JSON (Logs Ingestion body) {gz:>7} B = {:.4}; rows as plain JSON (what the table bills, about) {json:>8} B = {:.4}",
            format.as_str(), c.lines_received, c.lines_parsed, sent as f64 / raw as f64, gz as f64 / raw as f64, json as f64 / raw as f64
        );
        all = (all.0 + raw, all.1 + sent, all.2 + gz, all.3 + json);
    }
    println!("P10 all formats: report messages {:.4} of raw, gzip JSON rows {:.4} of raw (ceiling <= 0.05), plain JSON rows {:.4} of raw", all.1 as f64 / all.0 as f64, all.2 as f64 / all.0 as f64, all.3 as f64 / all.0 as f64);
}

/// Discards batches (the no-loss run measures the receive side).
#[derive(Debug)]
struct Discard;

#[async_trait]
impl Ship for Discard {
    async fn ship(&self, batch: &Batch) -> Result<u64, ShipError> {
        Ok(batch.rows.len() as u64)
    }
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn no_loss() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let metrics = Arc::new(LogMetrics::default());
    let running = rt
        .block_on(async {
            portcullis_agent::logs::start(
                config(),
                "home".to_owned(),
                dir.path(),
                Arc::new(Discard),
                metrics.clone(),
                token.clone(),
            )
        })
        .unwrap();
    let addr = running.udp[0];
    let (rate, seconds) = (20_000u64, 60u64);
    let sender = std::thread::spawn(move || {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let mut generator = Generator::new(42, Mix::SCAN_HEAVY);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut bytes = 0u64;
        while sent < rate * seconds {
            // Paced in 1 ms steps.
            let due = (start.elapsed().as_micros() as u64 * rate / 1_000_000).min(rate * seconds);
            while sent < due {
                let line = generator.line(Format::ALL[(sent % 5) as usize], Utc::now());
                bytes += line.len() as u64;
                socket.send_to(line.as_bytes(), addr).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (sent, bytes, start.elapsed())
    });
    let watch_token = token;
    let m = metrics.clone();
    let (sent, bytes, took) = rt.block_on(async move {
        let sent = tokio::task::spawn_blocking(move || sender.join().unwrap())
            .await
            .unwrap();
        // Let the receiver drain what is queued, then read the kernel's drop counter once more.
        tokio::time::sleep(Duration::from_secs(6)).await;
        watch_token.cancel();
        let _ = &m;
        sent
    });
    rt.block_on(running.join());
    let c = metrics.counts();
    let granted = metrics.receive_buffer_bytes.load(Ordering::Relaxed);
    println!(
        "NL  sent {sent} lines ({bytes} B) in {:.1} s = {:.0} lines/s; agent received {} (lost {}), kernel drops {}, receive buffer {granted} B, peak RSS {} kB (agent pipeline + sender thread in one process)",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        c.lines_received,
        sent - c.lines_received.min(sent),
        c.kernel_drops,
        peak_rss_kb()
    );
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    if which == "p9" || which == "all" {
        p9();
    }
    if which == "p10" || which == "all" {
        p10();
    }
    if which == "nl" || which == "all" {
        no_loss();
    }
}
