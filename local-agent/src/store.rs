//! The agent's state: one SQLite database (bundled library, WAL) that is the source of truth.
//!
//! Tables: `claims` (who wants which target blocked until when), `blocks` (the effective block per
//! target: the latest claim's expiry; what the firewall must hold), `audit` (append-only: received,
//! blocked, extended, unblocked, expired, refused, poisoned, …, with who/what/when/why), `seen` (message ids
//! already applied, for replay protection, pruned after the message's own expiry), `deliveries` (failures
//! and rate-limit deferrals per queue message, for the poison decision), `meta` (last commit, last
//! error) and `outbox` (signed reports not yet sent; owned by [`crate::reports::outbox`]).
//!
//! Nothing is cached in memory: 100k blocks cost the agent only SQLite's page cache. Every change that
//! follows a firewall commit is recorded in one transaction ([`Store::record`]), so a crash leaves either
//! all of it or none of it, and redelivery of the queue messages converges on the same state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use queue_message::{Source, Target};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::decide::{effective_expiry, Claim, ClaimMeta, Claims};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    target TEXT NOT NULL,
    claim TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_id TEXT,
    source_url TEXT,
    source_rule TEXT,
    severity TEXT,
    message_id TEXT,
    PRIMARY KEY (target, claim)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    target TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    since INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_expiry ON blocks (expires_at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    target TEXT,
    claim TEXT,
    message_id TEXT,
    queue_message_id TEXT,
    reason TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_event_at ON audit (event, at);
CREATE TABLE IF NOT EXISTS seen (
    message_id TEXT PRIMARY KEY,
    queue_message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    queue_message_id TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    deferrals INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// A state database problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened or created.
    #[error("cannot open the state database {path}: {source}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent.
    #[error("the state database {path} has schema version {found}; this agent understands up to {SCHEMA_VERSION} (upgrade the agent)")]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// A query failed (disk full, corruption, locked for too long).
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored value does not parse (hand-edited database).
    #[error("state database holds an unreadable value: {0}")]
    Corrupt(String),
    /// The blocking thread that runs database calls could not run this one (the runtime is stopping).
    #[error("state database call not run: {0}")]
    Unavailable(String),
}

/// Kinds of audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A verified queue message arrived.
    Received,
    /// A target was newly blocked.
    Blocked,
    /// A block was extended.
    Extended,
    /// A claim came or went without changing the block.
    Claimed,
    /// A block was lifted on request.
    Unblocked,
    /// A block ran out.
    Expired,
    /// A target was refused by the never-block policy.
    Refused,
    /// A message went to the poison queue.
    Poisoned,
    /// A message was deleted without effect (expired, or redelivered after it was applied).
    Discarded,
    /// A message's new blocks were held back by the rate limit.
    Deferred,
    /// Reconcile repaired drift between the state and the firewall.
    Reconciled,
    /// A commit failed; the messages stay queued.
    Failed,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Blocked => "blocked",
            Self::Extended => "extended",
            Self::Claimed => "claimed",
            Self::Unblocked => "unblocked",
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Poisoned => "poisoned",
            Self::Discarded => "discarded",
            Self::Deferred => "deferred",
            Self::Reconciled => "reconciled",
            Self::Failed => "failed",
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub event: String,
    /// Which target, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Which claim (source), if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The Portcullis message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The queue service's message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_message_id: Option<String>,
    /// Why (the message's reason, the refusal, the error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// More: the source link, counts, the expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` now, with everything else empty.
    pub fn new(kind: EventKind, at: DateTime<Utc>) -> Self {
        Self {
            at,
            event: kind.as_str().to_owned(),
            target: None,
            claim: None,
            message_id: None,
            queue_message_id: None,
            reason: None,
            detail: None,
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: &Target) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// Sets the claim key.
    pub fn claim(mut self, claim: impl Into<String>) -> Self {
        self.claim = Some(claim.into());
        self
    }

    /// Sets the Portcullis message id.
    pub fn message(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the queue message id.
    pub fn queue_message(mut self, id: impl Into<String>) -> Self {
        self.queue_message_id = Some(id.into());
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A per-target audit event, formatted into a row only when it is written: a 10k-IP alert makes 10k of
/// them, and they share the message's claim key and metadata instead of copying them.
#[derive(Debug, Clone)]
pub struct TargetEvent {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// To which target.
    pub target: Target,
    /// The claim involved.
    pub claim: Option<Arc<str>>,
    /// Who and why.
    pub meta: Option<Arc<ClaimMeta>>,
    /// The block's expiry afterwards.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A message id to remember as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The Portcullis message id.
    pub message_id: String,
    /// The queue service's id of the delivery that applied it.
    pub queue_message_id: String,
    /// After this the id can be forgotten (the message itself is no longer valid).
    pub expires_at: DateTime<Utc>,
}

/// The last error of a message the agent was applying on its own when it stopped.
pub const SOLO_ATTEMPT: &str = "the agent stopped while applying this message on its own";

/// Failures and deferrals of one queue message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Commits that failed with this message in the batch.
    pub failures: u32,
    /// Deliveries that do not count against it: its new blocks were held back by the rate limit, or the
    /// firewall or the agent itself was failing.
    pub deferrals: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Everything recorded after one successful firewall commit, in one transaction.
#[derive(Debug, Default)]
pub struct Record {
    /// When it happened (from the engine's clock; the store reads no clock of its own). Stamps new blocks
    /// and seen ids; the default (the epoch) is only right for records that hold neither.
    pub at: DateTime<Utc>,
    /// New claims of every touched target (no claims = no block).
    pub claims: BTreeMap<Target, Claims>,
    /// Audit events.
    pub events: Vec<AuditEvent>,
    /// Per-target audit events.
    pub target_events: Vec<TargetEvent>,
    /// Message ids now applied.
    pub seen: Vec<Seen>,
    /// Queue messages finished (their delivery bookkeeping is dropped).
    pub delivered: Vec<String>,
    /// Meta values to set.
    pub meta: Vec<(&'static str, String)>,
}

/// One active block with its claims, for `list`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockView {
    /// The target.
    pub target: String,
    /// Effective expiry.
    pub expires_at: DateTime<Utc>,
    /// Blocked since.
    pub since: DateTime<Utc>,
    /// The live claims.
    pub claims: Vec<ClaimView>,
}

/// One claim, for `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimView {
    /// Claim key (source kind and id).
    pub claim: String,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Source kind.
    pub source: String,
    /// Incident/alert link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Rule name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// Filters for [`Store::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events about this target.
    pub target: Option<String>,
    /// At most this many (the newest), default all.
    pub limit: Option<usize>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Seen message ids past their expiry.
    pub seen: usize,
    /// Audit events older than the retention.
    pub audit: usize,
    /// Lapsed claims and blocks already expired.
    pub claims: usize,
    /// Stale delivery bookkeeping.
    pub deliveries: usize,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse_target(text: &str) -> Result<Target, StoreError> {
    Target::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed, with its directory) the database for reading and writing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                    path: path.to_owned(),
                    source: rusqlite::Error::InvalidPath(PathBuf::from(format!(
                        "{}: {e}",
                        dir.display()
                    ))),
                })?;
                restrict(dir, 0o700);
            }
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        restrict(path, 0o600);
        let store = Self {
            conn,
            path: path.to_owned(),
        };
        store.setup(true)?;
        Ok(store)
    }

    /// Opens an existing database read-only (for `list`, `status`, `audit` next to a running agent).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let store = Self {
            conn,
            path: path.to_owned(),
        };
        store.setup(false)?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for modules that own their own table (the reports [`outbox`](crate::reports::outbox)).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn setup(&self, write: bool) -> Result<(), StoreError> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        // A small page cache: the agent must stay small with 100k blocks (P6).
        self.conn.pragma_update(None, "cache_size", -2000)?;
        if !write {
            return self.check_version();
        }
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.check_version()?;
        self.conn.execute_batch(SCHEMA)?;
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT (key) DO NOTHING",
            [SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let has_meta: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(());
        }
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let found = found.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        Ok(())
    }

    /// The claims of `targets` (only those that have any).
    pub fn claims_for<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a Target>,
    ) -> Result<HashMap<Target, Claims>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT claim, expires_at, created_at, reason, source_kind, source_id, source_url, source_rule, \
             severity, message_id FROM claims WHERE target = ?1",
        )?;
        let mut out = HashMap::new();
        for target in targets {
            let key = target.to_string();
            let mut rows = stmt.query([&key])?;
            let mut claims = Claims::new();
            while let Some(row) = rows.next()? {
                let key: String = row.get(0)?;
                claims.insert(
                    Arc::from(key),
                    Claim {
                        expires_at: from_ms(row.get(1)?),
                        created_at: from_ms(row.get(2)?),
                        meta: Arc::new(ClaimMeta {
                            reason: row.get(3)?,
                            source: Source {
                                kind: row.get(4)?,
                                id: row.get(5)?,
                                url: row.get(6)?,
                                rule: row.get(7)?,
                                severity: row.get(8)?,
                            },
                            message_id: row.get(9)?,
                        }),
                    },
                );
            }
            if !claims.is_empty() {
                out.insert(*target, claims);
            }
        }
        Ok(out)
    }

    /// Every block still in force at `now`, with its expiry.
    pub fn active_blocks(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Target, DateTime<Utc>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT target, expires_at FROM blocks WHERE expires_at > ?1")?;
        let mut rows = stmt.query([ms(now)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            out.push((parse_target(&text)?, from_ms(row.get(1)?)));
        }
        Ok(out)
    }

    /// Number of blocks in force at `now`.
    pub fn active_count(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM blocks WHERE expires_at > ?1",
            [ms(now)],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The earliest block expiry, if any block exists.
    pub fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let v: Option<i64> =
            self.conn
                .query_row("SELECT min(expires_at) FROM blocks", [], |r| r.get(0))?;
        Ok(v.map(from_ms))
    }

    /// Blocks whose expiry is at or before `now`.
    pub fn expired_blocks(&self, now: DateTime<Utc>) -> Result<Vec<Target>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT target FROM blocks WHERE expires_at <= ?1")?;
        let mut rows = stmt.query([ms(now)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            out.push(parse_target(&text)?);
        }
        Ok(out)
    }

    /// Active blocks with their live claims, soonest expiry first.
    pub fn list(&self, now: DateTime<Utc>) -> Result<Vec<BlockView>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT b.target, b.expires_at, b.since, c.claim, c.expires_at, c.reason, c.source_kind, \
             c.source_url, c.source_rule, c.severity \
             FROM blocks b LEFT JOIN claims c ON c.target = b.target AND c.expires_at > ?1 \
             WHERE b.expires_at > ?1 ORDER BY b.expires_at, b.target, c.claim",
        )?;
        let mut rows = stmt.query([ms(now)])?;
        let mut out: Vec<BlockView> = Vec::new();
        while let Some(row) = rows.next()? {
            let target: String = row.get(0)?;
            if out.last().map(|b| b.target != target).unwrap_or(true) {
                out.push(BlockView {
                    target: target.clone(),
                    expires_at: from_ms(row.get(1)?),
                    since: from_ms(row.get(2)?),
                    claims: Vec::new(),
                });
            }
            let claim: Option<String> = row.get(3)?;
            if let (Some(claim), Some(view)) = (claim, out.last_mut()) {
                view.claims.push(ClaimView {
                    claim,
                    expires_at: from_ms(row.get(4)?),
                    reason: row.get(5)?,
                    source: row.get(6)?,
                    url: row.get(7)?,
                    rule: row.get(8)?,
                    severity: row.get(9)?,
                });
            }
        }
        Ok(out)
    }

    /// New blocks made since `since`, and when the oldest of them was made (for the hourly rate limit).
    pub fn new_blocks_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let (n, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT count(*), min(at) FROM audit WHERE event = 'blocked' AND at >= ?1",
            [ms(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((u64::try_from(n).unwrap_or(0), oldest.map(from_ms)))
    }

    /// If `message_id` was applied before: the queue message id of the delivery that applied it.
    pub fn seen(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT queue_message_id FROM seen WHERE message_id = ?1")?
            .query_row([message_id], |r| r.get(0))
            .optional()?)
    }

    /// Failures and deferrals recorded for a queue message.
    pub fn delivery(&self, queue_message_id: &str) -> Result<Delivery, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT failures, deferrals, last_error FROM deliveries WHERE queue_message_id = ?1",
            )?
            .query_row([queue_message_id], |r| {
                Ok(Delivery {
                    failures: r.get(0)?,
                    deferrals: r.get(1)?,
                    last_error: r.get(2)?,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    /// Counts a failed attempt for each queue message.
    pub fn note_failures(
        &mut self,
        queue_message_ids: &[String],
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.note_deliveries(queue_message_ids, 1, 0, Some(error), now)
    }

    /// Counts a rate-limit deferral for each queue message (not a failure).
    pub fn note_deferrals(
        &mut self,
        queue_message_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.note_deliveries(queue_message_ids, 0, 1, None, now)
    }

    /// Records a delivery that failed through no fault of the message (firewall unreachable or failing
    /// its healthcheck, agent's own trouble): counted like a deferral, so it does not bring the message
    /// closer to the poison queue, with `error` kept as the last error.
    pub fn note_excused(
        &mut self,
        queue_message_ids: &[String],
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.note_deliveries(queue_message_ids, 0, 1, Some(error), now)
    }

    /// Adds `failures` and `deferrals` to each queue message's delivery record in one transaction; a
    /// `None` error keeps the last error already recorded.
    fn note_deliveries(
        &mut self,
        queue_message_ids: &[String],
        failures: i64,
        deferrals: i64,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO deliveries (queue_message_id, failures, deferrals, last_error, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (queue_message_id) DO UPDATE SET \
                 failures = failures + excluded.failures, deferrals = deferrals + excluded.deferrals, \
                 last_error = COALESCE(excluded.last_error, last_error), updated_at = excluded.updated_at",
            )?;
            for id in queue_message_ids {
                stmt.execute(params![id, failures, deferrals, error, ms(now)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks a queue message as being applied on its own, after it exceeded its deliveries: if the agent
    /// stops before the outcome is recorded, the next delivery finds [`SOLO_ATTEMPT`] as its last error and
    /// knows this message (not a batch neighbour) stopped it.
    pub fn note_solo_attempt(
        &mut self,
        queue_message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO deliveries (queue_message_id, failures, deferrals, last_error, updated_at) \
                 VALUES (?1, 0, 0, ?2, ?3) ON CONFLICT (queue_message_id) DO UPDATE SET \
                 last_error = excluded.last_error, updated_at = excluded.updated_at",
            )?
            .execute(params![queue_message_id, SOLO_ATTEMPT, ms(now)])?;
        Ok(())
    }

    /// Appends audit events on their own (events that need no other change; each carries its time).
    pub fn append_audit(&mut self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.record(&Record {
            events,
            ..Record::default()
        })
    }

    /// Records the outcome of a commit in one transaction: claims and blocks of the touched targets,
    /// audit events, seen ids, finished deliveries, meta values.
    // Long on purpose: every statement runs inside the one transaction that makes a commit's record
    // all-or-nothing; each block is one table (claims and blocks, audit, seen, deliveries, meta).
    pub fn record(&mut self, record: &Record) -> Result<(), StoreError> {
        let now = record.at;
        let tx = self.conn.transaction()?;
        {
            if !record.claims.is_empty() {
                let claims = &record.claims;
                let mut delete_claims =
                    tx.prepare_cached("DELETE FROM claims WHERE target = ?1")?;
                let mut insert_claim = tx.prepare_cached(
                    "INSERT INTO claims (target, claim, expires_at, created_at, reason, source_kind, source_id, \
                     source_url, source_rule, severity, message_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                let mut upsert_block = tx.prepare_cached(
                    "INSERT INTO blocks (target, expires_at, since) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (target) DO UPDATE SET expires_at = excluded.expires_at",
                )?;
                let mut delete_block = tx.prepare_cached("DELETE FROM blocks WHERE target = ?1")?;
                for (target, target_claims) in claims {
                    let key = target.to_string();
                    delete_claims.execute([&key])?;
                    for (claim_key, claim) in target_claims.iter() {
                        let s = &claim.meta.source;
                        insert_claim.execute(params![
                            key,
                            &**claim_key,
                            ms(claim.expires_at),
                            ms(claim.created_at),
                            claim.meta.reason,
                            s.kind,
                            s.id,
                            s.url,
                            s.rule,
                            s.severity,
                            claim.meta.message_id,
                        ])?;
                    }
                    match effective_expiry(target_claims, now) {
                        Some(expires_at) => {
                            upsert_block.execute(params![key, ms(expires_at), ms(now)])?;
                        }
                        None => {
                            delete_block.execute([&key])?;
                        }
                    }
                }
            }
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO audit (at, event, target, claim, message_id, queue_message_id, reason, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in &record.events {
                insert_event.execute(params![
                    ms(e.at),
                    e.event,
                    e.target,
                    e.claim,
                    e.message_id,
                    e.queue_message_id,
                    e.reason,
                    e.detail
                ])?;
            }
            for e in &record.target_events {
                let meta = e.meta.as_deref();
                let until = e.expires_at.map(|t| format!("until {}", t.to_rfc3339()));
                let url = meta.and_then(|m| m.source.url.as_deref());
                let detail = match (until, url) {
                    (Some(u), Some(l)) => Some(format!("{u}; {l}")),
                    (Some(u), None) => Some(u),
                    (None, Some(l)) => Some(l.to_owned()),
                    (None, None) => None,
                };
                insert_event.execute(params![
                    ms(e.at),
                    e.kind.as_str(),
                    e.target.to_string(),
                    e.claim.as_deref(),
                    meta.and_then(|m| m.message_id.as_deref()),
                    Option::<&str>::None,
                    meta.map(|m| m.reason.as_str()),
                    detail
                ])?;
            }
            let mut insert_seen = tx.prepare_cached(
                "INSERT INTO seen (message_id, queue_message_id, expires_at, seen_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (message_id) DO NOTHING",
            )?;
            for s in &record.seen {
                insert_seen.execute(params![
                    s.message_id,
                    s.queue_message_id,
                    ms(s.expires_at),
                    ms(now)
                ])?;
            }
            let mut delete_delivery =
                tx.prepare_cached("DELETE FROM deliveries WHERE queue_message_id = ?1")?;
            for id in &record.delivered {
                delete_delivery.execute([id])?;
            }
            let mut set_meta = tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?;
            for (key, value) in &record.meta {
                set_meta.execute(params![key, value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&mut self, key: &'static str, value: String) -> Result<(), StoreError> {
        self.record(&Record {
            meta: vec![(key, value)],
            ..Record::default()
        })
    }

    /// How many audit events of kind `event` were recorded after `since` (the heartbeat's "poisoned since
    /// the last heartbeat", read from the durable audit log so a restart does not reset it).
    pub fn count_events_since(
        &self,
        event: EventKind,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit WHERE event = ?1 AND at > ?2",
            params![event.as_str(), ms(since)],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Audit events, oldest first.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = query
            .limit
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
            .unwrap_or(-1);
        let mut stmt = self.conn.prepare(
            "SELECT at, event, target, claim, message_id, queue_message_id, reason, detail FROM ( \
               SELECT id, at, event, target, claim, message_id, queue_message_id, reason, detail FROM audit \
               WHERE at >= ?1 AND (?2 IS NULL OR target = ?2) ORDER BY id DESC LIMIT ?3 \
             ) ORDER BY id",
        )?;
        let since = query.since.map(ms).unwrap_or(i64::MIN);
        let mut rows = stmt.query(params![since, query.target, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(AuditEvent {
                at: from_ms(r.get(0)?),
                event: r.get(1)?,
                target: r.get(2)?,
                claim: r.get(3)?,
                message_id: r.get(4)?,
                queue_message_id: r.get(5)?,
                reason: r.get(6)?,
                detail: r.get(7)?,
            });
        }
        Ok(out)
    }

    /// Removes what is no longer needed: seen ids past their message's expiry, audit events before
    /// `audit_before`, lapsed claims, deliveries untouched for a week.
    pub fn prune(
        &mut self,
        now: DateTime<Utc>,
        audit_before: DateTime<Utc>,
    ) -> Result<Pruned, StoreError> {
        let tx = self.conn.transaction()?;
        let pruned = Pruned {
            seen: tx.execute("DELETE FROM seen WHERE expires_at <= ?1", [ms(now)])?,
            audit: tx.execute("DELETE FROM audit WHERE at < ?1", [ms(audit_before)])?,
            // Lapsed claims of targets still blocked by another claim; blocks go through expiry.
            claims: tx.execute(
                "DELETE FROM claims WHERE expires_at <= ?1 AND target IN (SELECT target FROM blocks WHERE expires_at > ?1)",
                [ms(now)],
            )?,
            deliveries: tx.execute(
                "DELETE FROM deliveries WHERE updated_at < ?1",
                [ms(now - chrono::Duration::days(7))],
            )?,
        };
        tx.commit()?;
        Ok(pruned)
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) {}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn claims(key: &str, expires_at: DateTime<Utc>) -> Claims {
        let mut c = Claims::new();
        c.insert(
            Arc::from(key),
            Claim {
                expires_at,
                created_at: Utc::now(),
                meta: Arc::new(ClaimMeta {
                    reason: "TI match".to_owned(),
                    source: Source {
                        kind: "sentinel-incident".to_owned(),
                        id: Some("/incidents/1".to_owned()),
                        url: Some("https://portal/incident/1".to_owned()),
                        rule: None,
                        severity: Some("High".to_owned()),
                    },
                    message_id: Some("m1".to_owned()),
                }),
            },
        );
        c
    }

    #[test]
    fn records_claims_blocks_audit_and_seen_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("sub/state.db")).unwrap();
        let now = Utc::now();
        let later = now + Duration::hours(1);
        let mut touched = BTreeMap::new();
        touched.insert(
            t("198.51.100.7"),
            claims("sentinel-incident:/incidents/1", later),
        );
        touched.insert(t("198.51.100.8"), Claims::new());
        s.record(&Record {
            claims: touched.clone(),
            at: now,
            events: vec![AuditEvent::new(EventKind::Received, now).message("m1")],
            target_events: vec![TargetEvent {
                kind: EventKind::Blocked,
                at: now,
                target: t("198.51.100.7"),
                claim: Some(Arc::from("sentinel-incident:/incidents/1")),
                meta: Some(Arc::new(ClaimMeta {
                    reason: "TI match".to_owned(),
                    source: Source {
                        kind: "sentinel-incident".to_owned(),
                        url: Some("https://portal/incident/1".to_owned()),
                        ..Source::default()
                    },
                    message_id: Some("m1".to_owned()),
                })),
                expires_at: Some(later),
            }],
            seen: vec![Seen {
                message_id: "m1".to_owned(),
                queue_message_id: "q1".to_owned(),
                expires_at: later,
            }],
            delivered: vec![],
            meta: vec![("last_commit_at", now.to_rfc3339())],
        })
        .unwrap();
        assert_eq!(s.active_count(now).unwrap(), 1);
        assert_eq!(
            s.next_expiry().unwrap().map(|e| e.timestamp_millis()),
            Some(later.timestamp_millis())
        );
        assert_eq!(s.seen("m1").unwrap().as_deref(), Some("q1"));
        assert_eq!(s.seen("m2").unwrap(), None);
        let listed = s.list(now).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].claims[0].url.as_deref(),
            Some("https://portal/incident/1")
        );
        let back = s
            .claims_for([&t("198.51.100.7"), &t("198.51.100.9")])
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[&t("198.51.100.7")]["sentinel-incident:/incidents/1"]
                .meta
                .source
                .severity
                .as_deref(),
            Some("High")
        );
        assert_eq!(s.new_blocks_since(now - Duration::hours(1)).unwrap().0, 1);
        let blocked = s.audit(&AuditQuery::default()).unwrap();
        let blocked = blocked.iter().find(|e| e.event == "blocked").unwrap();
        assert_eq!(blocked.target.as_deref(), Some("198.51.100.7"));
        assert_eq!(blocked.message_id.as_deref(), Some("m1"));
        assert_eq!(blocked.reason.as_deref(), Some("TI match"));
        let detail = blocked.detail.as_deref().unwrap();
        assert!(
            detail.starts_with("until ") && detail.ends_with("; https://portal/incident/1"),
            "{detail}"
        );
        assert!(s.expired_blocks(now).unwrap().is_empty());
        assert_eq!(
            s.expired_blocks(later + Duration::seconds(1)).unwrap(),
            [t("198.51.100.7")]
        );

        // Releasing every claim removes the block.
        let mut touched = BTreeMap::new();
        touched.insert(t("198.51.100.7"), Claims::new());
        s.record(&Record {
            claims: touched.clone(),
            at: now,
            ..Record::default()
        })
        .unwrap();
        assert_eq!(s.active_count(now).unwrap(), 0);
        assert_eq!(s.meta("last_commit_at").unwrap(), Some(now.to_rfc3339()));
    }

    #[test]
    fn deliveries_count_failures_and_deferrals_separately() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("state.db")).unwrap();
        let now = Utc::now();
        let ids = vec!["q1".to_owned()];
        s.note_failures(&ids, "boom", now).unwrap();
        s.note_failures(&ids, "boom again", now).unwrap();
        s.note_deferrals(&ids, now).unwrap();
        assert_eq!(
            s.delivery("q1").unwrap(),
            Delivery {
                failures: 2,
                deferrals: 1,
                last_error: Some("boom again".to_owned())
            }
        );
        s.record(&Record {
            delivered: ids,
            ..Record::default()
        })
        .unwrap();
        assert_eq!(s.delivery("q1").unwrap(), Delivery::default());
    }

    #[test]
    fn excused_deliveries_do_not_count_and_a_solo_attempt_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("state.db")).unwrap();
        let now = Utc::now();
        let ids = vec!["q1".to_owned()];
        s.note_excused(&ids, "firewall unreachable", now).unwrap();
        s.note_excused(&ids, "firewall unreachable", now).unwrap();
        assert_eq!(
            s.delivery("q1").unwrap(),
            Delivery {
                failures: 0,
                deferrals: 2,
                last_error: Some("firewall unreachable".to_owned())
            }
        );
        s.note_solo_attempt("q1", now).unwrap();
        let d = s.delivery("q1").unwrap();
        assert_eq!((d.failures, d.deferrals), (0, 2), "marking is not counting");
        assert_eq!(d.last_error.as_deref(), Some(SOLO_ATTEMPT));
    }

    #[test]
    fn audit_filters_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut s = Store::open(&path).unwrap();
        let now = Utc::now();
        let old = now - Duration::days(400);
        s.append_audit(vec![
            AuditEvent::new(EventKind::Refused, old).target(&t("10.0.0.1")),
            AuditEvent::new(EventKind::Blocked, now).target(&t("198.51.100.7")),
            AuditEvent::new(EventKind::Expired, now).target(&t("198.51.100.7")),
        ])
        .unwrap();
        assert_eq!(s.audit(&AuditQuery::default()).unwrap().len(), 3);
        let q = AuditQuery {
            since: Some(now - Duration::days(1)),
            target: Some("198.51.100.7".to_owned()),
            limit: Some(1),
        };
        let events = s.audit(&q).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "expired");
        s.record(&Record {
            at: now,
            seen: vec![Seen {
                message_id: "m".to_owned(),
                queue_message_id: "q".to_owned(),
                expires_at: now - Duration::seconds(1),
            }],
            ..Record::default()
        })
        .unwrap();
        let pruned = s.prune(now, now - Duration::days(365)).unwrap();
        assert_eq!((pruned.seen, pruned.audit), (1, 1));

        // A second, read-only handle sees the same data.
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(ro.audit(&AuditQuery::default()).unwrap().len(), 2);
    }
}
