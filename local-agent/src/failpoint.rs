//! Crash points for the redelivery tests, compiled into debug builds only.
//!
//! With `PORTCULLIS_FAILPOINT=after-commit` (firewall committed, state not yet recorded) or
//! `after-record` (state recorded, queue messages not yet deleted) the agent prints
//! `FAILPOINT <name> reached` to stderr and stops making progress, so a test can `kill -9` it exactly
//! between two steps of the commit protocol and check that a restart converges on the same state.
//! Release builds ignore the variable.

/// Stops here forever if `PORTCULLIS_FAILPOINT` names this point (debug builds only).
#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    if std::env::var("PORTCULLIS_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("FAILPOINT {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Does nothing in release builds.
#[cfg(not(debug_assertions))]
pub fn hit(_name: &str) {}
