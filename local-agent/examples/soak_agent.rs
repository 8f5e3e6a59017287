//! The agent's fault soak (issue 9, BENCHMARKS.md "Agent fault soak"): a stream of signed block and unblock
//! messages — several incidents, false-positive unblocks, manual blocks and unblocks, handler-retry
//! duplicates, delivered out of issue order — is applied by the real agent to real nftables in a network
//! namespace while the harness
//! - kills the agent with SIGKILL at random moments (`SOAK_KILLS`, default 100) and restarts it at once,
//! - stops Azurite once mid-stream and starts it again on the same port and data directory (SIGTERM: a
//!   real queue service never loses an acknowledged message, and Azurite's own store is only flushed on a
//!   clean stop),
//! - makes the firewall fail for a while (the debug build's `PORTCULLIS_FAIL_BACKEND_WHILE`).
//!
//! Afterwards the queue must be empty, the poison queue too, and the addresses in the firewall's set must
//! equal exactly the set the messages' issue times say (no block lost, none extra), as must the agent's own
//! `list`. The expected set follows the agent's ordering rule: a claim (per incident, or `manual`) holds
//! a target when its latest block was issued after its latest release and after the latest manual
//! unblock of that target.
//!
//! Run as root with `make soak-agent` (debug build: the outage switch is compiled into debug builds only),
//! or `target/debug/examples/soak_agent` with `SOAK_MESSAGES` (default 10000), `SOAK_KILLS`, `SOAK_SEED`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use common::{run, sibling_bin, Killed, Ns};
use queue_message::testing::{azurite_bin, free_port};
use queue_message::{Action, BlockMessage, QueueConnection, SigningKey, Source, Target};

const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
const QUEUE: &str = "soak";
const POOL: u32 = 1500;
const INCIDENTS: u64 = 30;

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An address of the pool, in 198.18.0.0/15 (the benchmarking range, a lab range for this agent).
fn pool_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | (i + 1))
}

/// The messages in issue order, and the addresses that must be blocked at the end.
struct Stream {
    messages: Vec<BlockMessage>,
    expected: BTreeSet<Ipv4Addr>,
}

/// What the issue times say per target: the latest block and release per claim, the latest manual unblock.
#[derive(Default)]
struct Model {
    blocks: HashMap<(String, Ipv4Addr), u64>,
    releases: HashMap<(String, Ipv4Addr), u64>,
    release_all: HashMap<Ipv4Addr, u64>,
}

impl Model {
    fn expected(&self) -> BTreeSet<Ipv4Addr> {
        self.blocks
            .iter()
            .filter(|((claim, addr), issued)| {
                let released = self.releases.get(&(claim.clone(), *addr)).copied();
                let all = self.release_all.get(addr).copied();
                released.is_none_or(|r| **issued > r) && all.is_none_or(|r| **issued > r)
            })
            .map(|((_, addr), _)| *addr)
            .collect()
    }
}

fn generate(n: usize, rng: &mut Rng, base: DateTime<Utc>) -> Stream {
    let mut model = Model::default();
    let mut messages = Vec::with_capacity(n);
    for i in 0..n {
        // One second apart: the wire carries whole seconds, and equal issue times are a tie the agent
        // gives to the release; distinct seconds keep the expected set free of ties.
        let issued = base + chrono::Duration::seconds(i as i64);
        let issued_s = i as u64;
        let roll = rng.below(100);
        let (action, source) = match roll {
            0..90 => {
                let k = rng.below(INCIDENTS);
                let source = Source {
                    kind: "sentinel-incident".to_owned(),
                    id: Some(format!(
                        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.SecurityInsights/Incidents/soak-{k}"
                    )),
                    ..Source::default()
                };
                let action = if roll < 65 {
                    Action::Block
                } else {
                    Action::Unblock
                };
                (action, source)
            }
            90..95 => (Action::Block, manual()),
            _ => (Action::Unblock, manual()),
        };
        let claim = source.claim_key();
        let count = 1 + rng.below(4);
        let mut targets = BTreeSet::new();
        while (targets.len() as u64) < count {
            targets.insert(pool_addr(rng.below(u64::from(POOL)) as u32));
        }
        for addr in &targets {
            let key = (claim.clone(), *addr);
            match (action, source.kind.as_str()) {
                (Action::Block, _) => {
                    model.blocks.insert(key, issued_s);
                }
                (Action::Unblock, "manual") => {
                    model.release_all.insert(*addr, issued_s);
                }
                (Action::Unblock, _) => {
                    model.releases.insert(key, issued_s);
                }
            }
        }
        let expires_at = match action {
            Action::Block => base + chrono::Duration::days(3),
            Action::Unblock => issued + chrono::Duration::days(90),
        };
        messages.push(BlockMessage {
            id: uuid::Uuid::from_u128(0x50a4_0000_0000_0000_0000_0000_0000_0000 | i as u128),
            action,
            targets: targets
                .iter()
                .map(|a| Target::from_addr((*a).into()))
                .collect(),
            expires_at,
            reason: format!("soak {i}"),
            source,
            issued_at: issued,
        });
    }
    Stream {
        expected: model.expected(),
        messages,
    }
}

fn manual() -> Source {
    Source {
        kind: "manual".to_owned(),
        ..Source::default()
    }
}

/// The delivery order: issue order shuffled within windows of 64, 1 % sent twice (a handler retry).
fn delivery_order(stream: &Stream, key: &SigningKey, rng: &mut Rng) -> Vec<String> {
    let mut texts: Vec<String> = stream.messages.iter().map(|m| m.encode(key)).collect();
    for window in texts.chunks_mut(64) {
        for i in (1..window.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            window.swap(i, j);
        }
    }
    let mut out = Vec::with_capacity(texts.len() * 101 / 100);
    for text in texts {
        if rng.below(100) == 0 {
            out.push(text.clone());
        }
        out.push(text);
    }
    out
}

/// Azurite on a fixed port and data directory, so it can be stopped and started again.
struct Emulator {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Emulator {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut e = Self {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        e.up()?;
        Ok(e)
    }

    fn up(&mut self) -> anyhow::Result<()> {
        let child = Command::new(azurite_bin())
            .args(["--queueHost", "127.0.0.1", "--queuePort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(&self.dir)
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("Azurite did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A clean stop (SIGTERM), waited for.
    fn down(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            run(&["kill", "-TERM", &child.id().to_string()])?;
            child.wait()?;
        }
        Ok(())
    }

    fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={a};AccountKey={k};QueueEndpoint=http://127.0.0.1:{p}/{a}",
            a = queue_message::connection::DEV_ACCOUNT,
            k = queue_message::connection::DEV_ACCOUNT_KEY,
            p = self.port
        )
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The agent under test, restarted after every kill.
struct Agent {
    config: PathBuf,
    log: PathBuf,
    outage: PathBuf,
    child: Option<Killed>,
}

impl Agent {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(sibling_bin("portcullis-agent")?)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("PORTCULLIS_FAIL_BACKEND_WHILE", &self.outage)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(Killed(child));
        Ok(())
    }

    /// SIGKILL, reaped, then started again.
    fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        drop(self.child.take());
        self.start()
    }

    fn list(&self) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
        let out = run(&[
            sibling_bin("portcullis-agent")?.to_str().context("path")?,
            "--config",
            self.config.to_str().context("path")?,
            "list",
            "--json",
        ])?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out)?;
        rows.iter()
            .map(|r| {
                r["target"]
                    .as_str()
                    .context("target")?
                    .parse()
                    .context("address")
            })
            .collect()
    }
}

/// The addresses in the agent's nftables set inside `ns`.
fn firewall_set(ns: &Ns) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    let out = ns.exec(&["nft", "-j", "list", "set", "inet", "portcullis", "addr4"])?;
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    let mut set = BTreeSet::new();
    let mut count = 0usize;
    for item in doc["nftables"].as_array().context("nftables")? {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let val = e["elem"]["val"].as_str().or(e.as_str()).context("elem")?;
            set.insert(val.parse()?);
            count += 1;
        }
    }
    if count != set.len() {
        bail!("the set lists {count} elements for {} addresses", set.len());
    }
    Ok(set)
}

fn diff(label: &str, got: &BTreeSet<Ipv4Addr>, want: &BTreeSet<Ipv4Addr>) -> bool {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    println!(
        "{label}: {} addresses, expected {}: {} missing, {} extra{}",
        got.len(),
        want.len(),
        missing.len(),
        extra.len(),
        if missing.is_empty() && extra.is_empty() {
            String::new()
        } else {
            format!(
                " (first missing {:?}, first extra {:?})",
                missing.iter().take(5).collect::<Vec<_>>(),
                extra.iter().take(5).collect::<Vec<_>>()
            )
        }
    );
    missing.is_empty() && extra.is_empty()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env_num("SOAK_MESSAGES", 10_000) as usize;
    let kills = env_num("SOAK_KILLS", 100);
    let seed = env_num("SOAK_SEED", 1);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let key = SigningKey::from_base64(KEY)?;
    // Issue times end now (the handler signed them in the past hours); blocks expire in two days.
    let stream = generate(
        n,
        &mut rng,
        Utc::now() - chrono::Duration::seconds(n as i64),
    );
    let texts = delivery_order(&stream, &key, &mut rng);
    println!(
        "soak: {n} messages ({} deliveries with duplicates), {kills} kills, seed {seed}, {} addresses expected blocked",
        texts.len(),
        stream.expected.len()
    );

    let dir = tempfile::tempdir()?;
    let mut azurite = Emulator::start(&dir.path().join("azurite"))?;
    let fw = Ns::new("soak")?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nconnection = \"{}\"\nname = \"{QUEUE}\"\nsigning_key = \"{KEY}\"\ncreate_queues = true\n\
             visibility_timeout = \"5s\"\n\
             [state]\npath = \"{}\"\n[policy]\nlab_ranges = [\"198.18.0.0/15\"]\nmax_new_blocks_per_hour = 1000000\n\
             [firewall]\nbackend = \"nftables\"\n[firewall.nftables]\nnetns = \"{}\"\n\
             [reports]\nenabled = false\n[log]\nlevel = \"info\"\n",
            azurite.connection_string(),
            dir.path().join("state.db").display(),
            fw.0
        ),
    )?;
    let mut agent = Agent {
        config,
        log: dir.path().join("agent.log"),
        outage: dir.path().join("firewall-down"),
        child: None,
    };
    agent.start()?;

    let connection = Arc::new(QueueConnection::parse(&azurite.connection_string())?);
    let queue = Arc::new(connection.queue(QUEUE));
    let poison = connection.queue(&format!("{QUEUE}-poison"));
    while queue.create_if_missing().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The producer: about 70 deliveries a second, retrying through the Azurite stop.
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (queue, sent, done) = (Arc::clone(&queue), Arc::clone(&sent), Arc::clone(&done));
        tokio::spawn(async move {
            for chunk in texts.chunks(7) {
                for text in chunk {
                    while queue.send(text, 2 * 86_400).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    let started = Instant::now();
    for k in 1..=kills {
        tokio::time::sleep(rng.millis(300, 2500)).await;
        agent.kill_and_restart()?;
        if k == kills * 2 / 5 {
            println!(
                "kill {k}: stopping Azurite for 8 s ({} deliveries sent)",
                sent.load(Ordering::Relaxed)
            );
            azurite.down()?;
            tokio::time::sleep(Duration::from_secs(8)).await;
            azurite.up()?;
        }
        if k == kills * 7 / 10 {
            println!("kill {k}: the firewall fails for 15 s");
            std::fs::write(&agent.outage, "down")?;
            let outage = agent.outage.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let _ = std::fs::remove_file(outage);
            });
        }
    }
    println!(
        "{kills} kills in {:.0} s; {} of the deliveries sent so far",
        started.elapsed().as_secs_f64(),
        sent.load(Ordering::Relaxed)
    );
    producer.await?;
    let _ = std::fs::remove_file(&agent.outage);

    // Drain: the queue's count includes messages still invisible after a kill.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let left = queue.approximate_count().await.unwrap_or(-1);
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the queue still holds {left} messages after 15 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "drained {:.0} s after the start; done: {}",
        started.elapsed().as_secs_f64(),
        done.load(Ordering::Relaxed)
    );
    // The last commit's queue deletes follow its state record; give the agent a moment to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let poisoned = poison.approximate_count().await.unwrap_or(0);
    println!("poison queue: {poisoned} messages");
    let fw_ok = diff("firewall set", &firewall_set(&fw)?, &stream.expected);
    let state_ok = diff("agent list", &agent.list()?, &stream.expected);
    let counts = discards(&agent.log)?;
    println!("agent log: {counts:?}");
    if poisoned != 0 || !fw_ok || !state_ok {
        bail!(
            "soak FAILED (agent log kept at {})",
            keep_log(dir, &agent.log)?.display()
        );
    }
    println!("soak: passed");
    Ok(())
}

/// How often the agent logged each discard/poison/stale reason (for the record in BENCHMARKS.md).
fn discards(log: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let text = std::fs::read_to_string(log)?;
    let mut counts = BTreeMap::new();
    for word in [
        "redelivered",
        "duplicate",
        "superseded",
        "replayed",
        "poison",
        "FAILPOINT",
    ] {
        counts.insert(word.to_owned(), text.matches(word).count());
    }
    Ok(counts)
}

fn keep_log(dir: tempfile::TempDir, log: &Path) -> anyhow::Result<PathBuf> {
    let kept = std::env::temp_dir().join(format!("soak-agent-{}.log", std::process::id()));
    std::fs::copy(log, &kept)?;
    drop(dir);
    Ok(kept)
}
