//! Portcullis agent: consumes signed block messages from an Azure Storage Queue and enforces them on the
//! local firewall.
//!
//! # Layout
//! Data moves through the modules in this order:
//!
//! `poll` (receive from the queue, batch window, poison queue) → `decide` (verify, never-block policy,
//! merge claims into one plan) → `store` (SQLite: blocks, claims, audit log, seen message ids) → `apply`
//! (stage the plan on a [`backends::Backend`], one commit, then record, then delete the messages) →
//! `expire` (one task sleeping until the next deadline; periodic reconcile).
//!
//! Around them: [`config`] (the TOML file), [`span`] (durations), [`backends`] (the firewall trait, the
//! factory and the nftables, ipset and dry-run implementations).

pub mod backends;
pub mod config;
pub mod span;
