//! `make demo`'s view of the return path: the incident comment and the `PortcullisEvents_CL` rows the handler
//! would write for a block and its unblock reported by a site (the report is made here through the shared
//! crate, as the agent makes it, so the preview needs no handler, Azure or fakes).
//!
//! Usage: `return_path_preview <site> <incident ARM id> <address> [rule]`

use std::process::ExitCode;

use chrono::{Duration, Utc};
use queue_message::{
    CommitEvent, EventKind, LogBatch, Report, ReportBody, SigningKey, Source, Target,
};
use uuid::Uuid;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(site), Some(incident), Some(address)) = (args.first(), args.get(1), args.get(2))
    else {
        eprintln!("usage: return_path_preview <site> <incident ARM id> <address> [rule]");
        return ExitCode::from(2);
    };
    let target = match Target::parse(address) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let source = Source {
        kind: "sentinel-incident".to_owned(),
        id: Some(incident.clone()),
        rule: args.get(3).cloned(),
        ..Source::default()
    };
    let key = SigningKey::from_bytes(vec![0; 32]).expect("32 bytes");
    let now = Utc::now();
    let template = Report {
        id: Uuid::new_v4(),
        site: site.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: now,
        body: ReportBody::Logs(LogBatch::default()),
    };
    for (event, reason, expires) in [
        (
            EventKind::Block,
            "Sentinel incident: brute force",
            Some(now + Duration::days(30)),
        ),
        (EventKind::Unblock, "incident closed as FalsePositive", None),
    ] {
        let events = [CommitEvent {
            event,
            targets: vec![target],
            expires_at: expires,
            source: Some(source.clone()),
            reason: Some(reason.to_owned()),
            message_id: Some(Uuid::new_v4().to_string()),
        }];
        for report in Report::pack_commit(&template, Uuid::new_v4(), now, &events, &key) {
            let planned = portcullis::reports::rows::plan(&report, None);
            println!(
                "{event} report {} ({} bytes on the queue)",
                report.id,
                report.encode(&key).len()
            );
            for (incident, text) in &planned.comments {
                println!("  comment on {incident}:");
                for line in text.lines() {
                    println!("    | {line}");
                }
            }
            for row in &planned.events {
                println!("  PortcullisEvents_CL row: {row}");
            }
        }
    }
    ExitCode::SUCCESS
}
