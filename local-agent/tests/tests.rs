//! Agent integration tests: one binary (`cargo test -p portcullis-agent --test integration`).
//!
//! Real parts only: Azurite started per test (`queue_message::testing::Azurite`), nftables and ipset inside
//! network namespaces the tests create and remove (`netns`), the `portcullis-agent` binary, and for the
//! end-to-end test the `portcullis-handler` binary. Needs root for the namespace tests (CI runs as root).

// Helpers are `pub` for the sibling test modules; the test crate exports nothing.
#![allow(unreachable_pub)]

/// Two-namespace lab: veth pair, documentation addresses, TCP probes, cleanup on drop.
mod netns;

/// Azurite, signed messages, the agent binary and its CLI.
mod util;

/// The nftables and ipset backends against the kernel, inside a lab.
mod backends;

/// The consume loop against Azurite with the dry-run backend.
mod queue;

/// The return path: commit reports through the outbox to the reports queue (Azurite, dry-run).
mod reports;

/// The whole agent with nftables/ipset in a lab: drops, unblocks, expiry, drift, crashes, poison.
mod firewall;

/// Handler binary + Azurite + agent + nftables: from an HTTP POST to a dropped packet.
mod e2e;

/// Applying the same batch twice gives the same state (dry-run and nftables).
mod properties;

/// The backend contract every backend passes (`contract::run` with a `Device` probe); dry-run here.
mod contract;

/// The contract for nftables and ipset inside a lab (root).
mod contract_local;

/// UniFi, OPNsense, MikroTik and pfSense against fake devices over HTTPS.
mod appliances;

/// The CLI without a running daemon, as a new user meets it: what changes the host and what does not.
mod first_hour;
/// The firewall-log receiver over loopback UDP and TCP: framing, sender filter, rows, spool, outage.
mod logs;
