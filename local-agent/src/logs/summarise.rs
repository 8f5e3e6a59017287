//! Edge summarising: events of one window aggregated on (device, action, rule, protocol, source IP,
//! destination port) into one [`Row`] with `Count`, `FirstSeen`, `LastSeen` and a bounded sample of
//! destination addresses; or, with `summarize = false`, one row per event. Only the configured verdicts
//! are kept.
//!
//! The row type lives here until the shared report format of `queue-message` carries log batches; its
//! serialised names are the fixed columns of `PortcullisFirewall_CL`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Action, Event, Format};

/// Most destination addresses sampled per row.
pub const DST_SAMPLE: usize = 8;

/// Most rows one open window holds; when a flood of distinct sources reaches it, the window is closed
/// early, so memory stays bounded (about 300 bytes a row).
pub const MAX_OPEN_ROWS: usize = 50_000;

/// One row of `PortcullisFirewall_CL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// When the row's last event happened (= `LastSeen`).
    #[serde(rename = "TimeGenerated")]
    pub time_generated: DateTime<Utc>,
    /// The agent's site name.
    #[serde(rename = "Site")]
    pub site: String,
    /// Sending device.
    #[serde(rename = "Device")]
    pub device: String,
    /// Log format.
    #[serde(rename = "Format")]
    pub format: Format,
    /// `drop`, `reject` or `accept`.
    #[serde(rename = "Action")]
    pub action: Action,
    /// Rule as the firewall names it.
    #[serde(rename = "Rule")]
    pub rule: String,
    /// Interface of the first event.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// Protocol.
    #[serde(rename = "Protocol")]
    pub protocol: String,
    /// Source address.
    #[serde(rename = "SrcIp")]
    pub src_ip: IpAddr,
    /// Source port when every event of the row had the same one, else empty.
    #[serde(rename = "SrcPort")]
    pub src_port: Option<u16>,
    /// Destination address of the first event.
    #[serde(rename = "DstIp")]
    pub dst_ip: Option<IpAddr>,
    /// Destination port.
    #[serde(rename = "DstPort")]
    pub dst_port: Option<u16>,
    /// Events summarised.
    #[serde(rename = "Count")]
    pub count: u64,
    /// First event time.
    #[serde(rename = "FirstSeen")]
    pub first_seen: DateTime<Utc>,
    /// Last event time.
    #[serde(rename = "LastSeen")]
    pub last_seen: DateTime<Utc>,
    /// Up to [`DST_SAMPLE`] distinct destination addresses, in order of appearance.
    #[serde(rename = "DstIpSample")]
    pub dst_sample: Vec<IpAddr>,
}

/// A firewall-looking line that did not parse, shipped as is with `ship_unparsed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawLine {
    /// Receive time.
    #[serde(rename = "TimeGenerated")]
    pub time_generated: DateTime<Utc>,
    /// The agent's site name.
    #[serde(rename = "Site")]
    pub site: String,
    /// The sender's address.
    #[serde(rename = "Device")]
    pub device: String,
    /// The format it looked like.
    #[serde(rename = "Format")]
    pub format: Format,
    /// The line, cut at [`MAX_RAW_LINE`] bytes.
    #[serde(rename = "Raw")]
    pub raw: String,
}

/// Longest raw line kept (Log Analytics truncates field values at 64 KB anyway).
pub const MAX_RAW_LINE: usize = 8 * 1024;

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
            format,
            action: key.action,
            rule: key.rule,
            interface,
            protocol: key.protocol,
            src_ip: key.src,
            src_port,
            dst_ip: dst,
            dst_port: key.dst_port,
            count: 1,
            first_seen: time,
            last_seen: time,
            dst_sample: dst.into_iter().collect(),
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
        // One scanner hits port 22 on 10 addresses, then port 23 once; another source hits 22 once.
        for i in 0..10u32 {
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
        assert_eq!(s.open_events(), 12);
        let rows = s.close();
        assert_eq!(rows.len(), 3);
        let first = &rows[0];
        assert_eq!(
            (first.src_ip.to_string(), first.dst_port, first.count),
            ("203.0.113.5".to_owned(), Some(22), 10)
        );
        assert_eq!(
            first.first_seen,
            Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 10).unwrap()
        );
        assert_eq!(
            first.last_seen,
            Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 19).unwrap()
        );
        assert_eq!(first.time_generated, first.last_seen);
        assert_eq!(first.src_port, None, "source ports differed");
        assert_eq!(first.dst_sample.len(), DST_SAMPLE, "sample is bounded");
        assert_eq!(first.dst_ip, Some("198.51.100.0".parse().unwrap()));
        assert_eq!(first.site, "home");
        assert_eq!(
            (rows[1].dst_port, rows[1].count, rows[1].src_port),
            (Some(23), 1, Some(1))
        );
        assert_eq!(
            (rows[2].src_ip.to_string(), rows[2].count),
            ("203.0.113.6".to_owned(), 1)
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
            "DstIpSample",
        ];
        assert_eq!(keys, fixed.into_iter().collect());
        assert_eq!(value["Action"], "drop");
        assert_eq!(value["Format"], "netfilter");
        assert_eq!(value["SrcIp"], "203.0.113.5");
    }
}
