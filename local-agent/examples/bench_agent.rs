//! The agent's benchmarks (BENCHMARKS.md, section "Agent"): P3 (nftables commit vs raw `nft -f`), P4
//! (time-to-block through handler, queue and agent), P5 (storage transactions per IP), P6 (agent memory
//! with 100k blocks). Needs root: it builds its own network namespaces and touches nothing else.
//!
//! Run with `bash scripts/bench-agent.sh` (release build); or
//! `target/release/examples/bench_agent [p3|p4|p5|p6|all]` after building the release binaries.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use chrono::Utc;
use common::{run, sibling_bin, Killed, Ns};
use portcullis_agent::backends::nftables::script::{Batch, SetName};
use portcullis_agent::backends::nftables::{Format, Nftables, NftablesConfig};
use portcullis_agent::backends::{Backend, BlockEntry};
use queue_message::testing::Azurite;
use queue_message::Target;
use serde_json::json;

const ROUNDS: usize = 5;

/// `n` distinct addresses in 11.0.0.0/8 (public space, used only as set contents), deterministic.
fn addresses(n: usize, seed: u32) -> Vec<Target> {
    addresses_in(0x0b00_0000, n, seed)
}

/// `n` distinct addresses in the /8 starting at `base`, deterministic.
fn addresses_in(base: u32, n: usize, seed: u32) -> Vec<Target> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let addr = base | (x & 0x00ff_ffff);
        if seen.insert(addr) {
            out.push(Target::from_addr(Ipv4Addr::from(addr).into()));
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

const TABLE: &str = "add table inet portcullis\n\
    add set inet portcullis addr4 { type ipv4_addr; flags timeout; }\n";

fn time_raw(ns: &Ns, file: &Path, json: bool) -> anyhow::Result<f64> {
    let file = file.to_str().unwrap();
    let args: Vec<&str> = if json {
        vec!["nft", "-j", "-f", file]
    } else {
        vec!["nft", "-f", file]
    };
    let started = Instant::now();
    ns.exec(&args)?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn time_backend(
    ns: &Ns,
    format: Format,
    targets: &[Target],
    fresh: bool,
) -> anyhow::Result<f64> {
    if fresh {
        let _ = ns.exec(&["nft", "delete", "table", "inet", "portcullis"]);
    }
    let mut b = Nftables::new(NftablesConfig {
        netns: Some(ns.0.clone()),
        format,
        ..NftablesConfig::default()
    });
    b.init().await?;
    let expires_at = Utc::now() + chrono::Duration::days(1);
    let started = Instant::now();
    for t in targets {
        b.stage_add(BlockEntry {
            target: *t,
            expires_at,
        });
    }
    b.commit().await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn raw_text(targets: &[Target]) -> String {
    let mut s = String::from("add element inet portcullis addr4 { ");
    for (i, t) in targets.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{t} timeout 86400s"));
    }
    s.push_str(" }\n");
    s
}

fn raw_json(targets: &[Target]) -> Vec<u8> {
    let mut b = Batch::new("portcullis", true);
    for t in targets {
        b.upsert(SetName::Addr4, *t, 86_400);
    }
    b.to_json()
}

async fn p3() -> anyhow::Result<()> {
    let ns = Ns::new("p3")?;
    let dir = tempfile::tempdir()?;
    let targets = addresses(100_000, 1);
    let text_file = dir.path().join("batch.nft");
    std::fs::write(&text_file, raw_text(&targets))?;
    let json_file = dir.path().join("batch.json");
    std::fs::write(&json_file, raw_json(&targets))?;
    let table_file = dir.path().join("table.nft");
    std::fs::write(&table_file, TABLE)?;
    let fresh_raw = |ns: &Ns| -> anyhow::Result<()> {
        let _ = ns.exec(&["nft", "delete", "table", "inet", "portcullis"]);
        ns.exec(&["nft", "-f", table_file.to_str().unwrap()])?;
        Ok(())
    };
    let (mut backend_auto, mut backend_json, mut raw, mut raw_j) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        // Alternate the sides so drift on a shared machine hits both alike.
        fresh_raw(&ns)?;
        raw.push(time_raw(&ns, &text_file, false)?);
        backend_auto.push(time_backend(&ns, Format::Auto, &targets, true).await?);
        fresh_raw(&ns)?;
        raw_j.push(time_raw(&ns, &json_file, true)?);
        backend_json.push(time_backend(&ns, Format::Json, &targets, true).await?);
    }
    let (ba, bj, r, rj) = (
        median(&mut backend_auto),
        median(&mut backend_json),
        median(&mut raw),
        median(&mut raw_j),
    );
    println!("P3 100k IPv4, one transaction, median of {ROUNDS} (ms):");
    println!("  raw `nft -f` text            {r:8.1}");
    println!(
        "  backend, format=auto (text)  {ba:8.1}   ratio {:.2}x",
        ba / r
    );
    println!("  raw `nft -j -f` JSON         {rj:8.1}");
    println!(
        "  backend, format=json         {bj:8.1}   ratio {:.2}x vs raw JSON, {:.2}x vs raw text",
        bj / rj,
        bj / r
    );

    // 1,000 incremental blocks into a set already holding 100k.
    fresh_raw(&ns)?;
    ns.exec(&["nft", "-f", text_file.to_str().unwrap()])?;
    let (mut inc_backend, mut inc_raw) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let a = addresses(1000, 1000 + round as u32 * 2);
        let b = addresses(1000, 1001 + round as u32 * 2);
        let f = dir.path().join(format!("inc{round}.nft"));
        std::fs::write(&f, raw_text(&a))?;
        inc_raw.push(time_raw(&ns, &f, false)?);
        inc_backend.push(time_backend(&ns, Format::Auto, &b, false).await?);
    }
    let (ib, ir) = (median(&mut inc_backend), median(&mut inc_raw));
    println!("P3 1,000 more into 100k, median of {ROUNDS} (ms):");
    println!("  raw `nft -f` text            {ir:8.1}");
    println!(
        "  backend, format=auto (JSON)  {ib:8.1}   ratio {:.2}x",
        ib / ir
    );
    Ok(())
}

/// Azurite, a lab, the handler and the agent, all started; dropped in reverse.
struct Stack {
    handler_port: u16,
    metrics_port: u16,
    config: PathBuf,
    agent: Killed,
    _handler: Killed,
    _listener: Killed,
    fw: Ns,
    peer: Ns,
    _azurite: Azurite,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let azurite = Azurite::start();
        let fw = Ns::new("fw")?;
        let peer = Ns::new("peer")?;
        let (a, b) = (
            format!("pcb{}a", std::process::id() % 100_000),
            format!("pcb{}b", std::process::id() % 100_000),
        );
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        run(&["ip", "link", "set", &a, "netns", &fw.0])?;
        run(&["ip", "link", "set", &b, "netns", &peer.0])?;
        run(&[
            "ip",
            "-n",
            &fw.0,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            &a,
        ])?;
        run(&[
            "ip",
            "-n",
            &peer.0,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            &b,
        ])?;
        run(&["ip", "-n", &fw.0, "link", "set", &a, "up"])?;
        run(&["ip", "-n", &peer.0, "link", "set", &b, "up"])?;
        let listener = Killed(
            Command::new("ip")
                .args(["netns", "exec", &fw.0, "nc", "-lk", "198.51.100.1", "8080"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
        let handler_port = queue_message::testing::free_port();
        let handler = Killed(
            Command::new(sibling_bin("portcullis-handler")?)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("FUNCTIONS_CUSTOMHANDLER_PORT", handler_port.to_string())
                .env("PORTCULLIS_QUEUE", azurite.connection_string())
                .env("PORTCULLIS_SIGNING_KEY", key)
                .env("PORTCULLIS_CREATE_QUEUES", "true")
                .env("PORTCULLIS_LAB_RANGES", "198.51.100.0/24")
                .env("PORTCULLIS_MAX_TARGETS", "10000")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("handler.log"))?)
                .spawn()?,
        );
        let metrics_port = queue_message::testing::free_port();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[queue]\nconnection = \"{}\"\nsigning_key = \"{key}\"\ncreate_queues = true\n\
                 [state]\npath = \"{}\"\n[policy]\nlab_ranges = [\"198.51.100.0/24\"]\nmax_new_blocks_per_hour = 1000000\n\
                 [firewall]\nbackend = \"nftables\"\n[firewall.nftables]\nnetns = \"{}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[log]\nlevel = \"warn\"\n",
                azurite.connection_string(),
                dir.path().join("state.db").display(),
                fw.0
            ),
        )?;
        let agent = Killed(
            Command::new(sibling_bin("portcullis-agent")?)
                .arg("--config")
                .arg(&config)
                .arg("run")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("agent.log"))?)
                .spawn()?,
        );
        let stack = Self {
            handler_port,
            metrics_port,
            config,
            agent,
            _handler: handler,
            _listener: listener,
            fw,
            peer,
            _azurite: azurite,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("http://127.0.0.1:{metrics_port}/healthz"))
            .await
            .is_err()
            || std::net::TcpStream::connect(("127.0.0.1", handler_port)).is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "stack did not start: {}",
                    std::fs::read_to_string(stack.dir.path().join("agent.log"))?
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(stack)
    }

    async fn post_incident(&self, guid: &str, ips: &[String]) -> anyhow::Result<serde_json::Value> {
        let entities: Vec<_> = ips
            .iter()
            .map(|ip| json!({"kind": "Ip", "properties": {"address": ip}}))
            .collect();
        let body = json!({
            "objectSchemaType": "Incident", "objectEventType": "Create",
            "object": {"id": format!("/subscriptions/0/resourceGroups/rg/providers/Microsoft.SecurityInsights/Incidents/{guid}"),
                "properties": {"title": "bench", "severity": "High", "status": "New", "relatedEntities": entities}}
        });
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/alerts", self.handler_port))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("handler answered {status}: {value}");
        }
        Ok(value)
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .context(name.to_owned())
    }

    fn rss_kb(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.agent.0.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context(field.to_owned())
    }
}

const PROBER: &str = r#"
import socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
ready = False
deadline = time.time() + 30
while time.time() < deadline:
    s = socket.socket(); s.settimeout(0.05); s.bind((src, 0))
    start = time.time()
    try:
        s.connect((dst, 8080)); s.close()
        if not ready:
            print("ready", flush=True); ready = True
        time.sleep(0.005)
    except OSError:
        s.close()
        if ready:
            print("dropped %.6f" % start, flush=True); sys.exit(0)
print("timeout", flush=True)
"#;

async fn p4(stack: &Stack, n: usize) -> anyhow::Result<()> {
    let dev = run(&[
        "ip",
        "-n",
        &stack.peer.0,
        "-o",
        "link",
        "show",
        "type",
        "veth",
    ])?;
    let dev = dev
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    let mut latencies = Vec::new();
    for i in 0..n {
        let ip = format!("198.51.100.{}", 10 + i);
        run(&[
            "ip",
            "-n",
            &stack.peer.0,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &dev,
        ])?;
        let mut prober = Killed(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &stack.peer.0,
                    "python3",
                    "-c",
                    PROBER,
                    &ip,
                    "198.51.100.1",
                ])
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let mut lines = BufReader::new(prober.0.stdout.take().unwrap()).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        if first != "ready" {
            bail!("prober for {ip} never connected: {first}");
        }
        // Let the agent's poll loop settle into its idle rhythm, as it would be between real alerts.
        tokio::time::sleep(Duration::from_millis(1500 + 97 * i as u64 % 700)).await;
        let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        stack
            .post_incident(&format!("p4-{i}"), std::slice::from_ref(&ip))
            .await?;
        let line = tokio::task::spawn_blocking(move || lines.next())
            .await?
            .transpose()?
            .unwrap_or_default();
        let Some(at) = line.strip_prefix("dropped ") else {
            bail!("{ip} was never dropped: {line}");
        };
        let latency = (at.parse::<f64>()? - t0) * 1000.0;
        latencies.push(latency);
        print!(".");
        std::io::stdout().flush()?;
    }
    println!();
    let mut sorted = latencies.clone();
    println!(
        "P4 time-to-block over {n} alerts (POST → first dropped SYN), max_poll_interval 1s: median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        median(&mut sorted.clone()),
        percentile(&mut sorted, 0.95),
        latencies.iter().cloned().fold(f64::MAX, f64::min),
        latencies.iter().cloned().fold(0.0, f64::max),
    );
    Ok(())
}

async fn wait_active(stack: &Stack, want: f64, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while stack.metric("portcullis_agent_active_blocks").await? < want {
        if started.elapsed() > limit {
            bail!(
                "only {} active blocks after {limit:?}",
                stack.metric("portcullis_agent_active_blocks").await?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
}

fn bulk_ips(seed: u32) -> Vec<String> {
    addresses(10_000, seed)
        .iter()
        .map(ToString::to_string)
        .collect()
}

async fn p5(stack: &Stack) -> anyhow::Result<()> {
    let before_active = stack.metric("portcullis_agent_active_blocks").await?;
    let before = stack
        .metric("portcullis_agent_queue_transactions_total")
        .await?;
    let started = Instant::now();
    let response = stack.post_incident("p5-bulk", &bulk_ips(7)).await?;
    let sends = response["messages"].as_array().map(Vec::len).unwrap_or(0) as f64;
    wait_active(stack, before_active + 10_000.0, Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    // Let the deletes land and count them too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent = stack
        .metric("portcullis_agent_queue_transactions_total")
        .await?
        - before;
    // Idle polling goes on regardless of alerts (one receive per max_poll_interval); subtract what 2 s of
    // idling costs to get the alert's own share, and report both.
    println!(
        "P5 10k-IP bulk alert: handler sends {sends}, agent transactions {agent} (incl. idle polls during {:.1} s + 2 s) → {:.4} per IP (all counted)",
        elapsed.as_secs_f64(),
        (sends + agent) / 10_000.0
    );
    Ok(())
}

async fn p6(stack: &Stack) -> anyhow::Result<()> {
    // 100k distinct addresses in 12.0.0.0/8 (apart from P5's), posted as ten 10k-IP incidents.
    let current = stack.metric("portcullis_agent_active_blocks").await?;
    let before = stack.rss_kb("VmRSS")?;
    let all: Vec<String> = addresses_in(0x0c00_0000, 100_000, 3)
        .iter()
        .map(ToString::to_string)
        .collect();
    let started = Instant::now();
    for (i, chunk) in all.chunks(10_000).enumerate() {
        stack.post_incident(&format!("p6-{i}"), chunk).await?;
    }
    wait_active(stack, current + 100_000.0, Duration::from_secs(300)).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = stack.rss_kb("VmRSS")?;
    let hwm = stack.rss_kb("VmHWM")?;
    let active = stack.metric("portcullis_agent_active_blocks").await?;
    let out = Command::new(sibling_bin("portcullis-agent")?)
        .arg("--config")
        .arg(&stack.config)
        .arg("sync")
        .output()?;
    let rss_after_sync = stack.rss_kb("VmRSS")?;
    let hwm_after_sync = stack.rss_kb("VmHWM")?;
    let elements = stack
        .fw
        .exec(&["nft", "list", "set", "inet", "portcullis", "addr4"])?
        .matches(" expires ")
        .count();
    println!(
        "P6 agent VmRSS before: {:.1} MB with {current} active blocks",
        before as f64 / 1024.0
    );
    println!(
        "P6 {active} active blocks ({elements} kernel elements, loaded in {:.1} s): agent VmRSS {:.1} MB (peak VmHWM {:.1} MB); after a full reconcile ({}) VmRSS {:.1} MB, VmHWM {:.1} MB",
        took.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        String::from_utf8_lossy(&out.stdout).trim(),
        rss_after_sync as f64 / 1024.0,
        hwm_after_sync as f64 / 1024.0,
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_owned());
    if which == "p3" || which == "all" {
        p3().await?;
    }
    if ["p4", "p5", "p6", "all"].contains(&which.as_str()) {
        let stack = Stack::start().await?;
        let n: usize = std::env::var("P4_ALERTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(25);
        if which == "p4" || which == "all" {
            p4(&stack, n).await?;
        }
        if which == "p5" || which == "all" {
            p5(&stack).await?;
        }
        if which == "p6" || which == "all" {
            p6(&stack).await?;
        }
    }
    Ok(())
}
