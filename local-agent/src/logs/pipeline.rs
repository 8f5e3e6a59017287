//! What happens to each received line: parse, count, and add to the open window (or keep it raw); and
//! closing the window into batches for the spool. Shared by the UDP and TCP receivers behind one mutex
//! (held only while a burst of lines is processed, never across an `.await`).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::config::LogsConfig;
use super::metrics::{inc, LogMetrics};
use super::parse::{self, Context, Outcome};
use super::spool::Batch;
use super::summarise::{raw_row, Row, Skipped, Summariser};

/// Most raw lines held in one open window (with `ship_unparsed`); the window closes early at this size.
pub const MAX_OPEN_RAW: usize = 10_000;

/// Parser context, open window and raw lines.
#[derive(Debug)]
pub struct Pipeline {
    config: Arc<LogsConfig>,
    site: String,
    summariser: Summariser,
    raw: Vec<Row>,
    metrics: Arc<LogMetrics>,
}

impl Pipeline {
    /// A pipeline for `site`.
    pub fn new(config: Arc<LogsConfig>, site: String, metrics: Arc<LogMetrics>) -> Self {
        let summariser = Summariser::new(site.clone(), config.summarize, config.actions.clone());
        Self {
            config,
            site,
            summariser,
            raw: Vec::new(),
            metrics,
        }
    }

    /// Processes the lines of one datagram or TCP frame (a sender may put several lines in one).
    pub fn ingest(&mut self, data: &[u8], sender: IpAddr, received: DateTime<Utc>) {
        let text = String::from_utf8_lossy(data);
        let context = Context {
            received,
            zone: self.config.timezone,
            sender: Some(sender),
        };
        for line in text.split('\n') {
            let line = line.trim_end_matches(['\r', '\0']);
            if line.trim().is_empty() {
                continue;
            }
            self.line(line, &context);
        }
    }

    fn line(&mut self, line: &str, context: &Context) {
        let m = &self.metrics;
        inc(&m.lines_received);
        let parsed = parse::parse(line, context);
        if parsed.time_fell_back {
            inc(&m.time_fallbacks);
        }
        match parsed.outcome {
            Outcome::Event(event) => {
                inc(&m.lines_parsed);
                match self.summariser.add(event) {
                    Ok(()) => {}
                    Err(Skipped::NoVerdict) => inc(&m.events_no_verdict),
                    Err(Skipped::ActionNotShipped) => inc(&m.events_filtered),
                }
            }
            Outcome::NotFirewall => inc(&m.lines_not_firewall),
            Outcome::Unparsed(format) => {
                m.unparsed(format);
                if self.config.ship_unparsed {
                    let device = context.sender.map(|s| s.to_string()).unwrap_or_default();
                    self.raw
                        .push(raw_row(&self.site, device, format, line, context.received));
                }
            }
        }
    }

    /// Whether the open window must close now to bound memory.
    pub fn must_close(&self) -> bool {
        self.summariser.full() || self.raw.len() >= MAX_OPEN_RAW
    }

    /// Events in the open window.
    pub fn open_events(&self) -> u64 {
        self.summariser.open_events()
    }

    /// Closes the window into spool-sized batches.
    pub fn close_window(&mut self) -> Vec<Batch> {
        let mut rows = self.summariser.close();
        rows.append(&mut self.raw);
        Batch::split(rows)
    }

    /// The counters.
    pub fn metrics(&self) -> &LogMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::logs::envelope::Zone;

    fn pipeline(ship_unparsed: bool) -> Pipeline {
        let any = "127.0.0.1:0".parse().unwrap();
        let mut config = LogsConfig::listening(vec![any], Vec::new());
        config.timezone = Zone::Named(chrono_tz::UTC);
        config.ship_unparsed = ship_unparsed;
        Pipeline::new(
            Arc::new(config),
            "home".to_owned(),
            Arc::new(LogMetrics::default()),
        )
    }

    const BROKEN: &str = "Sep 28 10:38:24 pfSense filterlog: 53,,,1,em0,match,block,in,4,0x0";
    const GOOD: &str = "Sep 28 10:38:24 pfSense filterlog: 53,,,1000102631,em0,match,block,in,4,0x0,,64,600,0,none,6,tcp,44,10.0.2.2,10.0.2.15,53792,22,0,S,31552001,,65535,,mss";
    const ACCEPTED: &str = "Sep 28 10:38:24 pfSense filterlog: 53,,,1000102631,em0,match,pass,in,4,0x0,,64,600,0,none,6,tcp,44,10.0.2.2,10.0.2.15,53792,22,0,S,31552001,,65535,,mss";

    #[test]
    fn lines_are_counted_and_unparsed_ones_shipped_raw_on_request() {
        let received = Utc.with_ymd_and_hms(2026, 9, 28, 10, 38, 30).unwrap();
        let sender = "192.168.1.1".parse().unwrap();
        for ship in [false, true] {
            let mut p = pipeline(ship);
            let datagram = format!("{GOOD}\r\n{BROKEN}\n\nhello from dnsmasq\n{ACCEPTED}\n{GOOD}");
            p.ingest(datagram.as_bytes(), sender, received);
            let c = p.metrics().counts();
            assert_eq!(
                (
                    c.lines_received,
                    c.lines_parsed,
                    c.lines_not_firewall,
                    c.events_filtered
                ),
                (5, 3, 1, 1)
            );
            assert_eq!(c.lines_unparsed["filterlog"], 1);
            let rows: Vec<_> = p.close_window().into_iter().flat_map(|b| b.rows).collect();
            let raw: Vec<_> = rows.iter().filter(|r| r.raw.is_some()).collect();
            assert_eq!(rows.len() - raw.len(), 1, "two equal drops are one row");
            assert_eq!(rows[0].count, 2);
            if ship {
                assert_eq!(raw.len(), 1);
                assert_eq!(raw[0].raw.as_deref(), Some(BROKEN));
                assert_eq!(
                    (raw[0].format.as_str(), raw[0].device.as_str()),
                    ("filterlog", "192.168.1.1")
                );
                assert_eq!(raw[0].action, None);
            } else {
                assert!(raw.is_empty());
            }
            assert_eq!(p.open_events(), 0);
        }
    }
}
