//! Crash points for the redelivery tests, compiled into debug builds only.
//!
//! With `PORTCULLIS_FAILPOINT=after-commit` (firewall committed, state not yet recorded) or
//! `after-record` (state recorded, queue messages not yet deleted) the agent prints
//! `FAILPOINT <name> reached` to stderr and stops making progress, so a test can `kill -9` it exactly
//! between two steps of the commit protocol and check that a restart converges on the same state.
//! Release builds ignore the variable. `PORTCULLIS_FAIL_BACKEND_WHILE=<path>` simulates a firewall outage
//! for as long as the file exists ([`backend_down`]), whatever the backend: the engine checks it before
//! every backend call.

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

/// True while the file named by `PORTCULLIS_FAIL_BACKEND_WHILE` exists (debug builds only): the engine
/// then treats the firewall as unreachable — commits, lists and healthchecks (not `init`) fail with
/// [`BackendError::Unreachable`](crate::backends::BackendError::Unreachable) before reaching the backend,
/// whichever it is — for the outage tests.
#[cfg(debug_assertions)]
pub fn backend_down() -> bool {
    std::env::var_os("PORTCULLIS_FAIL_BACKEND_WHILE")
        .is_some_and(|path| std::path::Path::new(&path).exists())
}

/// Never in release builds.
#[cfg(not(debug_assertions))]
pub fn backend_down() -> bool {
    false
}

/// Stops here forever if `PORTCULLIS_FAILPOINT` is `apply:<target>` and `targets` holds that target (debug
/// builds only): a message that crashes the agent whenever it is applied, for the crash-loop tests.
#[cfg(debug_assertions)]
pub fn hit_apply<'a>(targets: impl IntoIterator<Item = &'a queue_message::Target>) {
    let Ok(v) = std::env::var("PORTCULLIS_FAILPOINT") else {
        return;
    };
    let Some(wanted) = v.strip_prefix("apply:") else {
        return;
    };
    if targets.into_iter().any(|t| t.to_string() == wanted) {
        hit(&v);
    }
}

/// Does nothing in release builds.
#[cfg(not(debug_assertions))]
pub fn hit_apply<'a>(_targets: impl IntoIterator<Item = &'a queue_message::Target>) {}

/// True while the file named by `PORTCULLIS_FAIL_RECORD_WHILE` exists (debug builds only): recording a
/// committed batch in the state database fails, for the store-failure tests.
#[cfg(debug_assertions)]
pub fn record_fails() -> bool {
    std::env::var_os("PORTCULLIS_FAIL_RECORD_WHILE")
        .is_some_and(|path| std::path::Path::new(&path).exists())
}

/// Never in release builds.
#[cfg(not(debug_assertions))]
pub fn record_fails() -> bool {
    false
}
