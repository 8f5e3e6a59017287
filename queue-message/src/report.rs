//! Reports: what the agent tells Azure back (commits, heartbeats, firewall log batches), signed and packed.
//!
//! The return path of Portcullis carries one kind of queue message, the report, from every site to one
//! reports queue (schema in `schema/report.v1.json`). A report is signed exactly like a block message (same
//! key, same `kid`, HMAC-SHA256 over canonical bytes: the object without `sig`, fields in the order of
//! `Unsigned`, serialised compactly by `serde_json`; see [`crate::message`]) and, like a block message, never
//! exceeds [`MAX_MESSAGE_BYTES`] once XML-escaped: [`Report::pack_commit`] and [`Report::pack_logs`] split
//! large commits and log batches into as few messages as fit.
//!
//! A report cannot be mistaken for a block message or the other way round: each decoder refuses unknown
//! fields, and the two share no set of required fields (`action` versus `site` and `body`).
//!
//! Log batches travel compressed: their rows are a JSON array (the columns of `PortcullisFirewall_CL`,
//! spelled as the table spells them) gzipped and base64-encoded into `body.logs.data`. The signature covers
//! the compressed text, so the verifier never needs to recompress; the decoder bounds the inflated size.

use std::io::{Read as _, Write as _};
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::{
    find_key, parse_signed_json, parse_timestamp, timestamp, xml_escaped_len, DecodeError,
    SigningKey, Source, MAX_MESSAGE_BYTES, SCHEMA_VERSION,
};
use crate::target::Target;

/// Largest inflated log batch the decoder accepts (and the packer produces), in bytes of JSON. It keeps a
/// forged or broken `data` field from inflating without bound, and is under the 1 MB of one Logs
/// Ingestion call, so one batch never needs more than one call.
pub const MAX_LOG_BATCH_JSON_BYTES: usize = 1000 * 1000;

/// At most this many destination addresses are kept in a firewall row's `DstSample`.
pub const MAX_DST_SAMPLE: usize = 16;

/// One report: who sent it, when, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Unique id of this report message (the handler derives the incident comment id from it).
    pub id: Uuid,
    /// The site (agent) that sent it; by default the name of its block queue.
    pub site: String,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// When the agent wrote the report.
    pub created_at: DateTime<Utc>,
    /// What the report says.
    pub body: ReportBody,
}

/// The three kinds of report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportBody {
    /// What one commit changed, refused, poisoned or discarded (possibly one part of several).
    Commit(CommitReport),
    /// The agent is alive, and how it is doing.
    Heartbeat(Heartbeat),
    /// Firewall log rows (issue 11), for `PortcullisFirewall_CL`.
    Logs(LogBatch),
}

/// What happened to targets (or messages) in one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new block was committed to the firewall.
    Block,
    /// An existing block got a later expiry (a new or renewed claim).
    Extend,
    /// A claim was lifted and no other claim holds the target: the block is gone.
    Unblock,
    /// A block reached its expiry and was removed.
    Expire,
    /// The agent refused the target. When its never-block policy refused (the policy doing its job, not
    /// a failure), `reason` starts with `policy:` (`policy: special-purpose range 10.0.0.0/8`); any
    /// other reason (a backend limit, an unsupported address family) is an enforcement failure and
    /// raises the "enforcement failing" alert.
    Refused,
    /// A message was moved to the poison queue (`message_id`, `reason`).
    Poisoned,
    /// A message was dropped without effect (expired, replayed, superseded; `reason` says which).
    Discarded,
}

impl EventKind {
    /// The name used on the wire and in the `Event` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Extend => "extend",
            Self::Unblock => "unblock",
            Self::Expire => "expire",
            Self::Refused => "refused",
            Self::Poisoned => "poisoned",
            Self::Discarded => "discarded",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of a commit: the same thing happening to a list of targets for the same claim.
///
/// Grouping targets keeps a 10k-address commit to a few messages: the claim, expiry and reason are written
/// once per group, not once per address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitEvent {
    /// What happened.
    pub event: EventKind,
    /// The targets it happened to (canonical; empty for `poisoned`/`discarded` of an unreadable message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Until when the targets stay blocked (`block`, `extend`), or when the lifted claim would have ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "canonical_time_opt"
    )]
    pub expires_at: Option<DateTime<Utc>>,
    /// The claim the event belongs to: source kind, incident ARM id or alert id, rule, link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Why (the block message's reason, the policy rule that refused, why a message was poisoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The block message this event came from (its `id`, or the queue message id when unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// How many targets one (event, claim) pair had in the whole commit, carried by part 1 so the handler can
/// summarise a commit split over several messages in one incident comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTotal {
    /// What happened.
    pub event: EventKind,
    /// The source kind of the claim (`sentinel-incident`, ...), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<String>,
    /// The incident ARM id or alert id of the claim, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Targets (or messages, for `poisoned`/`discarded` without targets) in the whole commit.
    pub count: u64,
}

/// What one commit changed. A commit too large for one message is sent as `parts` reports sharing a
/// `commit_id`, numbered from 1; part 1 carries `totals` over the whole commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitReport {
    /// Shared by every part of one commit.
    pub commit_id: Uuid,
    /// This part's number, 1-based.
    pub part: u32,
    /// How many parts the commit was split into.
    pub parts: u32,
    /// When the commit reached the firewall (or failed to).
    #[serde(with = "canonical_time")]
    pub committed_at: DateTime<Utc>,
    /// Per (event, claim) counts over all parts; only in part 1, empty elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub totals: Vec<EventTotal>,
    /// This part's events.
    pub events: Vec<CommitEvent>,
}

/// The agent's periodic sign of life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The firewall backend (`nftables`, `ipset`, `unifi`, ...).
    pub backend: String,
    /// Whether enforcement works (backend reachable, commits succeeding, queue readable).
    pub healthy: bool,
    /// Why not, one line per problem; empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Targets blocked right now.
    pub active_blocks: u64,
    /// When the last commit succeeded, if ever.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "canonical_time_opt"
    )]
    pub last_commit_at: Option<DateTime<Utc>>,
    /// Reports waiting in the agent's outbox (this heartbeat not counted).
    pub outbox_depth: u64,
    /// Messages moved to the poison queue since the previous heartbeat.
    pub poisoned_since_last: u64,
}

/// What a firewall did with the traffic a log row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallAction {
    /// Silently dropped.
    Drop,
    /// Refused with a reset or ICMP error.
    Reject,
    /// Let through.
    Accept,
}

/// One row of `PortcullisFirewall_CL`: a firewall log event, or a summary of many with the same
/// (device, action, rule, protocol, source, destination port). Field names are the table's column names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct FirewallRow {
    /// Time of the row (the last event it summarises).
    pub time_generated: DateTime<Utc>,
    /// Site (agent) that received the log.
    pub site: String,
    /// The device that logged (syslog host name or sender address).
    pub device: String,
    /// The log format it was parsed from (`unifi`, `unifi-cef`, `filterlog`, `mikrotik`, `netfilter`, ...).
    pub format: String,
    /// What the firewall did; absent only for a raw row the agent could not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<FirewallAction>,
    /// The firewall rule or log prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The inbound interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The protocol (`tcp`, `udp`, `icmp`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    /// Source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Destination address (of a summary row: the first seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// Events this row stands for (1 without summarising).
    pub count: u64,
    /// First event in the row.
    pub first_seen: DateTime<Utc>,
    /// Last event in the row.
    pub last_seen: DateTime<Utc>,
    /// Up to [`MAX_DST_SAMPLE`] distinct destination addresses seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_sample: Vec<IpAddr>,
    /// The raw line, only for a firewall-looking line that did not parse (`ship_unparsed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Firewall log rows, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    /// The rows.
    pub rows: Vec<FirewallRow>,
}

/// `body.logs` on the wire: the rows as gzipped JSON, base64.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLogs {
    /// Always `gzip`: named so a later encoding is a new value, not a silent misread.
    encoding: String,
    /// Row count, checked against the inflated array.
    rows: u64,
    /// base64(gzip(JSON array of rows)).
    data: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum WireBody {
    Commit(CommitReport),
    Heartbeat(Heartbeat),
    Logs(WireLogs),
}

/// Fields in signing order; serialised without `sig` to get the canonical bytes.
#[derive(Serialize)]
struct Unsigned<'a> {
    v: u32,
    id: &'a Uuid,
    site: &'a str,
    agent_version: &'a str,
    created_at: &'a str,
    body: &'a WireBody,
    kid: &'a str,
}

/// The whole wire object.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    id: Uuid,
    site: String,
    agent_version: String,
    created_at: String,
    body: WireBody,
    kid: String,
    sig: String,
}

const GZIP: &str = "gzip";

impl LogBatch {
    fn to_wire(&self) -> WireLogs {
        let json = serde_json::to_vec(&self.rows).expect("rows always serialise");
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(&json)
            .and_then(|()| encoder.flush())
            .expect("writing to a Vec cannot fail");
        let gz = encoder.finish().expect("writing to a Vec cannot fail");
        WireLogs {
            encoding: GZIP.to_owned(),
            rows: self.rows.len() as u64,
            data: BASE64.encode(gz),
        }
    }

    fn from_wire(wire: &WireLogs) -> Result<Self, DecodeError> {
        if wire.encoding != GZIP {
            return Err(DecodeError::Malformed(format!(
                "unknown log batch encoding `{}`",
                wire.encoding
            )));
        }
        let gz = BASE64
            .decode(&wire.data)
            .map_err(|_| DecodeError::Malformed("log batch data is not base64".to_owned()))?;
        let mut json = Vec::new();
        GzDecoder::new(gz.as_slice())
            .take(MAX_LOG_BATCH_JSON_BYTES as u64 + 1)
            .read_to_end(&mut json)
            .map_err(|e| DecodeError::Malformed(format!("log batch data is not gzip: {e}")))?;
        if json.len() > MAX_LOG_BATCH_JSON_BYTES {
            return Err(DecodeError::Malformed(format!(
                "log batch inflates beyond {MAX_LOG_BATCH_JSON_BYTES} bytes"
            )));
        }
        let rows: Vec<FirewallRow> = serde_json::from_slice(&json)
            .map_err(|e| DecodeError::Malformed(format!("log batch rows: {e}")))?;
        if rows.len() as u64 != wire.rows {
            return Err(DecodeError::Malformed(format!(
                "log batch says {} rows but holds {}",
                wire.rows,
                rows.len()
            )));
        }
        Ok(Self { rows })
    }
}

impl Report {
    fn wire_body(&self) -> WireBody {
        match &self.body {
            ReportBody::Commit(c) => WireBody::Commit(c.clone()),
            ReportBody::Heartbeat(h) => WireBody::Heartbeat(h.clone()),
            ReportBody::Logs(l) => WireBody::Logs(l.to_wire()),
        }
    }

    fn encode_body(&self, body: WireBody, key: &SigningKey) -> String {
        let created_at = timestamp(&self.created_at);
        let unsigned = Unsigned {
            v: SCHEMA_VERSION,
            id: &self.id,
            site: &self.site,
            agent_version: &self.agent_version,
            created_at: &created_at,
            body: &body,
            kid: key.id(),
        };
        let sig = key.sign(&serde_json::to_vec(&unsigned).expect("reports always serialise"));
        let wire = Wire {
            v: SCHEMA_VERSION,
            id: self.id,
            site: self.site.clone(),
            agent_version: self.agent_version.clone(),
            created_at,
            body,
            kid: key.id().to_owned(),
            sig,
        };
        serde_json::to_string(&wire).expect("reports always serialise")
    }

    /// Signs and encodes the report as the queue message text.
    pub fn encode(&self, key: &SigningKey) -> String {
        self.encode_body(self.wire_body(), key)
    }

    /// Decodes and verifies a queue message text against any of `keys`. Base64 of the JSON (the Functions
    /// queue extension's default encoding) is accepted too.
    pub fn decode(text: &str, keys: &[SigningKey]) -> Result<Self, DecodeError> {
        let value = parse_signed_json(text)?;
        let wire: Wire =
            serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let key = find_key(keys, &wire.kid)?;
        let created_at = parse_timestamp(&wire.created_at, "created_at")?;
        let unsigned = Unsigned {
            v: wire.v,
            id: &wire.id,
            site: &wire.site,
            agent_version: &wire.agent_version,
            created_at: &wire.created_at,
            body: &wire.body,
            kid: &wire.kid,
        };
        key.verify(
            &serde_json::to_vec(&unsigned).expect("reports always serialise"),
            &wire.sig,
        )?;
        let body = match wire.body {
            WireBody::Commit(c) => ReportBody::Commit(c),
            WireBody::Heartbeat(h) => ReportBody::Heartbeat(h),
            WireBody::Logs(l) => ReportBody::Logs(LogBatch::from_wire(&l)?),
        };
        Ok(Self {
            id: wire.id,
            site: wire.site,
            agent_version: wire.agent_version,
            created_at,
            body,
        })
    }

    /// Length of the encoded report once XML-escaped (what counts against [`MAX_MESSAGE_BYTES`]).
    pub fn encoded_len(&self, key: &SigningKey) -> usize {
        xml_escaped_len(&self.encode(key))
    }

    fn header(&self, body: ReportBody) -> Self {
        Self {
            id: Uuid::new_v4(),
            site: self.site.clone(),
            agent_version: self.agent_version.clone(),
            created_at: self.created_at,
            body,
        }
    }

    /// Splits one commit's `events` into as few commit reports as fit under [`MAX_MESSAGE_BYTES`] each.
    ///
    /// `template` gives the site, agent version and creation time (its body is ignored); every part gets a
    /// fresh report id, all share `commit_id`, and part 1 carries the totals of the whole commit. An event
    /// whose targets do not fit in one message continues in the next with the same claim, expiry and
    /// reason. Event order and target order are kept.
    pub fn pack_commit(
        template: &Self,
        commit_id: Uuid,
        committed_at: DateTime<Utc>,
        events: &[CommitEvent],
        key: &SigningKey,
    ) -> Vec<Self> {
        let mut totals = totals_of(events);
        let part_of = |part: u32, totals: Vec<EventTotal>, events: Vec<CommitEvent>| {
            template.header(ReportBody::Commit(CommitReport {
                commit_id,
                part,
                parts: u32::MAX, // the widest spelling while measuring; fixed below
                committed_at,
                totals,
                events,
            }))
        };
        // Part 1's totals must leave room for events: keep the first ones that fit in half a message.
        while !totals.is_empty()
            && part_of(1, totals.clone(), Vec::new()).encoded_len(key) > MAX_MESSAGE_BYTES / 2
        {
            totals.truncate(totals.len() / 2);
        }

        let mut parts: Vec<Vec<CommitEvent>> = Vec::new();
        let mut current: Vec<CommitEvent> = Vec::new();
        let mut size = part_of(1, totals.clone(), Vec::new()).encoded_len(key);
        let empty_part = part_of(2, Vec::new(), Vec::new()).encoded_len(key);
        for event in events {
            let bare = CommitEvent {
                targets: Vec::new(),
                ..event.clone()
            };
            // The event object, a comma, and `"targets":[]` (12 bytes, quotes escaped: +20).
            let bare_cost =
                xml_escaped_len(&serde_json::to_string(&bare).expect("serialises")) + 1 + 32;
            let mut open: Option<CommitEvent> = None;
            let mut remaining = event.targets.as_slice();
            loop {
                if open.is_none() {
                    if !current.is_empty() && size + bare_cost > MAX_MESSAGE_BYTES {
                        parts.push(std::mem::take(&mut current));
                        size = empty_part;
                    }
                    open = Some(bare.clone());
                    size += bare_cost;
                }
                let Some((target, rest)) = remaining.split_first() else {
                    break;
                };
                // The text, a comma and two quotes, each quote escaped as `&quot;`.
                let cost = target.to_string().len() + 1 + 2 * 6;
                let slot = open.as_mut().expect("opened above");
                if !slot.targets.is_empty() && size + cost > MAX_MESSAGE_BYTES {
                    current.push(open.take().expect("opened above"));
                    parts.push(std::mem::take(&mut current));
                    size = empty_part;
                    continue;
                }
                slot.targets.push(*target);
                size += cost;
                remaining = rest;
            }
            current.push(open.take().expect("opened above"));
        }
        if !current.is_empty() || parts.is_empty() {
            parts.push(current);
        }
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        parts
            .into_iter()
            .zip(1..)
            .map(|(events, part)| {
                let mut report = part_of(
                    part,
                    if part == 1 {
                        totals.clone()
                    } else {
                        Vec::new()
                    },
                    events,
                );
                if let ReportBody::Commit(c) = &mut report.body {
                    c.parts = count;
                }
                report
            })
            .collect()
    }

    /// Splits firewall rows into as few log-batch reports as fit under [`MAX_MESSAGE_BYTES`] each (and
    /// under [`MAX_LOG_BATCH_JSON_BYTES`] inflated). Row order is kept; `template` gives the header.
    ///
    /// A single row too large for a message on its own (a huge `Raw` line) has its `raw` text cut until it
    /// fits, rather than being lost or making an unsendable message.
    pub fn pack_logs(template: &Self, rows: &[FirewallRow], key: &SigningKey) -> Vec<Self> {
        let mut out = Vec::new();
        pack_rows(template, rows, key, &mut out);
        out
    }
}

fn fits(report: &Report, key: &SigningKey) -> bool {
    let ReportBody::Logs(batch) = &report.body else {
        return report.encoded_len(key) <= MAX_MESSAGE_BYTES;
    };
    serde_json::to_vec(&batch.rows).map_or(0, |j| j.len()) <= MAX_LOG_BATCH_JSON_BYTES
        && report.encoded_len(key) <= MAX_MESSAGE_BYTES
}

fn pack_rows(template: &Report, rows: &[FirewallRow], key: &SigningKey, out: &mut Vec<Report>) {
    let whole = template.header(ReportBody::Logs(LogBatch {
        rows: rows.to_vec(),
    }));
    if fits(&whole, key) {
        if !rows.is_empty() || out.is_empty() {
            out.push(whole);
        }
        return;
    }
    if let [row] = rows {
        // One row alone is too big: only `raw` can make it so (every other column is bounded).
        let mut row = row.clone();
        let mut keep = row.raw.as_ref().map_or(0, String::len);
        loop {
            keep /= 2;
            if let Some(raw) = &mut row.raw {
                let mut cut = keep;
                while !raw.is_char_boundary(cut) {
                    cut -= 1;
                }
                raw.truncate(cut);
            }
            let report = template.header(ReportBody::Logs(LogBatch {
                rows: vec![row.clone()],
            }));
            if keep == 0 || fits(&report, key) {
                out.push(report);
                return;
            }
        }
    }
    // Too big: split into as many even chunks as the size suggests, and recurse on any that still is.
    let encoded = whole.encoded_len(key);
    let chunks = encoded
        .div_ceil(MAX_MESSAGE_BYTES * 9 / 10)
        .clamp(2, rows.len());
    let per = rows.len().div_ceil(chunks);
    for chunk in rows.chunks(per) {
        pack_rows(template, chunk, key, out);
    }
}

fn totals_of(events: &[CommitEvent]) -> Vec<EventTotal> {
    let mut totals: Vec<EventTotal> = Vec::new();
    for e in events {
        let kind = e.source.as_ref().map(|s| s.kind.clone());
        let id = e.source.as_ref().and_then(|s| s.id.clone());
        let count = if e.targets.is_empty() {
            1
        } else {
            e.targets.len() as u64
        };
        match totals
            .iter_mut()
            .find(|t| t.event == e.event && t.source_kind == kind && t.source_id == id)
        {
            Some(t) => t.count += count,
            None => totals.push(EventTotal {
                event: e.event,
                source_kind: kind,
                source_id: id,
                count,
            }),
        }
    }
    totals
}

/// Serde for a timestamp field in its one canonical spelling (see [`crate::message`]).
mod canonical_time {
    use chrono::{DateTime, Utc};
    use serde::{de::Error as _, Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::message::timestamp(t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        crate::message::parse_timestamp(&text, "timestamp").map_err(D::Error::custom)
    }
}

/// [`canonical_time`] for an optional field.
mod canonical_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize as _, Deserializer, Serializer};

    // serde's `with` passes `&Option<T>`; the signature is not ours to choose.
    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::canonical_time::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrap(#[serde(with = "super::canonical_time")] DateTime<Utc>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(t)| t))
    }
}

#[cfg(test)]
mod tests;
