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
