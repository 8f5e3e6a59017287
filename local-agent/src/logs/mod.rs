//! Firewall logs: the agent receives the firewall's syslog, parses and summarises it at the edge, spools
//! the batches on disk and ships them as reports.
//!
//! # Layout
//! [`receiver`] (UDP and TCP syslog, sender filter) → [`parse`] ([`envelope`] then the format of each
//! line, into an [`event::Event`]) → [`summarise`] (rows per window) → [`spool`] (durable, bounded, in
//! order) → [`ship`] (the boundary to the reports queue). Around them: [`config`] (the `[logs]` section),
//! [`metrics`] (counters) and [`generator`] (realistic traffic for tests and benchmarks).

pub mod config;
pub mod envelope;
pub mod event;
pub mod metrics;
pub mod parse;
pub mod spool;
pub mod summarise;
