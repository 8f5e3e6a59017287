//! Appliance backends against fake devices: small HTTPS servers written from the vendors' documented APIs
//! and public captured responses (each fixture names its source), enforcing the behaviour that bites.
//!
//! `server` (TLS on loopback with a fresh certificate, request routing, counters, fault injection) →
//! one fake per vendor (`unifi`, `opnsense`, `mikrotik`, `pfsense`), each with its contract run and its
//! vendor-specific tests → `bench` (the numbers in BENCHMARKS.md, `--ignored`).

mod bench;
mod mikrotik;
mod opnsense;
mod pfsense;
pub mod server;
mod unifi;
