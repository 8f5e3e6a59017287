//! Shared plumbing of the fuzz targets: handler state around a queue that drops every message (the
//! in-memory queues would grow for millions of runs), a one-thread runtime, and a fixed signing key.

use std::sync::{Arc, OnceLock};

use portcullis::enqueue::EnqueueError;
use portcullis::{AppState, Enqueue};
use queue_message::SigningKey;

/// Accepts and forgets every message.
#[derive(Debug)]
pub struct Sink;

#[async_trait::async_trait]
impl Enqueue for Sink {
    fn queue_names(&self) -> Vec<String> {
        vec!["portcullis".to_owned()]
    }

    async fn send(&self, _texts: &[String], _ttl_secs: i64) -> Result<(), EnqueueError> {
        Ok(())
    }
}

/// The key every target signs and verifies with.
pub fn key() -> SigningKey {
    SigningKey::from_bytes(vec![42; 32]).expect("a 32-byte key")
}

/// Handler state with the default policy, a lab range so documentation addresses get queued too, and
/// the dropping queue.
pub fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    Arc::clone(STATE.get_or_init(|| {
        let mut state = AppState::new(key(), Arc::new(Sink));
        state.policy.never = queue_message::NeverBlock::new(
            Vec::new(),
            vec!["198.51.100.0/24".parse().expect("a CIDR")],
            16,
            32,
        );
        Arc::new(state)
    }))
}

/// A current-thread runtime, built once per process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}
