//! The command line: `run`, `status`, `list`, `block`, `unblock`, `check`, `sync`, `audit`.
//!
//! Commands that change the firewall (`block`, `unblock`, `sync`) go to the running daemon through the
//! control socket; when no daemon runs they open the state and the backend themselves, under the same
//! lock. Read-only commands (`list`, `audit`, offline `status`) read the state database directly (WAL
//! allows it while the daemon writes). Exit codes: 0 success, 1 a check or command failed, 2 the
//! configuration or the command line is wrong.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::backends::{self, BackendError};
use crate::config::{Config, DEFAULT_PATH};
use crate::control::{self, ManualResult, Request};
use crate::daemon::{self, StateLock};
use crate::health::Health;
use crate::span::Span;
use crate::status::StatusReport;
use crate::store::{AuditQuery, Store};
use crate::{expire, telemetry};
use queue_message::LogFormat;

/// Portcullis agent: enforces Sentinel-driven block messages from an Azure Storage Queue on this host's
/// firewall.
#[derive(Debug, Parser)]
#[command(name = "portcullis-agent", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, env = "PORTCULLIS_AGENT_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format (overrides `[log] format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: consume the queue, enforce blocks, expire them, reconcile.
    Run,
    /// Queue depth, active blocks, last poll, last commit, last error.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Active blocks with expiry, reason and source.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Block an address or CIDR (through the same state and backend path as queued messages).
    Block {
        /// Address or CIDR, e.g. 203.0.113.7 or 2001:db8::/48.
        target: String,
        /// How long (e.g. 30m, 12h, 7d, PT1H); default `[policy] manual_block_duration`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<Span>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift every claim on an address or CIDR.
    Unblock {
        /// Address or CIDR.
        target: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Validate the configuration and test the queue, the poison queue and the firewall; exits non-zero
    /// with a clear message at the first problem.
    Check,
    /// Reconcile now: re-add what the firewall lost, remove what the state no longer wants.
    Sync,
    /// The audit log.
    Audit {
        /// Only events since a time (RFC 3339) or for a duration back (e.g. 1h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only events about this target.
        #[arg(long)]
        target: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    let daemon = matches!(cli.command, Command::Run);
    telemetry::init(format, &config.log.level, daemon);
    let result = match cli.command {
        Command::Run => daemon::run(config, daemon::shutdown_signal()).await,
        Command::Status { json } => status(&config, json).await,
        Command::List { json } => list(&config, json),
        Command::Block {
            target,
            duration,
            reason,
        } => {
            let d = duration.unwrap_or(config.policy.manual_block_duration);
            block(&config, target, d.get(), reason).await
        }
        Command::Unblock { target, reason } => unblock(&config, target, reason).await,
        Command::Check => return check(&config, &cli.config).await,
        Command::Sync => sync(&config).await,
        Command::Audit {
            since,
            target,
            limit,
            json,
        } => audit(&config, since.as_deref(), target, limit, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ago(t: DateTime<Utc>) -> String {
    let d = Utc::now() - t;
    let span = Span(d.abs().to_std().unwrap_or_default());
    let rounded = Span::secs(span.get().as_secs());
    if d.num_seconds() >= 0 {
        format!("{} ({rounded} ago)", t.format("%Y-%m-%d %H:%M:%S UTC"))
    } else {
        format!("{} (in {rounded})", t.format("%Y-%m-%d %H:%M:%S UTC"))
    }
}

/// A claim key short enough for a table: `sentinel-incident:/subscriptions/…/Incidents/<guid>` becomes
/// `sentinel-incident:…/<guid>`.
fn short_claim(claim: &str) -> String {
    match claim.split_once(':') {
        Some((kind, id)) if id.len() > 40 => {
            let last = id.rsplit('/').find(|s| !s.is_empty()).unwrap_or(id);
            format!("{kind}:…/{last}")
        }
        _ => claim.to_owned(),
    }
}

/// Left-aligned columns two spaces apart, each as wide as its widest cell (in characters); the last column is
/// not padded.
fn table(header: &[&str; 4], rows: &[[String; 4]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn opt(t: Option<DateTime<Utc>>) -> String {
    t.map(ago).unwrap_or_else(|| "never".to_owned())
}

async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let report = match control::request(&config.state.socket, &Request::Status).await {
        Ok(Some(r)) if r.ok => serde_json::from_value(r.result.unwrap_or_default())
            .context("reading the agent's status")?,
        Ok(Some(r)) => bail!("the agent answered: {}", r.error.unwrap_or_default()),
        Ok(None) | Err(_) => {
            let mut report = StatusReport::configured(config);
            if config.state.path.exists() {
                let store = Store::open_read_only(&config.state.path)?;
                report.add_stored(&store, Utc::now())?;
            }
            let (queue, _) = daemon::queues(config)?;
            report.add_queue_depth(&queue).await;
            report
        }
    };
    let unhealthy = !report.problems.is_empty();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&report);
    }
    if unhealthy {
        // Non-zero, so `status` works as a container health check.
        bail!("the agent reports problems: {}", report.problems.join("; "));
    }
    Ok(())
}

fn print_status(report: &StatusReport) {
    println!(
        "agent:          {}",
        if report.running {
            format!("running since {}", opt(report.started_at))
        } else {
            "not running (figures from the state database)".to_owned()
        }
    );
    println!(
        "queue:          {} — {}",
        report.queue,
        match (report.queue_depth, &report.queue_depth_error) {
            (Some(n), _) => format!("about {n} message(s) waiting"),
            (None, Some(e)) => format!("depth unknown: {e}"),
            (None, None) => "depth unknown".to_owned(),
        }
    );
    println!(
        "active blocks:  {} on {}{}",
        report.active_blocks,
        report.backend,
        report
            .next_expiry
            .map(|e| format!(", next expiry {}", ago(e)))
            .unwrap_or_default()
    );
    println!(
        "new blocks:     {} in the last hour (limit {}){}",
        report.new_blocks_last_hour,
        report.max_new_blocks_per_hour,
        report
            .rate_limited_until
            .map(|u| format!(" — RATE LIMITED until about {}", ago(u)))
            .unwrap_or_default()
    );
    if report.running {
        println!("last poll:      {}", opt(report.last_poll));
    }
    println!("last commit:    {}", opt(report.last_commit));
    match &report.last_error {
        Some((at, e)) => println!("last error:     {} — {e}", ago(*at)),
        None => println!("last error:     none"),
    }
    if let Some(l) = &report.logs {
        let unparsed: u64 = l.lines_unparsed.values().sum();
        println!(
            "firewall logs:  {} received, {} parsed, {} not firewall, {unparsed} unparsed, {} rejected senders",
            l.lines_received, l.lines_parsed, l.lines_not_firewall, l.rejected_senders
        );
        println!(
            "log shipping:   {} rows, {} bytes shipped; spool {} batches, {} bytes; dropped {} batches; kernel drops {}",
            l.rows_shipped, l.bytes_shipped, l.spool_batches, l.spool_bytes, l.spool_dropped_batches, l.kernel_drops
        );
    }
    for p in &report.problems {
        println!("PROBLEM:        {p}");
    }
}

fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    if !config.state.path.exists() {
        if json {
            println!("[]");
        } else {
            println!(
                "No blocks (no state database yet at {}).",
                config.state.path.display()
            );
        }
        return Ok(());
    }
    let store = Store::open_read_only(&config.state.path)?;
    let blocks = store.list(Utc::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&blocks)?);
        return Ok(());
    }
    if blocks.is_empty() {
        println!("No active blocks.");
        return Ok(());
    }
    // Column widths from the rows themselves: a long expiry ("in 89d23h59m59s") or claim must not shift the
    // columns after it.
    let mut rows: Vec<[String; 4]> = Vec::new();
    for b in &blocks {
        for (i, c) in b.claims.iter().enumerate() {
            let (target, expires) = if i == 0 {
                (b.target.to_string(), ago(b.expires_at))
            } else {
                (String::new(), String::new())
            };
            let mut why = c.reason.clone();
            if let Some(url) = &c.url {
                why.push_str(&format!(" <{url}>"));
            }
            rows.push([target, expires, short_claim(&c.claim), why]);
        }
        if b.claims.is_empty() {
            rows.push([
                b.target.to_string(),
                ago(b.expires_at),
                String::new(),
                String::new(),
            ]);
        }
    }
    print!(
        "{}",
        table(&["TARGET", "EXPIRES", "SOURCE", "REASON / LINK"], &rows)
    );
    println!("{} active block(s).", blocks.len());
    Ok(())
}

/// Opens the state and the backend in this process when no daemon is running, saying so first: this creates
/// the state database and installs the backend's table or chains on the host when they are missing.
async fn direct(config: &Config) -> anyhow::Result<(StateLock, Arc<crate::apply::Engine>)> {
    eprintln!(
        "note: no agent answers on {}; doing this here: opening {} (created if missing) and setting up the {} \
         firewall objects on this host if they are missing",
        config.state.socket.display(),
        config.state.path.display(),
        config.firewall.backend.kind()
    );
    let lock = StateLock::acquire(&config.state.path).map_err(|e| {
        anyhow!(
            "{e:#}; the agent seems to be running but its control socket {} did not answer",
            config.state.socket.display()
        )
    })?;
    let engine = daemon::engine(config, Arc::new(Health::default())).await?;
    engine
        .init_backend()
        .await
        .context("initialising the firewall backend")?;
    Ok((lock, engine))
}

fn print_manual(result: &ManualResult) {
    match result.expires_at {
        Some(e) => println!("{}: {} until {}", result.target, result.outcome, ago(e)),
        None => println!("{}: {}", result.target, result.outcome),
    }
}

async fn via_daemon(
    config: &Config,
    request: &Request,
) -> anyhow::Result<Option<serde_json::Value>> {
    match control::request(&config.state.socket, request).await {
        Ok(Some(r)) if r.ok => Ok(Some(r.result.unwrap_or_default())),
        Ok(Some(r)) => bail!(
            "{}",
            r.error.unwrap_or_else(|| "the agent refused".to_owned())
        ),
        Ok(None) => Ok(None),
        Err(e) => Err(e)
            .with_context(|| format!("talking to the agent at {}", config.state.socket.display())),
    }
}

async fn block(
    config: &Config,
    target: String,
    duration: Duration,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let request = Request::Block {
        target: target.clone(),
        for_secs: duration.as_secs().max(1),
        reason: reason.clone(),
    };
    if let Some(value) = via_daemon(config, &request).await? {
        print_manual(&serde_json::from_value(value)?);
        return Ok(());
    }
    // A target the configured policy refuses changes nothing on the host (no state, no firewall objects).
    let parsed = queue_message::Target::parse(&target)?;
    if let Err(why) = config.policy.never_block.check(&parsed) {
        bail!("{parsed} is never blocked here: {why}");
    }
    let (_lock, engine) = direct(config).await?;
    let result = control::manual_block(&engine, &target, duration, reason)
        .await
        .map_err(|e| anyhow!(e))?;
    engine.shutdown().await;
    print_manual(&result);
    Ok(())
}

async fn unblock(config: &Config, target: String, reason: Option<String>) -> anyhow::Result<()> {
    let request = Request::Unblock {
        target: target.clone(),
        reason: reason.clone(),
    };
    if let Some(value) = via_daemon(config, &request).await? {
        print_manual(&serde_json::from_value(value)?);
        return Ok(());
    }
    let (_lock, engine) = direct(config).await?;
    let result = control::manual_unblock(&engine, &target, reason)
        .await
        .map_err(|e| anyhow!(e))?;
    engine.shutdown().await;
    print_manual(&result);
    Ok(())
}

async fn sync(config: &Config) -> anyhow::Result<()> {
    let value = match via_daemon(config, &Request::Sync).await? {
        Some(v) => v,
        None => {
            let (_lock, engine) = direct(config).await?;
            let runner =
                backends::exec::Runner::new(config.firewall.backend.netns().map(str::to_owned));
            let r = expire::reconcile_once(
                &engine,
                &runner,
                config.policy.protect_host_addresses,
                config.state.audit_retention.get(),
            )
            .await?;
            engine.shutdown().await;
            serde_json::json!({"readded": r.readded, "removed": r.removed, "refused": r.refused, "active": r.active})
        }
    };
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        bail!("reconcile failed: {e}");
    }
    println!(
        "Reconciled: {} re-added, {} removed, {} lifted by policy; {} active block(s).",
        value["readded"], value["removed"], value["refused"], value["active"]
    );
    Ok(())
}

fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let span = Span::parse(text).map_err(|_| {
        anyhow!("--since `{text}` is neither an RFC 3339 time nor a duration like 1h or 7d")
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(span.get())?)
}

fn audit(
    config: &Config,
    since: Option<&str>,
    target: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    if !config.state.path.exists() {
        println!(
            "No audit log yet ({} does not exist).",
            config.state.path.display()
        );
        return Ok(());
    }
    let store = Store::open_read_only(&config.state.path)?;
    let target = target
        .map(|t| queue_message::Target::parse(&t).map(|t| t.to_string()))
        .transpose()?;
    let events = store.audit(&AuditQuery {
        since: since.map(parse_since).transpose()?,
        target,
        limit,
    })?;
    for e in &events {
        if json {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let mut line = format!("{} {:<10}", e.at.format("%Y-%m-%dT%H:%M:%SZ"), e.event);
        let claim = e.claim.as_deref().map(short_claim);
        for (label, value) in [
            ("", &e.target),
            ("claim=", &claim),
            ("msg=", &e.message_id),
            ("qmsg=", &e.queue_message_id),
        ] {
            if let Some(v) = value {
                line.push_str(&format!(" {label}{v}"));
            }
        }
        if let Some(r) = &e.reason {
            line.push_str(&format!(" — {r}"));
        }
        if let Some(d) = &e.detail {
            line.push_str(&format!(" [{d}]"));
        }
        println!("{line}");
    }
    if !json && events.is_empty() {
        println!("No audit events match.");
    }
    Ok(())
}

/// Checks a queue the agent only adds to (the poison queue, the reports queue) with a message that
/// expires in 1 second; `Err` carries the exit code of a failed check. When the queue is not `required`
/// (the reports queue: enforcement goes on without it, reports wait in the outbox), a problem is a warning.
async fn check_add_only(
    c: &mut Checker,
    what: &str,
    queue: &queue_message::Queue,
    create: bool,
    required: bool,
) -> Result<(), ExitCode> {
    let problem = match tokio::time::timeout(
        Duration::from_secs(30),
        queue.send("portcullis-agent check: write test, expires in 1 second", 1),
    )
    .await
    {
        Ok(Ok(())) => {
            c.ok(what, format!("{} accepts messages", queue.name()));
            return Ok(());
        }
        Ok(Err(queue_message::QueueError::NotFound(name))) if create => {
            c.warn(
                what,
                format!("queue `{name}` does not exist yet; `run` creates it (create_queues = true)"),
            );
            return Ok(());
        }
        Ok(Err(queue_message::QueueError::NotFound(name))) => {
            format!("queue `{name}` does not exist")
        }
        Ok(Err(queue_message::QueueError::Denied(why))) => format!(
            "access denied: the agent needs the Storage Queue Data Message Sender role on it, or a SAS with permission `a` ({why})"
        ),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 30 s".to_owned(),
    };
    if required {
        return Err(fail(what, problem));
    }
    c.warn(
        what,
        format!("{problem}; reports wait in the outbox until it works (or set [reports] enabled = false)"),
    );
    Ok(())
}

struct Checker {
    passed: usize,
    warnings: usize,
}

impl Checker {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        self.passed += 1;
        println!("ok    {what:<16} {}", detail.as_ref());
    }
    fn warn(&mut self, what: &str, detail: impl AsRef<str>) {
        self.warnings += 1;
        println!("warn  {what:<16} {}", detail.as_ref());
    }
}

/// Prints a failed check; its exit code.
fn fail(what: &str, detail: impl AsRef<str>) -> ExitCode {
    println!("FAIL  {what:<16} {}", detail.as_ref());
    ExitCode::from(1)
}

/// `check`: each step prints its line, in the order an operator fixes them; the first failure stops the
/// run (later steps would only fail for the same reason).
async fn check(config: &Config, path: &std::path::Path) -> ExitCode {
    let mut c = Checker {
        passed: 0,
        warnings: 0,
    };
    let steps = async {
        check_config(&mut c, config, path);
        check_state(&mut c, config)?;
        check_queues(&mut c, config).await?;
        check_firewall(&mut c, config).await?;
        check_daemon(&mut c, config).await;
        Ok::<(), ExitCode>(())
    };
    match steps.await {
        Ok(()) => {
            println!(
                "All checks passed ({} ok, {} warning(s)).",
                c.passed, c.warnings
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn check_config(c: &mut Checker, config: &Config, path: &std::path::Path) {
    c.ok(
        "configuration",
        format!(
            "{} (backend {}, queue {}, poison queue {})",
            path.display(),
            config.firewall.backend.kind(),
            config.queue.name,
            config.queue.poison_name
        ),
    );
    let ids: Vec<String> = config
        .queue
        .keys
        .iter()
        .map(|k| k.id().to_owned())
        .collect();
    c.ok(
        "signing key",
        format!("{} key(s): {}", ids.len(), ids.join(", ")),
    );
}

/// The database opens, or its directory is writable (it is created at the first run).
fn check_state(c: &mut Checker, config: &Config) -> Result<(), ExitCode> {
    let path = &config.state.path;
    if path.exists() {
        let store = Store::open_read_only(path).map_err(|e| fail("state", e.to_string()))?;
        let active = store.active_count(Utc::now()).unwrap_or(0);
        c.ok(
            "state",
            format!("{} ({active} active block(s))", path.display()),
        );
        return Ok(());
    }
    // The nearest existing ancestor is where the first run creates the directories and the file.
    let mut probe = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    while !probe.exists() && probe.pop() {}
    tempfile::tempfile_in(&probe)
        .map_err(|e| fail("state", format!("cannot write in {}: {e}", probe.display())))?;
    c.ok(
        "state",
        format!("{} will be created at the first run", path.display()),
    );
    Ok(())
}

/// The queue is reachable and readable without consuming anything (peek needs only read permission); the
/// poison and reports queues accept messages.
async fn check_queues(c: &mut Checker, config: &Config) -> Result<(), ExitCode> {
    let (queue, poison) = daemon::queues(config).map_err(|e| fail("queue", format!("{e:#}")))?;
    if let Ok(connection) = crate::config::connect(&config.queue.connection, None) {
        probe(connection.service_url())
            .await
            .map_err(|why| fail("queue", why))?;
    }
    let create = config.queue.create_queues;
    let problem = match tokio::time::timeout(Duration::from_secs(30), queue.peek(1)).await {
        Ok(Ok(messages)) => {
            c.ok(
                "queue",
                format!(
                    "{} is reachable and readable ({} message(s) visible at the front)",
                    queue.name(),
                    messages.len()
                ),
            );
            None
        }
        Ok(Err(queue_message::QueueError::NotFound(name))) if create => {
            c.warn(
                "queue",
                format!("queue `{name}` does not exist yet; `run` creates it (create_queues = true)"),
            );
            None
        }
        Ok(Err(queue_message::QueueError::NotFound(name))) => Some(format!(
            "queue `{name}` does not exist (deploy the infrastructure or set create_queues = true for development)"
        )),
        Ok(Err(queue_message::QueueError::Denied(why))) => Some(format!(
            "access denied: the agent needs the Storage Queue Data Message Processor role on the queue, or a SAS with permissions `rp` ({why})"
        )),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 30 s (network, DNS or proxy?)".to_owned()),
    };
    if let Some(problem) = problem {
        return Err(fail("queue", problem));
    }
    check_add_only(c, "poison queue", &poison, create, true).await?;
    if config.reports.enabled {
        let reports = crate::config::connect(
            &config.reports.connection,
            config.queue.api_version.as_deref(),
        )
        .map_err(|e| fail("reports queue", format!("{e:#}")))?;
        let reports = std::sync::Arc::new(reports).queue(&config.reports.queue);
        check_add_only(c, "reports queue", &reports, create, false).await?;
    }
    Ok(())
}

/// The backend builds (finds the tools, probes JSON support) and passes a read-only health check.
async fn check_firewall(c: &mut Checker, config: &Config) -> Result<(), ExitCode> {
    let mut backend = backends::build(config.firewall.backend.clone())
        .await
        .map_err(|e| fail("firewall", e.to_string()))?;
    match backend.healthcheck().await {
        Ok(()) => c.ok("firewall", format!("{} is reachable and its objects are in place", backend.name())),
        Err(BackendError::Rejected(why)) => c.warn(
            "firewall",
            format!("{} is reachable; its objects are not set up yet and will be created by `run` ({why})", backend.name()),
        ),
        Err(e) => return Err(fail("firewall", e.to_string())),
    }
    Ok(())
}

/// Whether a daemon answers on the control socket (informational: `check` runs before the first start too).
async fn check_daemon(c: &mut Checker, config: &Config) {
    match control::request(&config.state.socket, &Request::Status).await {
        Ok(Some(_)) => c.ok(
            "daemon",
            format!("running (control socket {})", config.state.socket.display()),
        ),
        _ => c.warn("daemon", "not running"),
    }
}

/// Whether anything accepts TCP connections where the queue service is, so a refused or unresolvable endpoint is
/// reported at once instead of after the SDK's retries and a 30 s timeout. Skipped behind a proxy
/// (`HTTPS_PROXY`/`HTTP_PROXY`), where only the proxy is reached directly.
async fn probe(url: &url::Url) -> Result<(), String> {
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    if proxied {
        return Ok(());
    }
    let addr = format!("{host}:{port}");
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(if queue_message::is_loopback(url) {
                format!("connection refused at {addr} — is Azurite running? (`make tools` installs it, `make demo` starts one)")
            } else {
                format!("connection refused at {addr} — nothing listens there; check the queue endpoint")
            })
        }
        Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e} (DNS or network?)")),
        Err(_) => Err(format!(
            "no TCP answer from {addr} within 5 s (a firewall dropping the traffic, or no route?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // First-hour defect 9: `list` misaligned its columns when the expiry was wider than 34 characters.
    #[test]
    fn list_columns_follow_the_widest_cell() {
        let rows = [
            [
                "198.51.100.7".to_owned(),
                "2026-12-01 08:09:33 UTC (in 89d23h59m59s)".to_owned(),
                "manual".to_owned(),
                "why".to_owned(),
            ],
            [
                "2001:db8::/48".to_owned(),
                "soon".to_owned(),
                "sentinel-alert:abc".to_owned(),
                "because <https://portal.azure.com/x>".to_owned(),
            ],
        ];
        let text = table(&["TARGET", "EXPIRES", "SOURCE", "REASON / LINK"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // Every column starts at the same character offset on every line.
        for needle_per_line in [
            ["EXPIRES", "2026-12-01", "soon"],
            ["SOURCE", "manual", "sentinel-alert:abc"],
            ["REASON", "why", "because"],
        ] {
            let offsets: Vec<usize> = lines
                .iter()
                .zip(needle_per_line)
                .map(|(line, needle)| line.find(needle).unwrap())
                .collect();
            assert!(
                offsets.iter().all(|o| *o == offsets[0]),
                "{needle_per_line:?} at {offsets:?}:\n{text}"
            );
        }
        assert_eq!(
            lines[1].find("manual").unwrap(),
            "2026-12-01 08:09:33 UTC (in 89d23h59m59s)".len() + "2001:db8::/48".len() + 4
        );
    }

    #[test]
    fn long_claims_are_shortened_for_tables() {
        assert_eq!(short_claim("manual"), "manual");
        assert_eq!(short_claim("sentinel-alert:abc"), "sentinel-alert:abc");
        assert_eq!(
            short_claim("sentinel-incident:/subscriptions/0000/resourceGroups/rg/providers/x/Incidents/5d0c3d6e"),
            "sentinel-incident:…/5d0c3d6e"
        );
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["portcullis-agent", "block", "198.51.100.7", "--for", "2h"])
            .unwrap();
        assert!(
            matches!(cli.command, Command::Block { duration: Some(d), .. } if d == Span::secs(7200))
        );
        assert!(
            Cli::try_parse_from(["portcullis-agent", "block", "x", "--for", "2 parsecs"]).is_err()
        );
    }
}
