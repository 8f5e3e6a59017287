//! Portcullis agent: consumes signed block messages from an Azure Storage Queue and enforces them on the
//! local firewall.
//!
//! # Layout
//! Data moves through the modules in this order:
//!
//! [`poll`] (receive from the queue, batch window; performs the verdicts: poison queue, deletes) →
//! [`classify`] (pure: a verdict per message — apply, poison, discard, keep) → [`decide`] (pure: claims
//! merged into one plan, under the never-block [`policy`]) → [`apply`] (stage the plan on a
//! [`backends::Backend`], one commit, then record; the messages are deleted after) → [`store`] (SQLite:
//! blocks, claims, audit log, seen message ids; reached from async code through [`db`], off the runtime
//! thread) → [`expire`] (one task sleeping until the next deadline; periodic reconcile).
//!
//! Around them: [`clock`] (the one time source), [`config`] (the TOML file), [`span`] (durations),
//! [`backends`] (the firewall trait, the
//! factory and the implementations), [`hostaddr`] (this host's own addresses), [`control`] (the Unix
//! socket the CLI talks to), [`metrics`] (the exported series), [`health`] (the health state machine), [`endpoint`]
//! (`/metrics` and `/healthz`), [`status`] (the status report), [`reports`] (the return path's durable outbox), [`daemon`] (`run`: wiring and
//! shutdown), [`cli`] (the subcommands), [`telemetry`] (logging) and [`failpoint`] (crash points for the
//! redelivery tests, debug builds only).

pub mod apply;
pub mod backends;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod db;
pub mod decide;
pub mod endpoint;
pub mod expire;
pub mod failpoint;
pub mod health;
pub mod hostaddr;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod poll;
pub mod reports;
pub mod span;
pub mod status;
pub mod store;
pub mod telemetry;
