//! Portcullis agent: consumes signed block messages from an Azure Storage Queue and enforces them on the
//! local firewall.
//!
//! # Layout
//! Data moves through the modules in this order:
//!
//! [`poll`] (receive from the queue, batch window, verify, poison queue) → [`decide`] (never-block policy,
//! claims merged into one plan) → [`store`] (SQLite: blocks, claims, audit log, seen message ids) →
//! [`apply`] (stage the plan on a [`backends::Backend`], one commit, then record; the messages are deleted
//! after) → [`expire`] (one task sleeping until the next deadline; periodic reconcile).
//!
//! Around them: [`config`] (the TOML file), [`span`] (durations), [`backends`] (the firewall trait, the
//! factory and the implementations), [`hostaddr`] (this host's own addresses), [`control`] (the Unix
//! socket the CLI talks to), [`metrics`] (Prometheus and `/healthz`), [`daemon`] (`run`: wiring and
//! shutdown), [`cli`] (the subcommands), [`telemetry`] (logging) and [`failpoint`] (crash points for the
//! redelivery tests, debug builds only).

pub mod apply;
pub mod backends;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decide;
pub mod expire;
pub mod failpoint;
pub mod hostaddr;
pub mod logs;
pub mod metrics;
pub mod poll;
pub mod span;
pub mod store;
pub mod telemetry;
