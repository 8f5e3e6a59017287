//! Edge summarising: events of one window aggregated on (device, action, rule, protocol, source IP,
//! destination port) into one [`Row`] with `Count`, `FirstSeen`, `LastSeen` and a bounded sample of
//! destination addresses; or, with `summarize = false`, one row per event. Only the configured verdicts
//! are kept.
//!
//! Rows are the shared report format's [`FirewallRow`] (`queue-message`), whose serialised names are the
//! fixed columns of `PortcullisFirewall_CL`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use queue_message::report::MAX_DST_SAMPLE;
use queue_message::{FirewallAction, FirewallRow};

use super::event::{Action, Event, Format};

/// Most destination addresses sampled per row (the format's bound).
pub const DST_SAMPLE: usize = MAX_DST_SAMPLE;

/// A row of `PortcullisFirewall_CL`.
pub type Row = FirewallRow;

/// Most rows one open window holds; when a flood of distinct sources reaches it, the window is closed
/// early, so memory stays bounded (a row and its key take roughly 0.5–1 KB, so about 20 MB at most; the
/// no-loss benchmark showed 50,000 rows too much for the 40 MB goal).
pub const MAX_OPEN_ROWS: usize = 20_000;

/// Longest raw line kept (Log Analytics truncates field values at 64 KB anyway; the packer cuts further
/// when a row would not fit a message).
pub const MAX_RAW_LINE: usize = 8 * 1024;

/// The wire name of an action.
fn wire(action: Action) -> FirewallAction {
    match action {
        Action::Drop => FirewallAction::Drop,
        Action::Reject => FirewallAction::Reject,
        Action::Accept => FirewallAction::Accept,
    }
}

/// A raw row for a firewall-looking line that did not parse (`ship_unparsed`).
pub fn raw_row(
    site: &str,
    device: String,
    format: Format,
    line: &str,
    received: DateTime<Utc>,
) -> Row {
    let mut end = line.len().min(MAX_RAW_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Row {
        time_generated: received,
        site: site.to_owned(),
        device,
        format: format.as_str().to_owned(),
        action: None,
        rule: None,
        interface: None,
        protocol: None,
        src_ip: None,
        src_port: None,
        dst_ip: None,
        dst_port: None,
        count: 1,
        first_seen: received,
        last_seen: received,
        dst_sample: Vec::new(),
        raw: Some(line[..end].to_owned()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    device: String,
    action: Action,
    rule: String,
    protocol: String,
    src: IpAddr,
    dst_port: Option<u16>,
}

/// Why an event did not become part of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The line carries no verdict (an unprefixed netfilter or MikroTik line).
    NoVerdict,
    /// Its verdict is not in `actions`.
    ActionNotShipped,
}

/// The open window.
#[derive(Debug)]
pub struct Summariser {
    site: String,
    summarize: bool,
    actions: BTreeSet<Action>,
    index: HashMap<Key, usize>,
    rows: Vec<Row>,
    events: u64,
}

impl Summariser {
    /// A summariser for `site` keeping `actions`.
    pub fn new(site: impl Into<String>, summarize: bool, actions: BTreeSet<Action>) -> Self {
        Self {
            site: site.into(),
            summarize,
            actions,
            index: HashMap::new(),
            rows: Vec::new(),
            events: 0,
        }
    }

    /// Adds one event to the open window.
    pub fn add(&mut self, event: Event) -> Result<(), Skipped> {
        let action = event.action.ok_or(Skipped::NoVerdict)?;
        if !self.actions.contains(&action) {
            return Err(Skipped::ActionNotShipped);
        }
        self.events += 1;
        let key = Key {
            device: event.device,
            action,
            rule: event.rule,
            protocol: event.protocol,
            src: event.src,
            dst_port: event.dst_port,
        };
        if self.summarize {
            if let Some(&i) = self.index.get(&key) {
                let row = &mut self.rows[i];
                row.count += 1;
                row.first_seen = row.first_seen.min(event.time);
                row.last_seen = row.last_seen.max(event.time);
                row.time_generated = row.last_seen;
                if row.src_port != event.src_port {
                    row.src_port = None;
                }
                if let Some(dst) = event.dst {
                    if row.dst_sample.len() < DST_SAMPLE && !row.dst_sample.contains(&dst) {
                        row.dst_sample.push(dst);
                    }
                }
                return Ok(());
            }
            self.index.insert(key.clone(), self.rows.len());
        }
        let row = self.row(
            key,
            event.format,
            event.interface,
            event.src_port,
            event.dst,
            event.time,
        );
        self.rows.push(row);
        Ok(())
    }

    fn row(
        &self,
        key: Key,
        format: Format,
        interface: String,
        src_port: Option<u16>,
        dst: Option<IpAddr>,
        time: DateTime<Utc>,
    ) -> Row {
        Row {
            time_generated: time,
            site: self.site.clone(),
            device: key.device,
            format: format.as_str().to_owned(),
            action: Some(wire(key.action)),
            rule: Some(key.rule),
            interface: Some(interface),
            protocol: Some(key.protocol),
            src_ip: Some(key.src),
            src_port,
            dst_ip: dst,
            dst_port: key.dst_port,
            count: 1,
            first_seen: time,
            last_seen: time,
            dst_sample: dst.into_iter().collect(),
            raw: None,
        }
    }

    /// Rows in the open window.
    pub fn open_rows(&self) -> usize {
        self.rows.len()
    }

    /// Events in the open window.
    pub fn open_events(&self) -> u64 {
        self.events
    }

    /// Whether the open window must be closed now to bound memory.
    pub fn full(&self) -> bool {
        self.rows.len() >= MAX_OPEN_ROWS
    }

    /// Closes the window: its rows, in order of first appearance.
    pub fn close(&mut self) -> Vec<Row> {
        self.index.clear();
        self.events = 0;
        std::mem::take(&mut self.rows)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn event(
        src: &str,
        dst: &str,
        dst_port: u16,
        src_port: u16,
        action: Option<Action>,
        sec: u32,
    ) -> Event {
        Event {
            time: Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, sec).unwrap(),
            device: "fw".to_owned(),
            format: Format::Netfilter,
            action,
            rule: "DROP".to_owned(),
            interface: "eth0".to_owned(),
            protocol: "tcp".to_owned(),
            src: src.parse().unwrap(),
            src_port: Some(src_port),
            dst: Some(dst.parse().unwrap()),
            dst_port: Some(dst_port),
        }
    }

    fn default_actions() -> BTreeSet<Action> {
        BTreeSet::from([Action::Drop, Action::Reject])
    }

    #[test]
    fn repeated_events_become_one_row_per_key() {
        let mut s = Summariser::new("home", true, default_actions());
        // One scanner hits port 22 on 20 addresses, then port 23 once; another source hits 22 once.
        for i in 0..20u32 {
            s.add(event(
                "203.0.113.5",
                &format!("198.51.100.{i}"),
                22,
                40000 + i as u16,
                Some(Action::Drop),
                10 + i,
            ))
            .unwrap();
        }
        s.add(event(
            "203.0.113.5",
            "198.51.100.1",
            23,
            1,
            Some(Action::Drop),
            5,
        ))
        .unwrap();
        s.add(event(
            "203.0.113.6",
            "198.51.100.1",
            22,
            7,
            Some(Action::Drop),
            30,
        ))
        .unwrap();
        assert_eq!(s.open_events(), 22);
        let rows = s.close();
        assert_eq!(rows.len(), 3);
        let first = &rows[0];
        assert_eq!(
            (first.src_ip, first.dst_port, first.count),
            (Some("203.0.113.5".parse().unwrap()), Some(22), 20)
        );
        assert_eq!(
            first.first_seen,
            Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 10).unwrap()
        );
        assert_eq!(
            first.last_seen,
            Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 29).unwrap()
        );
        assert_eq!(first.time_generated, first.last_seen);
        assert_eq!(first.src_port, None, "source ports differed");
        assert_eq!(first.dst_sample.len(), DST_SAMPLE, "the sample is bounded");
        assert_eq!(first.dst_ip, Some("198.51.100.0".parse().unwrap()));
        assert_eq!(first.site, "home");
        assert_eq!(
            (rows[1].dst_port, rows[1].count, rows[1].src_port),
            (Some(23), 1, Some(1))
        );
        assert_eq!(
            (rows[2].src_ip, rows[2].count),
            (Some("203.0.113.6".parse().unwrap()), 1)
        );
        assert_eq!(s.open_rows(), 0, "closing empties the window");
    }

    #[test]
    fn unsummarised_ships_every_event() {
        let mut s = Summariser::new("home", false, default_actions());
        for i in 0..5 {
            s.add(event(
                "203.0.113.5",
                "198.51.100.1",
                22,
                1,
                Some(Action::Drop),
                i,
            ))
            .unwrap();
        }
        let rows = s.close();
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r.count == 1));
    }

    #[test]
    fn only_configured_verdicts_are_kept() {
        let mut s = Summariser::new("home", true, default_actions());
        assert_eq!(
            s.add(event(
                "203.0.113.5",
                "198.51.100.1",
                22,
                1,
                Some(Action::Accept),
                0
            )),
            Err(Skipped::ActionNotShipped)
        );
        assert_eq!(
            s.add(event("203.0.113.5", "198.51.100.1", 22, 1, None, 0)),
            Err(Skipped::NoVerdict)
        );
        assert_eq!(
            s.add(event(
                "203.0.113.5",
                "198.51.100.1",
                22,
                1,
                Some(Action::Reject),
                0
            )),
            Ok(())
        );
        let mut with_accept = Summariser::new("home", true, BTreeSet::from([Action::Accept]));
        assert_eq!(
            with_accept.add(event(
                "203.0.113.5",
                "198.51.100.1",
                22,
                1,
                Some(Action::Accept),
                0
            )),
            Ok(())
        );
        assert_eq!(s.close().len(), 1);
    }

    #[test]
    fn rows_serialise_to_the_fixed_columns() {
        let mut s = Summariser::new("home", true, default_actions());
        s.add(event(
            "203.0.113.5",
            "198.51.100.1",
            22,
            1,
            Some(Action::Drop),
            0,
        ))
        .unwrap();
        let value = serde_json::to_value(&s.close()[0]).unwrap();
        let keys: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let fixed = [
            "TimeGenerated",
            "Site",
            "Device",
            "Format",
            "Action",
            "Rule",
            "Interface",
            "Protocol",
            "SrcIp",
            "SrcPort",
            "DstIp",
            "DstPort",
            "Count",
            "FirstSeen",
            "LastSeen",
            "DstSample",
        ];
        assert_eq!(keys, fixed.into_iter().collect());
        assert_eq!(value["Action"], "drop");
        assert_eq!(value["Format"], "netfilter");
        assert_eq!(value["SrcIp"], "203.0.113.5");
    }
}
