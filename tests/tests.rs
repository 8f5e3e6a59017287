//! Handler integration tests: the real `portcullis-handler` binary, started as the Functions host starts it
//! (environment, readiness poll on `GET /`), against a real Azurite started by the test.
//!
//! - `host`: both invocation modes with the host's request and response shapes, every payload kind, messages
//!   read back from the queues and verified.
//! - `failures`: start-up errors, 413/415/400/422 through the binary, 503 + Retry-After when the queue
//!   cannot be written, secrets never logged.
//! - `limits`: input limits through the binary (issue 9 items 11 and 12): a 413 that a client writing its
//!   whole body first can read, and the memory a huge invocation envelope costs.
//! - `managed_identity`: Azurite over HTTPS with OAuth and a local identity endpoint (no Azure needed).
//! - `properties`: property tests of extraction and policy (no special-purpose or allowlisted address is
//!   ever queued; random and mutated JSON never panics).
//! - `return_path`: reports through Azurite, the emulated Functions host (`functions_host`) and fake ARM,
//!   Logs Ingestion and managed-identity endpoints (`fakes`): comments, rows, retries, poison, `watch`.
//! - `util`: starting the handler, playing the host, reading queues.

mod failures;
mod fakes;
mod functions_host;
mod host;
mod limits;
mod managed_identity;
mod properties;
mod return_path;
mod util;
