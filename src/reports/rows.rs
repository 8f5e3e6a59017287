//! What a verified report becomes: rows of `PortcullisEvents_CL` / `PortcullisFirewall_CL` and the text of
//! the incident comments.
//!
//! Event rows have the table's fixed columns (`TimeGenerated`, `Site`, `Event`, `Target`, `ExpiresAt`,
//! `SourceKind`, `SourceId`, `Rule`, `Reason`, `ReportId`, `AgentVersion`, `Details`) plus `MessageId`,
//! `Healthy` and `Count`; the declared set lives in `infra/tables/portcullis-events.columns.json`, which
//! Bicep and the tests' fake Logs Ingestion endpoint both read. Comment text is Markdown with every
//! untrusted string escaped, and never longer than [`MAX_COMMENT_CHARS`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use queue_message::{
    CommitEvent, CommitReport, EventKind, FirewallRow, Heartbeat, Report, ReportBody, Source,
};
use serde_json::{json, Map, Value};

/// Sentinel's limit is 30,000 characters per comment; stay under it with room for the closing line.
pub const MAX_COMMENT_CHARS: usize = 29_000;

/// Targets listed by name per event in a comment; the rest are counted.
pub const COMMENT_TARGETS: usize = 25;

/// The source kind whose id is a Sentinel incident ARM id.
pub const INCIDENT_KIND: &str = "sentinel-incident";

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A row with the columns every event row has; `None` values are left out (null in the table).
fn row(report: &Report, time: &DateTime<Utc>, event: &str) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("TimeGenerated".into(), json!(ts(time)));
    row.insert("Site".into(), json!(report.site));
    row.insert("Event".into(), json!(event));
    row.insert("ReportId".into(), json!(report.id.to_string()));
    row.insert("AgentVersion".into(), json!(report.agent_version));
    row
}

fn put(row: &mut Map<String, Value>, column: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        row.insert(column.to_owned(), v.into());
    }
}

fn source_columns(row: &mut Map<String, Value>, source: Option<&Source>) {
    if let Some(s) = source {
        row.insert("SourceKind".into(), json!(s.kind));
        put(row, "SourceId", s.id.clone());
        put(row, "Rule", s.rule.clone());
    }
}

/// One row per target per event of a commit (one row for an event without targets).
pub fn commit_rows(report: &Report, commit: &CommitReport) -> Vec<Value> {
    let mut rows = Vec::new();
    for event in &commit.events {
        let mut base = row(report, &commit.committed_at, event.event.as_str());
        put(&mut base, "ExpiresAt", event.expires_at.as_ref().map(ts));
        source_columns(&mut base, event.source.as_ref());
        put(&mut base, "Reason", event.reason.clone());
        put(&mut base, "MessageId", event.message_id.clone());
        let mut details = json!({
            "commitId": commit.commit_id.to_string(),
            "part": commit.part,
            "parts": commit.parts,
        });
        if let Some(s) = &event.source {
            if let Some(sev) = &s.severity {
                details["severity"] = json!(sev);
            }
            if let Some(url) = &s.url {
                details["url"] = json!(url);
            }
        }
        base.insert("Details".into(), details);
        if event.targets.is_empty() {
            rows.push(Value::Object(base));
        } else {
            for target in &event.targets {
                let mut r = base.clone();
                r.insert("Target".into(), json!(target.to_string()));
                rows.push(Value::Object(r));
            }
        }
    }
    rows
}

/// The one row of a heartbeat.
pub fn heartbeat_row(report: &Report, hb: &Heartbeat) -> Value {
    let mut r = row(report, &report.created_at, "heartbeat");
    r.insert("Healthy".into(), json!(hb.healthy));
    r.insert("Count".into(), json!(hb.active_blocks));
    if !hb.healthy {
        r.insert("Reason".into(), json!(hb.problems.join("; ")));
    }
    r.insert(
        "Details".into(),
        json!({
            "backend": hb.backend,
            "healthy": hb.healthy,
            "problems": hb.problems,
            "activeBlocks": hb.active_blocks,
            "lastCommitAt": hb.last_commit_at.as_ref().map(ts),
            "outboxDepth": hb.outbox_depth,
            "poisonedSinceLast": hb.poisoned_since_last,
        }),
    );
    Value::Object(r)
}

/// The rows of a firewall log batch, with `Site` set to the verified sender (a row cannot speak for
/// another site).
pub fn firewall_rows(report: &Report, rows: &[FirewallRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap_or(Value::Null);
            value["Site"] = json!(report.site);
            value
        })
        .collect()
}

/// The row of a report the handler could not verify (bad signature, unknown key, malformed): the
/// "enforcement failing" rule sees it as `poisoned`.
pub fn refused_report_row(now: &DateTime<Utc>, reason: &str, claimed_site: Option<&str>) -> Value {
    json!({
        "TimeGenerated": ts(now),
        "Site": claimed_site.map_or_else(|| "unknown".to_owned(), |s| crate::alert::clip(s, 63)),
        "Event": "poisoned",
        "SourceKind": "report",
        "Reason": format!("report refused: {}", crate::alert::clip(reason, 300)),
        "Details": { "verified": false },
    })
}

/// The row `watch` writes for one poison queue.
pub fn poison_queue_row(now: &DateTime<Utc>, site: &str, queue: &str, count: i64) -> Value {
    json!({
        "TimeGenerated": ts(now),
        "Site": site,
        "Event": "poison-queue",
        "Target": queue,
        "Count": count,
        "Reason": format!("{count} message(s) in {queue}"),
        "Details": { "queue": queue },
    })
}

/// Sentinel incident ARM ids a commit report should comment on: the claims of kind `sentinel-incident`
/// with a well-formed incident id. Only part 1 of a split commit comments (its totals cover all parts),
/// so a 10k-address commit gives one comment per incident, not one per part. A commit that only extends
/// blocks for an incident (the rule firing again on a grouped incident) does not comment: that would
/// spend the incident's 100 comments on renewals; the rows still record it.
pub fn incidents(commit: &CommitReport) -> Vec<String> {
    if commit.part != 1 {
        return Vec::new();
    }
    let mut ids: Vec<String> = Vec::new();
    let from_totals = commit
        .totals
        .iter()
        .filter(|t| t.source_kind.as_deref() == Some(INCIDENT_KIND) && t.event != EventKind::Extend)
        .filter_map(|t| t.source_id.clone());
    let from_events = commit
        .events
        .iter()
        .filter(|e| e.event != EventKind::Extend)
        .filter_map(|e| e.source.as_ref())
        .filter(|s| s.kind == INCIDENT_KIND)
        .filter_map(|s| s.id.clone());
    for id in from_totals.chain(from_events) {
        if is_incident_id(&id) && !ids.iter().any(|known| known.eq_ignore_ascii_case(&id)) {
            ids.push(id);
        }
    }
    ids
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/providers/Microsoft.SecurityInsights/incidents/{name}`,
/// case-insensitive, every variable segment made of URL-safe characters (so the id cannot add a path
/// segment, a query or a fragment to the ARM request).
pub fn is_incident_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    let fixed = [
        (1, "subscriptions"),
        (3, "resourcegroups"),
        (5, "providers"),
        (6, "microsoft.operationalinsights"),
        (7, "workspaces"),
        (9, "providers"),
        (10, "microsoft.securityinsights"),
        (11, "incidents"),
    ];
    let safe = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.()".contains(&b))
    };
    parts.len() == 13
        && parts[0].is_empty()
        && fixed
            .iter()
            .all(|(i, name)| parts[*i].eq_ignore_ascii_case(name))
        && [2, 4, 8, 12].iter().all(|i| safe(parts[*i]))
}

/// Escapes text for a comment that Sentinel renders as HTML and Markdown.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn verb(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Block => "Blocked",
        EventKind::Extend => "Extended the block of",
        EventKind::Unblock => "Unblocked",
        EventKind::Expire => "Block expired for",
        EventKind::Refused => "Refused to block",
        EventKind::Poisoned => "Could not apply (poisoned)",
        EventKind::Discarded => "Discarded",
    }
}

fn human_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The comment for `incident` on one commit report: site, what was blocked/unblocked/refused and why,
/// until when, the first [`COMMENT_TARGETS`] targets of each event and the totals of the whole commit.
pub fn comment_text(
    report: &Report,
    commit: &CommitReport,
    incident: &str,
    workbook_url: Option<&str>,
) -> String {
    let mine = |s: Option<&Source>| {
        s.is_some_and(|s| {
            s.kind == INCIDENT_KIND
                && s.id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(incident))
        })
    };
    let mut text = format!(
        "**Portcullis** on site **{}** (agent {}), commit at {}",
        escape(&report.site),
        escape(&report.agent_version),
        human_time(&commit.committed_at)
    );
    if commit.parts > 1 {
        let _ = write!(
            text,
            ", {} report messages (addresses below are from the first)",
            commit.parts
        );
    }
    text.push_str(":\n\n");
    // Totals over the whole commit, per event, for this incident.
    let mut totals: BTreeMap<EventKind, u64> = BTreeMap::new();
    for t in &commit.totals {
        if t.source_kind.as_deref() == Some(INCIDENT_KIND)
            && t.source_id
                .as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(incident))
        {
            *totals.entry(t.event).or_default() += t.count;
        }
    }
    let events: Vec<&CommitEvent> = commit
        .events
        .iter()
        .filter(|e| mine(e.source.as_ref()))
        .collect();
    if totals.is_empty() {
        for e in &events {
            *totals.entry(e.event).or_default() += e.targets.len().max(1) as u64;
        }
    }
    for (kind, count) in &totals {
        let listed: Vec<&CommitEvent> = events
            .iter()
            .copied()
            .filter(|e| e.event == *kind)
            .collect();
        let _ = write!(
            text,
            "- {} {count} address{}",
            verb(*kind),
            if *count == 1 { "" } else { "es" }
        );
        if let Some(until) = listed.iter().filter_map(|e| e.expires_at).max() {
            if matches!(kind, EventKind::Block | EventKind::Extend) {
                let _ = write!(text, " until {}", human_time(&until));
            }
        }
        let mut reasons: Vec<&str> = listed.iter().filter_map(|e| e.reason.as_deref()).collect();
        reasons.dedup();
        if let Some(first) = reasons.first() {
            let _ = write!(text, " — {}", escape(&crate::alert::clip(first, 300)));
            if reasons.len() > 1 {
                let _ = write!(text, " (and {} other reasons)", reasons.len() - 1);
            }
        }
        let names: Vec<String> = listed
            .iter()
            .flat_map(|e| e.targets.iter())
            .take(COMMENT_TARGETS)
            .map(ToString::to_string)
            .collect();
        if !names.is_empty() {
            let _ = write!(text, ": {}", names.join(", "));
            if (names.len() as u64) < *count {
                let _ = write!(text, " and {} more", count - names.len() as u64);
            }
        }
        text.push('\n');
    }
    if let Some(url) = workbook_url {
        let _ = write!(
            text,
            "\n[Portcullis workbook]({})",
            url.replace(['(', ')', ' '], "")
        );
    }
    let _ = write!(text, "\n\nReport {}", report.id);
    clip_comment(text)
}

fn clip_comment(text: String) -> String {
    if text.chars().count() <= MAX_COMMENT_CHARS {
        return text;
    }
    let mut clipped: String = text.chars().take(MAX_COMMENT_CHARS).collect();
    clipped.push_str("\n\n… (shortened: see the PortcullisEvents_CL table for every address)");
    clipped
}

/// What a report turns into, before any I/O.
#[derive(Debug, Default)]
pub struct Planned {
    /// Rows for the events stream.
    pub events: Vec<Value>,
    /// Rows for the firewall stream.
    pub firewall: Vec<Value>,
    /// `(incident id, comment text)` pairs.
    pub comments: Vec<(String, String)>,
}

/// Plans the rows and comments of one verified report.
pub fn plan(report: &Report, workbook_url: Option<&str>) -> Planned {
    match &report.body {
        ReportBody::Commit(commit) => Planned {
            events: commit_rows(report, commit),
            firewall: Vec::new(),
            comments: incidents(commit)
                .into_iter()
                .map(|id| {
                    let text = comment_text(report, commit, &id, workbook_url);
                    (id, text)
                })
                .collect(),
        },
        ReportBody::Heartbeat(hb) => Planned {
            events: vec![heartbeat_row(report, hb)],
            ..Planned::default()
        },
        ReportBody::Logs(batch) => Planned {
            firewall: firewall_rows(report, &batch.rows),
            ..Planned::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use queue_message::{EventTotal, Target};
    use uuid::Uuid;

    const INCIDENT: &str = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/ws/providers/Microsoft.SecurityInsights/incidents/abc-1";

    #[test]
    fn only_well_formed_incident_ids_are_commented() {
        assert!(is_incident_id(INCIDENT));
        assert!(is_incident_id(&INCIDENT.to_ascii_lowercase()));
        for bad in [
            "",
            "/subscriptions/0000/incidents/1",
            &format!("{INCIDENT}/comments/x"),
            &INCIDENT.replace("abc-1", ".."),
            &INCIDENT.replace("abc-1", "a?b=1"),
            &INCIDENT.replace("abc-1", "a#b"),
            &INCIDENT.replace("/rg/", "/r%2fg/"),
        ] {
            assert!(!is_incident_id(bad), "{bad}");
        }
    }

    #[test]
    fn untrusted_text_cannot_inject_markup() {
        let e = escape("<img src=x onerror=alert(1)> [link](http://x) **b** `c`");
        assert!(
            !e.contains('<') && !e.contains("](") && !e.contains("**") && !e.contains(" `"),
            "{e}"
        );
    }

    fn report(n: u32, reason: &str) -> (Report, CommitReport) {
        let source = Source {
            kind: INCIDENT_KIND.to_owned(),
            id: Some(INCIDENT.to_owned()),
            ..Source::default()
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        let commit = CommitReport {
            commit_id: Uuid::from_u128(1),
            part: 1,
            parts: 3,
            committed_at: at,
            totals: vec![EventTotal {
                event: EventKind::Block,
                source_kind: Some(INCIDENT_KIND.to_owned()),
                source_id: Some(INCIDENT.to_owned()),
                count: 10_000,
            }],
            events: vec![CommitEvent {
                event: EventKind::Block,
                targets: (0..n)
                    .map(|i| Target::from_addr(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
                    .collect(),
                expires_at: Some(at + chrono::Duration::days(1)),
                source: Some(source),
                reason: Some(reason.to_owned()),
                message_id: None,
            }],
        };
        let report = Report {
            id: Uuid::from_u128(2),
            site: "home".to_owned(),
            agent_version: "0.1.0".to_owned(),
            created_at: at,
            body: ReportBody::Commit(commit.clone()),
        };
        (report, commit)
    }

    #[test]
    fn a_large_commit_is_summarised_in_one_short_comment() {
        let (report, commit) = report(4_000, "TI match");
        let text = comment_text(
            &report,
            &commit,
            INCIDENT,
            Some("https://portal.azure.com/#wb"),
        );
        assert!(
            text.contains("Blocked 10000 addresses until 2026-12-02 06:00 UTC"),
            "{text}"
        );
        assert!(text.contains("11.0.0.0, 11.0.0.1"), "{text}");
        assert!(
            text.contains(&format!("and {} more", 10_000 - COMMENT_TARGETS)),
            "{text}"
        );
        assert!(
            !text.contains(&format!("11.0.0.{COMMENT_TARGETS},")),
            "{text}"
        );
        assert!(text.contains("[Portcullis workbook](https://portal.azure.com/#wb)"));
        assert!(text.chars().count() < 5_000);
        assert_eq!(plan(&report, None).comments.len(), 1);
        assert_eq!(plan(&report, None).events.len(), 4_000);
    }

    #[test]
    fn comments_never_exceed_the_limit() {
        let (report, commit) = report(3, &"x".repeat(100));
        let mut commit = commit;
        commit.events = std::iter::repeat_n(commit.events[0].clone(), 2_000)
            .enumerate()
            .map(|(i, mut e)| {
                e.event = if i % 2 == 0 {
                    EventKind::Block
                } else {
                    EventKind::Refused
                };
                e.reason = Some(format!("reason {i} {}", "y".repeat(200)));
                e
            })
            .collect();
        let text = comment_text(&report, &commit, INCIDENT, None);
        assert!(
            text.chars().count() <= MAX_COMMENT_CHARS + 100,
            "{}",
            text.chars().count()
        );
    }

    #[test]
    fn renewals_alone_do_not_comment() {
        let (_, mut commit) = report(2, "r");
        commit.totals[0].event = EventKind::Extend;
        commit.events[0].event = EventKind::Extend;
        assert!(incidents(&commit).is_empty());
        let mut refused = commit.events[0].clone();
        refused.event = EventKind::Refused;
        commit.events.push(refused);
        assert_eq!(incidents(&commit), [INCIDENT]);
    }

    #[test]
    fn later_parts_do_not_comment() {
        let (_, mut commit) = report(1, "r");
        assert_eq!(incidents(&commit), [INCIDENT]);
        commit.part = 2;
        assert!(incidents(&commit).is_empty());
    }
}
