//! The state database shared by the daemon's async tasks: every call runs on tokio's blocking pool, never
//! on the runtime thread.
//!
//! The agent runs on a one-thread runtime (P6: memory). SQLite calls block — recording 10k targets takes a
//! noticeable time — so doing them on the runtime thread would stall the control socket, `/healthz` and
//! the metrics endpoint for as long. Following mini-redis's `db.rs`, the [`Store`] sits behind a *std*
//! mutex: it is only ever locked inside a [`spawn_blocking`](tokio::task::spawn_blocking) closure, never
//! across an `.await`, so the lock itself never blocks the runtime. Writes are still serialised (SQLite
//! allows one writer), and the engine keeps the "firewall, then state" order by awaiting each call.

use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{Store, StoreError};

/// A cloneable handle on the state database for async code.
#[derive(Debug, Clone)]
pub struct Db(Arc<Mutex<Store>>);

impl Db {
    /// Shares an open store.
    pub fn new(store: Store) -> Self {
        Self(Arc::new(Mutex::new(store)))
    }

    /// Runs `f` with the store on a blocking thread and returns its result.
    ///
    /// A panic inside `f` is resumed here (it is a bug, not a state problem); a runtime shutting down
    /// before `f` ran is reported as [`StoreError::Unavailable`].
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}
